"""SEA's sparse attention over CSR key lists, forward only, one Triton program per block of query rows.

What: for every query row r = (b * H + h) * Tq + t of q [B, H, Tq, D] (Tq consecutive positions of a longer
sequence, or the whole of it) against keys k, v [B, Hkv, Tk, D], Tk >= Tq:
    out[r] = sum_j softmax_j(q_r . k_j * scale) v_j   over j in col[row_ptr[r] : row_ptr[r + 1]]
(renormalised over the listed keys; a row with no key gives 0; GQA: head h reads kv head h // (H / Hkv)),
arithmetic in fp32, out in q's dtype; optionally the row log-sum-exp lse[r] = log sum_j exp(q_r . k_j * scale)
(fp32 [B, H, Tq]; +inf for an empty row, as `_fwd_kernel` of kernels/sea_sparse_attention.py writes it). The same
semantics, mask format and validation as that kernel's forward (`_fwd_kernel`, `sparse_attention_block`); only the
program layout (and so the float summation order) differs.

Why: `_fwd_kernel` runs one program per query row. Measured on an H200 (B=1, H=16, D=64, bf16, T=65536 causal,
SEA's causal_per_batch lists): 2.6 ms for only ~15.6M key entries over R = 1,048,576 rows, about 15 keys per row on
average, and the lists are very uneven (~80% of the rows hold 0-10 keys, mostly 0; a few hold hundreds). Each of the
1M tiny programs pays a dependent latency chain (row_ptr -> col -> k/v gathers -> reductions -> store) for little
work: ~2.5 ns of the whole GPU per row, whatever its length. At T=16k it is SEA's largest kernel (1.27 ms). The
interpolation kernel had the same problem (kernels/sea_interp.py: one program per row, 2.74 ms; 16 rows per
program, time-block-major: 0.34 ms); this is the same cure.

Layout: one program (NUM_WARPS warps) per block of ROWS_PER_PROGRAM = 16 consecutive time steps t of one (b, h).
Program ids run time-block major (pid = time_block * B*H + bh), so the blocks of small t (long causal lists) of every
(b, h) start first and the many short blocks fill in behind them rather than trailing them. A program loads its
rows' [ROWS] row_ptr pairs (begins, ends: counts), q as a [ROWS, BLOCK_D] tile (fp32), and loops i over
0 .. max(count) - 1 in steps of KEYS_PER_STEP = KB = 4 keys per row: a [ROWS, KB] load of col[beg + i + j] (masked by
i + j < count), a [ROWS, KB, BLOCK_D] gather of the k rows and one of the v rows (both issued from the same column
indices, so they are in flight together), scores [ROWS, KB] = sum_d q k * scale (masked to -inf), a per-row online
softmax (running max m, normaliser l: alpha = exp(m - m_new), p = exp(s - m_new)), acc [ROWS, BLOCK_D] = acc alpha +
sum_j p v. Epilogue: out = acc / l (l = 0: empty row, out = 0), stored as one [ROWS, D] tile in q's dtype, and the
lse tile [ROWS] when asked (WANT_LSE is a constexpr: no store and no log otherwise). A block without any key (most
blocks at large t, once the heads' budget is spread thin) never enters the loop: it costs two [16] row_ptr loads, a
q load and a zero store. Offsets are int64 (b sqb, t sqt, row_ptr entries, key * stride: B H T D and nnz may pass
2^31); the loop bound max(count) is int32 (a row never lists more than Tk < 2^31 keys).

Why KB = 4 (not measured, reasoned): the loop is latency bound (each step: col load, then the dependent k/v
gathers, then two reductions), so the number of steps per block, max over its 16 rows of ceil(count / KB), is what
counts. SEA's large-t rows hold either no key or one or two whole cells of min(width, k) = 64 keys, so a block's max
is typically 64 or 128: 16-32 steps at KB = 4 (64 at KB = 1, 8-16 at KB = 8). KB = 4 puts 64 k rows + 64 v rows
(16 KiB in bf16 at D = 64) in flight per step for 4 warps (the [16, 4, 64] fp32 tiles are 32 registers a thread
each), which is about what one SM needs of a block at ~8-16 resident programs; KB = 8 would halve the steps again but
double the registers of the tiles (64 + 64 a thread plus acc, q: spills or fewer resident programs) and the masked
lanes of short rows. Masked lanes cost instructions, not traffic (masked loads are not issued to memory).

Prediction (not measured; H200, B=1, H=16, T=65536 causal, D=64, bf16, causal_per_batch K=64, k=64 lists: ~15.6M
entries, 1M rows). Programs: 65,536 (16 rows each) instead of 1,048,576. Traffic: k and v gathers 15.6M x 2 x 128 B
= 4.0 GB of 128-byte rows (one head's k and v, 16 MiB, are L2 hits after their first touch, since the blocks of one
(b, h) and time range run together), col 62 MB, q read + out write 2 x 134 MB, row_ptr 8 MB: the DRAM part ~0.35 GB
(~0.1 ms at ~4 TB/s), the L2 part ~4 GB (~0.4-0.6 ms at ~7-10 TB/s of L2 bandwidth for scattered 128-byte rows).
Lane work: a block runs max(count) / 4 steps over all 16 x 4 lanes; with the lists above (a block of 16 large-t rows
holds ~5-8 non-empty rows of 64 keys, so ~25-40% of the lanes live) about 40-60M lane-keys x ~3 x 64 / 32 D-lanes
... i.e. ~2-4G fp32 lane-instructions, ~0.1 ms at ~33T lane-instructions/s. Latency: ~16-32 steps x ~1-1.5 us
(dependent col -> gather chain through L2) per non-empty block, 65,536 blocks over 132 SMs x ~8-16 resident
programs: ~30-60 waves x 16-32 steps x ~1 us / overlap. Assumptions: the L2 holds the working set (16 MiB of
k, v per head), ~80% of rows empty or short as measured, 4 warps and <= 128 registers a thread (8+ programs per SM).
Best guess 0.5-0.8 ms for the kernel (3-5x faster than 2.6 ms; most of the gain is the 16x fewer programs and 4x
fewer loop trips per key than the 32-wide, mostly masked row loop of `_fwd_kernel`), bound by the L2 gathers. If it
measures above ~1.2 ms, look first at the steps of the small-t blocks (t < 4096: ~64 keys in every row, ~all lanes
live, fine) versus the large-t blocks (sparse: a block's max 64 or 128 with few live rows: try KB = 8 or sort the
rows of a block by length). At T=16k (1.27 ms with the row kernel) the expected gain is similar, ~0.3-0.45 ms.

Under TRITON_INTERPRET=1 (CPU tests) the fp32 -> bf16 cast of the store truncates toward zero; on CUDA it rounds to
nearest even like torch (as for the row kernel: both kernels round the same way on a given backend).

Limits: forward only (a RuntimeError in words when grad mode is on and an input requires grad); q, k, v in one dtype
among bf16 / fp16 / fp32; q, k, v are made contiguous (no-ops for the layer's tensors); no padding mask (the lists
already hold only the keys a row may see).
"""
from __future__ import annotations

import torch

from kernels._buffers import fresh, pow2_block, triton_runs_on
from kernels.sea_sparse_attention import _check

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: nothing here can run
    triton = None
    tl = None

# Query rows (consecutive t of one (b, h)) per program; a power of two >= 16 (the M of the tl.dot tiles).
ROWS_PER_PROGRAM = 16
# CSR entries (keys of the block's rows, consecutive in col) per loop step; a power of two >= 16 (the N of the
# score tile and the K of the p v product).
ENTRIES_PER_STEP = 64
NUM_WARPS = 4
# (b, h) whose time blocks are interleaved (time-block major inside a group of HEAD_GROUP (b, h), groups one after
# the other). None: the largest divisor of B*H whose groups' k and v (2 Tk D bytes-per-element each) fit in
# HEAD_GROUP_L2_BYTES, so the gathers of the resident programs hit L2. Tests force it.
HEAD_GROUP = None
HEAD_GROUP_L2_BYTES = 32 << 20
# Tests set this to True: fresh outputs (out, lse) are then filled with NaN so a skipped write fails.
POISON_OUTPUTS = False

_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


if triton is not None:

    @triton.jit
    def _split3_dot(p, vt, acc, EMU: tl.constexpr):
        """acc + p @ vt for p fp32 [M, N] and vt 16-bit [N, D] on tensor cores at fp32 accuracy: p = p1 + p2 + p3
        in vt's dtype (each piece takes the next 8 (bf16) or 11 (fp16) significant bits; the remainder past
        three pieces is below 2^-24 p), every product piece * v is exact in fp32, the sums fp32. EMU (Triton's
        interpreter, whose bf16 tl.dot is wrong): the same pieces as fp32 values, fp32 dots (same products)."""
        p1 = p.to(vt.dtype)
        r1 = p - p1.to(tl.float32)
        p2 = r1.to(vt.dtype)
        p3 = (r1 - p2.to(tl.float32)).to(vt.dtype)
        if EMU:
            v32 = vt.to(tl.float32)
            acc = tl.dot(p1.to(tl.float32), v32, acc, input_precision="ieee")
            acc = tl.dot(p2.to(tl.float32), v32, acc, input_precision="ieee")
            return tl.dot(p3.to(tl.float32), v32, acc, input_precision="ieee")
        acc = tl.dot(p1, vt, acc)
        acc = tl.dot(p2, vt, acc)
        return tl.dot(p3, vt, acc)

    @triton.jit
    def _rows_fwd_kernel(Q, K, V, ROWPTR, COL, O, LSE, scale,
                         sqb, sqh, sqt, skb, skh, skt, sob, soh, sot,
                         H, T, D, GROUP, NTB, HG,
                         ROWS: tl.constexpr, NE: tl.constexpr, BLOCK_D: tl.constexpr, WANT_LSE: tl.constexpr,
                         FP32: tl.constexpr, EMU: tl.constexpr):
        # Program order: groups of HG (b, h) one after the other; inside a group time-block major (block 0 of
        # every (b, h) of the group, then block 1, ...).
        pid = tl.program_id(0).to(tl.int64)
        grp = pid // (HG * NTB)
        rem = pid % (HG * NTB)
        tb = rem // HG
        bh = grp * HG + rem % HG
        b = bh // H
        h = bh % H
        hk = h // GROUP
        t0 = tb * ROWS
        t = t0 + tl.arange(0, ROWS)                                      # [ROWS] int64 time steps
        rmask = t < T
        row = bh * T + t                                                 # [ROWS] CSR rows (b, h, t)
        beg = tl.load(ROWPTR + row, mask=rmask, other=0)                 # [ROWS] int64 (rows past T: [0, 0))
        end = tl.load(ROWPTR + row + 1, mask=rmask, other=0)
        # the block's entries are consecutive in col: [row_ptr[first row], row_ptr[last row + 1])
        e_lo = tl.load(ROWPTR + bh * T + t0)
        e_hi = tl.load(ROWPTR + bh * T + tl.minimum(t0 + ROWS, T))
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        qmask = rmask[:, None] & dmask[None, :]                          # [ROWS, BLOCK_D]
        q = tl.load(Q + b * sqb + h * sqh + t[:, None] * sqt + offs_d[None, :], mask=qmask, other=0.0)
        kbase = K + b * skb + hk * skh
        vbase = V + b * skb + hk * skh
        offs_e = tl.arange(0, NE)
        m_i = tl.full([ROWS], -1.0e30, tl.float32)
        l_i = tl.zeros([ROWS], dtype=tl.float32)
        acc = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)
        for e0 in range(e_lo, e_hi, NE):
            e = e0 + offs_e                                              # [NE] int64 entries
            emask = e < e_hi
            kid = tl.load(COL + e, mask=emask, other=0).to(tl.int64)     # [NE] key positions (coalesced)
            kvm = emask[:, None] & dmask[None, :]                        # [NE, BLOCK_D]
            ptr = kid[:, None] * skt + offs_d[None, :]
            kt = tl.load(kbase + ptr, mask=kvm, other=0.0)               # [NE, BLOCK_D] gathered key rows
            vt = tl.load(vbase + ptr, mask=kvm, other=0.0)               # [NE, BLOCK_D] gathered value rows
            member = (e[None, :] >= beg[:, None]) & (e[None, :] < end[:, None])   # [ROWS, NE] entry of row?
            if FP32:
                s = tl.dot(q, tl.trans(kt), input_precision="ieee")       # [ROWS, NE] fp32 products and sums
            elif EMU:                                                    # interpreter: exact products, fp32 sums
                s = tl.dot(q.to(tl.float32), tl.trans(kt.to(tl.float32)), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(kt))                               # 16-bit products are exact in fp32
            s = tl.where(member, s * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))                   # [ROWS]
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])                               # [ROWS, NE] (0 off the row's entries)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if FP32:
                acc = tl.dot(p, vt, acc * alpha[:, None], input_precision="ieee")
            else:
                acc = _split3_dot(p, vt, acc * alpha[:, None], EMU)      # [ROWS, BLOCK_D]
            m_i = m_new
        safe_l = tl.where(l_i > 0, l_i, 1.0)
        out = acc / safe_l[:, None]
        tl.store(O + b * sob + h * soh + t[:, None] * sot + offs_d[None, :], out.to(O.dtype.element_ty), mask=qmask)
        if WANT_LSE:
            lse = tl.where(l_i > 0, m_i + tl.log(safe_l), float("inf"))
            tl.store(LSE + row, lse, mask=rmask)


def head_group(BH: int, Tk: int, D: int, elem_bytes: int) -> int:
    """(b, h) per group of the program order: HEAD_GROUP if set, else the largest divisor of BH whose k and v
    (2 Tk D elem_bytes per (b, h)) fit in HEAD_GROUP_L2_BYTES (at least 1)."""
    if HEAD_GROUP is not None:
        g = int(HEAD_GROUP)
        if g < 1 or BH % g:
            raise ValueError(f"HEAD_GROUP={HEAD_GROUP} must be a divisor of B*H={BH}")
        return g
    fit = max(1, HEAD_GROUP_L2_BYTES // max(1, 2 * Tk * D * elem_bytes))
    return max(d for d in range(1, min(BH, fit) + 1) if BH % d == 0)


def rows_usable(device) -> bool:
    """Whether the kernel can run on `device` (CUDA, or CPU tensors under TRITON_INTERPRET=1)."""
    return triton_runs_on(device, triton is not None)


def _check_rows(q, k, v, row_ptr, col):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be [B, H, T, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, Tq, D = q.shape
    Hkv = k.shape[1]
    if q.dtype not in _DTYPES:
        raise ValueError(f"q dtype {q.dtype}: expected one of bfloat16, float16, float32")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"k, v must be [B={B}, Hkv, Tk, D={D}] alike; got {tuple(k.shape)} and {tuple(v.shape)}")
    if Hkv == 0 or H % Hkv:
        raise ValueError(f"H={H} is not a multiple of the {Hkv} key/value heads")
    if row_ptr.dtype.is_floating_point or col.dtype.is_floating_point or torch.bool in (row_ptr.dtype, col.dtype):
        raise ValueError(f"row_ptr / col must be integer; got {row_ptr.dtype} / {col.dtype}")
    if any(x.device != q.device for x in (k, v, row_ptr, col)):
        raise ValueError("q, k, v, row_ptr and col must be on one device")
    _check(q, k, v, row_ptr, col, block=True)                           # row_ptr length, Tk >= Tq, 1-D, col length


def sparse_rows_forward(q, k, v, row_ptr, col, scale: float, *, want_lse: bool = False):
    """out [B, H, Tq, D] in q's dtype (and, with want_lse, lse fp32 [B, H, Tq], +inf for empty rows): SEA's sparse
    attention of the query rows q [B, H, Tq, D] over their CSR keys in k, v [B, Hkv, Tk, D] (Tk >= Tq; row_ptr
    integer [B*H*Tq + 1] over rows (b, h, t); col integer key positions 0 .. Tk - 1, may be longer than row_ptr[-1]).
    Same result as kernels.sea_sparse_attention's row kernel up to float summation order. Forward only."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise RuntimeError("sparse_rows_forward is forward-only (no autograd); use "
                           "kernels.sea_sparse_attention.sea_sparse_attention for gradients, or run under "
                           "torch.no_grad()")
    _check_rows(q, k, v, row_ptr, col)
    B, H, Tq, D = q.shape
    Hkv = k.shape[1]
    rows, ne = ROWS_PER_PROGRAM, ENTRIES_PER_STEP
    if rows < 16 or rows & (rows - 1) or ne < 16 or ne & (ne - 1):
        raise ValueError(f"ROWS_PER_PROGRAM={rows}, ENTRIES_PER_STEP={ne}: each must be a power of two >= 16")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    row_ptr = row_ptr.to(torch.int64).contiguous()
    col = col.to(torch.int32).contiguous()
    o = fresh((B, H, Tq, D), q.dtype, q.device, poison=POISON_OUTPUTS)
    lse = fresh((B, H, Tq), torch.float32, q.device, poison=POISON_OUTPUTS) if want_lse else o
    if Tq and B * H:
        ntb = triton.cdiv(Tq, rows)
        hg = head_group(B * H, k.shape[2], D, k.element_size())
        _rows_fwd_kernel[(B * H * ntb,)](
            q, k, v, row_ptr, col, o, lse, float(scale),
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            o.stride(0), o.stride(1), o.stride(2),
            H, Tq, D, H // Hkv, ntb, hg,
            ROWS=rows, NE=ne, BLOCK_D=pow2_block(D), WANT_LSE=bool(want_lse), FP32=q.dtype == torch.float32,
            EMU=q.device.type != "cuda", num_warps=NUM_WARPS)
    return (o, lse) if want_lse else o
