"""SEA's mask interpolation as one Triton kernel: the CSR key columns of every query row, written in place.

Input: the selected compressed cells per query row (sel [R, K], R = B*H*T rows in (b, h, t) order), each cell's
first key and width for the row's time step (lo, width [T, K]: cell c of row t covers keys
[lo, lo + width)), the row pointers of the CSR lists (row_ptr [R + 1], from the per-row key counts) and the
budget k of keys per cell. A selected cell contributes n = min(width, k) keys, uniformly spaced:
lo + floor(j * width / n) for j < n; a row's keys are its cells' keys in cell order (so ascending).

One program per query row, which visits only its own entries: an inclusive cumsum of the cells' key counts, then
for each block of SLOT_BLOCK output slots the cell of every slot (how many cells end at or before it: compares),
that cell's first slot, and the key position (one division per entry). The first version computed the whole
[K, k] tile of (cell, j) pairs per row, K k integer divisions where a row keeps about k entries: on an H200 it
was 2.5-3.6x slower than the tensor-op path (results/nvidia-h200/sea-kernels/); this one is not yet timed. No padding mask here: padded rows and
keys are handled by the PyTorch path (methods/sea/interp.py).

`csr_columns_ref` is the plain-loop restatement used by the tests.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


# Output slots per loop step of a row program (a row keeps about k keys in all; longer rows loop).
SLOT_BLOCK = 64


@triton.jit
def _csr_columns_kernel(SEL, LO, WIDTH, ROW_PTR, COL, T, kk, K: tl.constexpr, KP: tl.constexpr,
                        EB: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)                       # query row (b, h, t)
    t = r % T
    c = tl.arange(0, KP)
    cm = c < K
    s = tl.load(SEL + r * K + c, mask=cm, other=0).to(tl.int32)          # [KP] selected?
    w = tl.load(WIDTH + t * K + c, mask=cm, other=0)                     # [KP] keys the cell covers
    n = tl.minimum(w, kk) * s                                            # [KP] keys taken from each cell
    end = tl.cumsum(n, 0)                                                # [KP] inclusive end of each cell's run
    total = tl.sum(n, 0)
    base = tl.load(ROW_PTR + r)
    for e0 in range(0, total, EB):                                      # only the row's own entries
        e = e0 + tl.arange(0, EB)                                        # [EB] output slots
        live = e < total
        cell = tl.sum((end[None, :] <= e[:, None]).to(tl.int32), 1)      # [EB] the cell each slot falls in
        first = tl.sum(tl.where(c[None, :] < cell[:, None], n[None, :], 0), 1)   # [EB] the cell's first slot
        wc = tl.load(WIDTH + t * K + cell, mask=live, other=1)
        lc = tl.load(LO + t * K + cell, mask=live, other=0)
        nc = tl.maximum(tl.minimum(wc, kk), 1)
        tl.store(COL + base + e, lc + ((e - first) * wc) // nc, mask=live)


def csr_columns(sel: torch.Tensor, lo: torch.Tensor, width: torch.Tensor, row_ptr: torch.Tensor, k: int,
                capacity: int) -> torch.Tensor:
    """Columns int32 [capacity] of the CSR lists described above; entries past row_ptr[-1] are 0.
    sel bool [R, K]; lo, width integer [T, K] with R a multiple of T; row_ptr int64 [R + 1]."""
    R, K = sel.shape
    T = lo.shape[0]
    if R % T or lo.shape != (T, K) or width.shape != (T, K) or row_ptr.shape != (R + 1,):
        raise ValueError(f"csr_columns: sel {tuple(sel.shape)}, lo {tuple(lo.shape)}, width {tuple(width.shape)}, "
                         f"row_ptr {tuple(row_ptr.shape)} do not fit together")
    col = torch.zeros(max(capacity, 1), dtype=torch.int32, device=sel.device)
    if R == 0:
        return col
    _csr_columns_kernel[(R,)](sel.contiguous().view(torch.uint8), lo.to(torch.int32).contiguous(),
                              width.to(torch.int32).contiguous(), row_ptr.contiguous(), col, T, int(k), K=K,
                              KP=triton.next_power_of_2(K), EB=SLOT_BLOCK)
    return col


def csr_columns_ref(sel: torch.Tensor, lo: torch.Tensor, width: torch.Tensor, row_ptr: torch.Tensor, k: int,
                    capacity: int) -> torch.Tensor:
    """The same columns by plain loops (tests only)."""
    R, K = sel.shape
    T = lo.shape[0]
    col = torch.zeros(max(capacity, 1), dtype=torch.int32)
    for r in range(R):
        t, pos = r % T, int(row_ptr[r])
        for c in range(K):
            if not bool(sel[r, c]):
                continue
            w = int(width[t, c])
            n = min(w, k)
            for j in range(n):
                col[pos] = int(lo[t, c]) + (j * w) // n
                pos += 1
        assert pos == int(row_ptr[r + 1]), (r, pos, int(row_ptr[r + 1]))
    return col
