"""SEA's mask interpolation in Triton: the CSR row pointers (row_key_counts) and key columns (csr_columns) of every
query row.

Input: the selected compressed cells per query row (sel [R, K], R = B*H*T rows in (b, h, t) order), each cell's
first key and width for the row's time step (lo, width [T, K]: cell c of row t covers keys [lo, lo + width)), the
row pointers of the CSR lists (row_ptr [R + 1], from the per-row key counts) and the budget k of keys per cell. A
selected cell contributes n = min(width, k) keys, uniformly spaced: lo + floor(j * width / n) for j < n; a row's
keys are its cells' keys in cell order (so ascending).

Layout (third version). One 2-warp program per block of ROWS_PER_PROGRAM = 16 consecutive time steps of one (b, h);
program ids run time-block major (block 0 of every (b, h), then block 1, ...), so the small-t blocks, whose rows
hold many narrow cells and loop longest, start first and overlap the rest rather than trail it. It loads the block's
selected flags as one [16, KP] byte tile (contiguous: 1 KiB at K = 64), counts each row's selected cells, and loops
max-count times; step i takes every row's i-th selected cell (the smallest selected cell above the one visited last:
one min-reduction over the tile), gathers that cell's lo and width ([16] loads, masked), and writes its run of n
keys as a [16, JB] tile (JB = min(64, next_pow2(k)), at least 2; longer runs loop) at row_ptr[row] + keys already
written: the running sum of the visited cells' counts, so no prefix sum over cells and no search at all. Keys are lo
+ j q + floor(j rem / n) with w = q n + rem (one division per row and step, then an unsigned 32-bit division of j
rem < k^2 per entry: no overflow for any width, int64 only when k > 46340). Entries past row_ptr[-1] (up to
capacity) are zeroed by extra fill programs in the same launch, so the buffer is torch.empty rather than a memset of
the whole capacity; entries at or past capacity are dropped (the old kernel wrote past the buffer there).

Why (history): the first version computed the whole [K, k] (cell, j) tile per row (2.5-3.6x slower than the
tensor-op path on an H200); the second ran one 4-warp program per row and, for every block of 64 output slots, two
[64 slots x KP cells] compare matrices (the slot's cell and that cell's first slot). Measured on an H200 (bf16, B=1,
H=16, T=65536, causal, K=64, k=64, causal_per_batch): 2.74 ms per call (4.12 ms bidirectional, K=128, k=13,
per_batch). That geometry keeps few keys: n_t = round(H k K / L_t) cells over all 16 heads, so about 15.6M entries
in all (62.5 MB of int32) for R = 1,048,576 rows, and about 80% of the rows select no cell (t > 4096: fewer than 16
cells over 16 heads). The second version's time was a million tiny programs each paying a load/cumsum/reduction
latency chain (about 2.6 ns of the whole GPU per row), plus 128 compares per entry. Now: 65,536 programs; a block
without a selected cell (most blocks at large t once heads concentrate) costs a 1 KiB load, a row-sum and a max;
each written entry costs about 30 lane instructions (multiply, 32-bit division, address, store) with the [16, 64]
tile used at 15-40% (rows of a block have unequal cell counts; a CPU simulation with random selections under the
same budgets gives ~98M tile lanes for 15.6M entries at 16 rows per block, ~116M at 32), plus one [16, KP]
min-reduction and two gathers per step.

Prediction, H200, T=65536 causal (geometry above): traffic ~64 MB of flags + ~63 MB of columns + row pointers,
~0.035 ms at 4 TB/s; tile work ~100M lanes x ~30 instructions ~ 3G lane-instructions, ~0.1 ms at ~33 T
lane-instructions/s; with latency tails of the small-t blocks (up to 64 steps of 1-key cells at t < 64) I expect
0.08-0.2 ms for the kernel (best guess 0.12 ms), i.e. 15-30x faster than 2.74 ms, and the whole interpolation stage
is then dominated by the torch row counts + cumsum. The ~3,850 fill programs (4096 entries each, almost all fully
masked since capacity ~ nnz here) add a few microseconds, and the 63 MB memset the wrapper used to run before the
kernel (torch.zeros, a separate ~0.02-0.03 ms kernel) is gone. Least certain part: how long the small-t blocks loop
(up to 64 steps of ~0.3-0.5 us each); if the measured time is well above 0.2 ms, look there first (e.g. two cells
per step when runs are short). Bidirectional (K=128, k=13, per_batch, ~1 cell of 13 keys per row on average): JB =
16, a [16, 128] min-reduction per step, expected 0.1-0.25 ms (was 4.12 ms). Not timed yet. No padding mask here:
padded rows and keys are handled by the PyTorch path (methods/sea/interp.py). The per-row counts (and so row_ptr)
still come from a torch reduction + cumsum outside this kernel.

Row counts and cell geometry in the kernels (fourth version; methods/sea/interp.py's triton backend). The lists'
row pointers come from `row_key_counts` (row_ptr=True): one program per (block of COUNT_ROWS = 32 time steps,
group of COUNT_HEADS = 8 (b, h)) computes the cell counts min(width, k) of its [32, KP] tile once, from t, then
reads the mask bytes of each of its 8 (b, h) rows (an unrolled loop of [32, KP] tile loads) and writes the row sums
(int64) at row_ptr[1 + r], lane 0 of the first program writes row_ptr[0] = 0, and an in-place torch cumsum over
row_ptr[1:] finishes it (a decoupled look-back scan in Triton is not worth its complexity for ~0.01 ms). The
columns kernel, through `csr_columns_cells`, computes the edges of the one cell each row visits per step instead of
gathering lo/width. Geometry (interp.cell_bounds without a padding mask): row t spans L = L0 + t LSTEP keys (causal:
L0 = row0 + 1, LSTEP = 1; bidirectional: L0 = T, LSTEP = 0), cell c spans [floor((2 c L + K) / 2K),
floor((2 (c + 1) L + K) / 2K)), in int64 (2 c L passes 2^31 from L ~ 2^31 / 2K, e.g. 16.7M keys at K = 64) with
a division by the constant 2K (a multiply-shift). Why in-kernel rather than a cached [T, K] table: the counts
kernel needs the cell counts once per 8 (b, h) rows, i.e. 1/8 of a table read per mask byte read, and a few integer
instructions per (t, c) cost less than that read; the columns kernel needs two values per row and step, which were
two dependent gathers in its latency-bound loop; and query blocks call with a different row0 per block (64+
blocks per call), so a cache keyed by (T, K, causal, row0, device) would hold or rebuild a [T, K] pair per block.
No table at all: nothing to build (the old glue built and converted it per call), nothing to keep alive, no
cache to size. Both kernels read the mask through its strides (last one 1: causal_per_batch's [B, T, H, K] view
permuted to [B, H, T, K] is read in place, not copied) and need no `mask & (width > 0)`: a selected cell of width
0 has count 0 (the row sum adds nothing; the columns kernel's run of n = 0 keys writes nothing and advances
nothing, it only costs one loop step; select_topk never selects one anyway).

Prediction (fourth version), H200, B=1, H=16, T=65536 causal, K=64, k=64, causal_per_batch: the stage measured
1.87 ms (csr_columns 0.83 ms + ~1.04 ms of torch glue: ~20 launches, [T, K] int64 tables, a [B, H, T, K] `sel`
copy, a uint8 cast, a uint8 product and a last-axis sum of 64, all over 64 MiB tensors, then a cumsum). Now 3
launches: row_key_counts reads the 64 MiB mask once and writes 8 MiB of counts (4096 programs; ~0.02-0.04 ms),
the in-place cumsum over 1M int64 (~0.01-0.02 ms), and csr_columns_cells (expected 0.65-0.85 ms: same loop, the two
gathers per step replaced by ~10 integer instructions, and no per-call int32 conversion of the tables). Stage: 0.7-0.9
ms, i.e. -0.95 to -1.15 ms (best guess -1.0 ms; the brief's target was about -0.8 ms). Least certain: the columns
kernel with the permuted mask (16 rows of a block are 1 KiB apart, 64-byte segments: full 32-byte sectors, so no
extra traffic expected). tests/test_sea_interp_counts.py::test_real_size_stage_time_on_cuda prints old vs new.

`csr_columns_ref` is the plain-loop restatement used by the tests.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Query rows per program: the rows' selected-cell flags are read as one [ROWS_PER_PROGRAM, KP] tile, so a block
# of rows without a selected cell costs one coalesced load and a reduction.
# 8 rows timed faster on its own (H200: 16k 0.186 -> 0.164 ms, 64k 0.360 -> 0.326) but not inside SEA's forward
# (16k 0.183 -> 0.180, 64k 0.363 -> 0.381 ms, A/B in one call: results/nvidia-h200/sea-graph-replay/call6/)
ROWS_PER_PROGRAM = 16
# Keys per step of a cell's run (the lane width of the [rows, keys] tile): min(SLOT_BLOCK, next_pow2(k)).
SLOT_BLOCK = 64
# Filler entries zeroed per program (entries past row_ptr[-1], up to the capacity).
FILL_BLOCK = 4096
# 2 warps: a warp's 32 threads cover 8 rows x 64 flags of the [16, 64] byte tile at 16 bytes each, so the tile is
# not replicated and the per-row reductions stay inside a warp; twice as many 2-warp programs fit on an SM
# (32 x 2 = 64 warps), which is what hides the load latency of the many blocks that end after the flag load.
NUM_WARPS = 2
# Tests set this to fill the output with a poison value first, so an entry no program writes fails them.
POISON_OUTPUTS = False
_POISON = -123456789
# Row counts kernel: time steps per program (a [COUNT_ROWS, KP] tile of cell counts, computed once) and (b, h)
# rows reusing it (an unrolled loop of COUNT_HEADS tile loads of the mask bytes).
COUNT_ROWS = 32
COUNT_HEADS = 8
COUNT_WARPS = 4


@triton.jit
def _csr_columns_kernel(SEL, LO, WIDTH, ROW_PTR, COL, R, T, BH, H, sb, sh, st, kk, CAP, n_row_programs, L0, LSTEP,
                        K: tl.constexpr, KP: tl.constexpr, RB: tl.constexpr, JB: tl.constexpr,
                        FB: tl.constexpr, WIDE: tl.constexpr, GEOM: tl.constexpr):
    pid = tl.program_id(0)
    if pid < n_row_programs:
        # Time-block major: the blocks of small t (many narrow cells per row, the longest loops) of every
        # (b, h) are launched first, so their latency chains overlap the rest instead of trailing it.
        bh = pid % BH
        t = (pid // BH).to(tl.int64) * RB + tl.arange(0, RB)            # [RB] time steps
        rm = t < T
        r = bh.to(tl.int64) * T + t                                      # [RB] query rows (b, h, t)
        c = tl.arange(0, KP)
        # the flags of (b, h, t, c) at b sb + h sh + t st + c (the mask may be a permuted view)
        fb = (bh // H).to(tl.int64) * sb + (bh % H).to(tl.int64) * sh + t * st   # [RB]
        s = tl.load(SEL + fb[:, None] + c[None, :], mask=rm[:, None] & (c[None, :] < K), other=0)
        s = s != 0                                                       # [RB, KP] selected?
        n_sel = tl.sum(s.to(tl.int32), 1)                               # [RB] selected cells per row
        base = tl.load(ROW_PTR + r, mask=rm, other=0)                   # [RB] first entry of each row
        pos = tl.zeros([RB], dtype=tl.int64)                             # [RB] entries written so far
        prev = tl.full([RB], -1, dtype=tl.int32)                         # [RB] last cell visited
        L = L0 + t * LSTEP                                               # [RB] keys of each row (GEOM)
        j = tl.arange(0, JB)
        # Step i visits the i-th selected cell of every row (cells ascending, so keys ascending); rows with
        # fewer cells idle. A block of empty rows never enters the loop.
        for _ in range(0, tl.max(n_sel, 0)):
            nxt = tl.where(s & (c[None, :] > prev[:, None]), c[None, :], KP)
            cell = tl.min(nxt, 1)                                        # [RB] next selected cell (KP: none)
            has = cell < K
            if GEOM:                                                     # cell edges floor((2 c L + K) / 2K)
                c64 = cell.to(tl.int64)
                lc64 = (2 * c64 * L + K) // (2 * K)
                hc64 = (2 * (c64 + 1) * L + K) // (2 * K)
                wc = tl.where(has, hc64 - lc64, 0).to(tl.int32)          # [RB] keys the cell covers
                lc = lc64.to(tl.int32)                                   # [RB] its first key
            else:
                wc = tl.load(WIDTH + t * K + cell, mask=has, other=0)   # [RB] keys the cell covers
                lc = tl.load(LO + t * K + cell, mask=has, other=0)      # [RB] its first key
            nc = tl.minimum(wc, kk)                                      # [RB] keys taken (0: no cell / empty)
            dst = base + pos                                             # [RB] where the cell's run starts
            nd = tl.maximum(nc, 1)
            qc = wc // nd                                                # [RB] w = q n + rem, so
            rc = wc - qc * nd                                            # floor(j w / n) = j q + floor(j rem / n)
            for j0 in range(0, tl.max(nc, 0), JB):
                jj = j0 + j                                              # [JB] index inside the run
                live = jj[None, :] < nc[:, None]                         # [RB, JB]
                if WIDE:                                                 # k > 46340: j r may pass 2^31
                    frac = (jj[None, :].to(tl.int64) * rc[:, None]) // nd[:, None]
                else:                                                    # j r < k^2 < 2^31: unsigned 32-bit
                    frac = (jj[None, :] * rc[:, None]).to(tl.uint32) // nd.to(tl.uint32)[:, None]
                key = lc[:, None] + jj[None, :] * qc[:, None] + frac.to(tl.int32)
                at = dst[:, None] + jj[None, :]                          # [RB, JB] int64 entry index
                tl.store(COL + at, key, mask=live & (at < CAP))
            pos += nc
            prev = cell
    else:
        e = (pid - n_row_programs).to(tl.int64) * FB + tl.arange(0, FB)  # [FB] entries
        nnz = tl.load(ROW_PTR + R)                                       # row_ptr[-1]
        tl.store(COL + e, tl.zeros([FB], dtype=tl.int32), mask=(e >= nnz) & (e < CAP))


@triton.jit
def _row_counts_kernel(SEL, OUT, T, BH, H, sb, sh, st, kk, L0, LSTEP,
                       K: tl.constexpr, KP: tl.constexpr, RB: tl.constexpr, BHB: tl.constexpr,
                       SHIFT: tl.constexpr):
    # One program per (block of RB time steps, group of BHB (b, h)): the rows' key counts per cell are computed
    # once from t (divisions by the constant 2K) and reused for the BHB (b, h) of the group.
    t = tl.program_id(0).to(tl.int64) * RB + tl.arange(0, RB)          # [RB] time steps
    rm = t < T
    c = tl.arange(0, KP).to(tl.int64)
    L = L0 + t * LSTEP                                                   # [RB] keys of each row
    lo = (2 * c[None, :] * L[:, None] + K) // (2 * K)                    # [RB, KP] first key of each cell
    hi = (2 * (c[None, :] + 1) * L[:, None] + K) // (2 * K)              # [RB, KP] one past its last key
    ok = rm[:, None] & (c[None, :] < K)
    n = tl.where(ok, tl.minimum(hi - lo, kk), 0).to(tl.int32)            # [RB, KP] keys per selected cell
    g0 = tl.program_id(1) * BHB
    for i in tl.static_range(BHB):                                       # unrolled: BHB loads in flight
        bh = g0 + i
        live = rm & (t * 0 + bh < BH)                                    # [RB] (a tensor compare: triton 3.9's
        #                                                                  interpreter rejects tensor & scalar masks)
        fb = (bh // H).to(tl.int64) * sb + (bh % H).to(tl.int64) * sh + t * st
        s = tl.load(SEL + fb[:, None] + c[None, :], mask=live[:, None] & ok, other=0)   # [RB, KP] flags
        cnt = tl.sum(tl.where(s != 0, n, 0), 1).to(tl.int64)            # [RB] keys of each row (<= L < 2^31)
        tl.store(OUT + SHIFT + bh.to(tl.int64) * T + t, cnt, mask=live)
    if SHIFT:                                                            # row_ptr[0] = 0 (one lane writes it)
        first = t + tl.program_id(1) == 0                                # t = 0 of the first (b, h) group
        tl.store(OUT + t * 0, tl.zeros([RB], dtype=tl.int64), mask=first)


def _flags(mask: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """mask bool [B, H, T, K] (any strides) -> (the same bytes as uint8, no copy when its cells are contiguous;
    strides of b, h, t in bytes)."""
    if mask.dtype != torch.bool:
        mask = mask != 0
    if mask.shape[-1] > 1 and mask.stride(-1) != 1:
        mask = mask.contiguous()
    return mask.view(torch.uint8), (mask.stride(0), mask.stride(1), mask.stride(2))


def _geometry(T: int, *, causal: bool, row0: int, span: int | None = None) -> tuple[int, int]:
    """(L0, LSTEP): row t spans L0 + t LSTEP keys (interp.row_lengths without a padding mask). span: the keys every
    bidirectional row spans when the T rows are a block of a longer sequence (default T)."""
    if not causal and row0:
        raise ValueError("row0 (query blocks) is for causal rows only")
    if span is not None and (causal or span < 1 or span >= 2 ** 31):
        raise ValueError(f"span={span}: bidirectional rows only, 1 <= span < 2^31")
    if row0 < 0 or row0 + T >= 2 ** 31:
        raise ValueError(f"row0={row0}, T={T}: keys must fit int32")
    return (row0 + 1, 1) if causal else (T if span is None else span, 0)


def _launch_columns(flags, strides, B, H, T, K, lo, width, row_ptr, k, capacity, L0, LSTEP, geom):
    R = B * H * T
    if k < 1:
        raise ValueError(f"csr_columns: k={k} (needs >= 1)")
    cap = max(capacity, 1)
    if POISON_OUTPUTS:
        col = torch.full((cap,), _POISON, dtype=torch.int32, device=flags.device)
    else:
        col = torch.empty(cap, dtype=torch.int32, device=flags.device)
    if R == 0 or K == 0:
        return col.zero_()
    rb, fb = ROWS_PER_PROGRAM, FILL_BLOCK
    if rb & (rb - 1) or fb & (fb - 1) or SLOT_BLOCK & (SLOT_BLOCK - 1):
        raise ValueError(f"csr_columns: ROWS_PER_PROGRAM={rb}, FILL_BLOCK={fb}, SLOT_BLOCK={SLOT_BLOCK} "
                         "(each must be a power of two)")
    n_row = B * H * triton.cdiv(T, rb)                               # (time block, b h) programs
    jb = max(2, min(SLOT_BLOCK, triton.next_power_of_2(int(k))))      # (no 1-wide tiles)
    # floor(j w / n) = j q + floor(j rem / n) with w = q n + rem: the product j rem < n^2 <= k^2, whatever w is.
    wide = int(k) > 46340
    row_ptr = row_ptr.to(torch.int64).contiguous()
    if geom:
        lo = width = row_ptr                                             # unused (GEOM: edges from t)
    else:
        lo, width = lo.to(torch.int32).contiguous(), width.to(torch.int32).contiguous()
    _csr_columns_kernel[(n_row + triton.cdiv(cap, fb),)](
        flags, lo, width, row_ptr, col, R, T, B * H, H, *strides, int(k), cap, n_row, L0, LSTEP,
        K=K, KP=triton.next_power_of_2(K), RB=rb, JB=jb, FB=fb, WIDE=wide, GEOM=geom, num_warps=NUM_WARPS)
    return col


def csr_columns(sel: torch.Tensor, lo: torch.Tensor, width: torch.Tensor, row_ptr: torch.Tensor, k: int,
                capacity: int) -> torch.Tensor:
    """Columns int32 [capacity] of the CSR lists described above; entries past row_ptr[-1] are 0.
    sel bool [R, K]; lo, width integer [T, K] with R a multiple of T; row_ptr int64 [R + 1] (the prefix sum
    of the rows' key counts sum_c sel min(width, k): every entry below row_ptr[-1] is written by its row, the
    rest by the fill programs; entries at or past `capacity` are dropped, as in the tensor-op path)."""
    R, K = sel.shape
    T = lo.shape[0]
    if (R % T if T else R) or lo.shape != (T, K) or width.shape != (T, K) or row_ptr.shape != (R + 1,):
        raise ValueError(f"csr_columns: sel {tuple(sel.shape)}, lo {tuple(lo.shape)}, width {tuple(width.shape)}, "
                         f"row_ptr {tuple(row_ptr.shape)} do not fit together")
    flags, strides = _flags(sel.reshape(R // T if T else 0, 1, T, K))   # [R / T, 1, T, K]
    return _launch_columns(flags, strides, R // T if T else 0, 1, T, K, lo, width, row_ptr, k, capacity, 0, 0,
                           False)


def csr_columns_cells(mask: torch.Tensor, row_ptr: torch.Tensor, k: int, capacity: int, *, causal: bool,
                      row0: int = 0, span: int | None = None) -> torch.Tensor:
    """csr_columns for the cells of interp.cell_bounds (no padding mask), their edges computed in the kernel:
    mask bool [B, H, T, K] (any strides, e.g. the permuted view causal_per_batch selects; cells of width 0 may
    be selected: they add no key), row_ptr int64 [B H T + 1] (csr_row_ptr). No [T, K] table is built or read.
    span (bidirectional): the T rows are a block of query rows of a sequence of `span` keys (every row spans all
    of them; methods/sea/bidir_blocks.py)."""
    B, H, T, K = mask.shape
    if row_ptr.shape != (B * H * T + 1,):
        raise ValueError(f"csr_columns_cells: mask {tuple(mask.shape)}, row_ptr {tuple(row_ptr.shape)}")
    L0, LSTEP = _geometry(T, causal=causal, row0=row0, span=span)
    flags, strides = _flags(mask)
    return _launch_columns(flags, strides, B, H, T, K, None, None, row_ptr, k, capacity, L0, LSTEP, True)


def row_key_counts(mask: torch.Tensor, k: int, *, causal: bool, row0: int = 0, row_ptr: bool = False,
                   span: int | None = None) -> torch.Tensor:
    """Keys per query row sum_c mask[b, h, t, c] min(width[t, c], k) with the cells of interp.cell_bounds (no
    padding mask), from the mask bytes: int64 [B H T] (rows (b, h, t)), or with row_ptr=True the CSR row
    pointers int64 [B H T + 1] (the counts' prefix sum, 0 first). mask bool [B, H, T, K], any strides. span: as
    csr_columns_cells."""
    B, H, T, K = mask.shape
    if k < 1:
        raise ValueError(f"row_key_counts: k={k} (needs >= 1)")
    L0, LSTEP = _geometry(T, causal=causal, row0=row0, span=span)
    R = B * H * T
    if POISON_OUTPUTS:
        out = torch.full((R + int(row_ptr),), _POISON, dtype=torch.int64, device=mask.device)
    else:
        out = torch.empty(R + int(row_ptr), dtype=torch.int64, device=mask.device)
    if R == 0 or K == 0:
        return out.zero_()
    rb, bhb = COUNT_ROWS, COUNT_HEADS
    if rb & (rb - 1):
        raise ValueError(f"row_key_counts: COUNT_ROWS={rb} (must be a power of two)")
    flags, strides = _flags(mask)
    _row_counts_kernel[(triton.cdiv(T, rb), triton.cdiv(B * H, bhb))](
        flags, out, T, B * H, H, *strides, int(k), L0, LSTEP,
        K=K, KP=triton.next_power_of_2(K), RB=rb, BHB=bhb, SHIFT=int(row_ptr), num_warps=COUNT_WARPS)
    if row_ptr:
        out[1:].cumsum_(0)                                               # in place: row_ptr[1:] = cumsum(counts)
    return out


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
