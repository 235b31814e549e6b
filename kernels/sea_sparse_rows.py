"""SEA's sparse attention over CSR key lists, forward only, one Triton program per block of query rows.

What: for every query row r = (b * H + h) * Tq + t of q [B, H, Tq, D] (Tq consecutive positions of a longer
sequence, or the whole of it) against keys k, v [B, Hkv, Tk, D], Tk >= Tq:
    out[r] = sum_j softmax_j(q_r . k_j * scale) v_j   over j in col[row_ptr[r] : row_ptr[r + 1]]
(renormalised over the listed keys; a row with no key gives 0; GQA: head h reads kv head h // (H / Hkv)), arithmetic
in fp32, out in q's dtype; optionally the row log-sum-exp lse[r] = log sum_j exp(q_r . k_j * scale) (fp32
[B, H, Tq]; +inf for an empty row, which is what `_fwd_kernel` of kernels/sea_sparse_attention.py writes). Same
semantics, mask format and checks (`check_csr_block_inputs`) as that kernel's forward (`_fwd_kernel`,
`sparse_attention_block`); only the program layout, and so the float summation order, differs.

Why: `_fwd_kernel` runs one program per query row. Measured on an H200 (B=1, H=16, D=64, bf16, T=65536 causal,
SEA's causal_per_batch lists, K=64, k=64): 2.6 ms for ~15.6M key entries over R = 1,048,576 rows. The lists are very
uneven: a CPU simulation of the selection on a random A_hat (same budgets) gives 80% of the rows empty, almost all
others one or more whole cells of min(width, k) = 64 keys (64: 140k rows, 128: 16k, 192: 2k; max ~400), with
rows t < 4096 all holding ~64 keys and rows t >= 16384 7.2 on average. Each of the 1M programs pays a dependent
latency chain (row_ptr -> col -> k/v gathers -> reductions -> stores) whatever its length: ~2.5 ns of the whole GPU
per row. At T=16k it is SEA's largest kernel (1.27 ms). The interpolation kernel had the same problem
(kernels/sea_interp.py: one program per row 2.74 ms, 16 rows per program 0.34 ms).

Layout: one program (NUM_WARPS = 4 warps) per block of ROWS_PER_PROGRAM = 16 consecutive time steps t of one (b, h).
The block's keys are consecutive in col (rows (b, h, t) are consecutive CSR rows): entries [row_ptr[first row],
row_ptr[last row + 1]). The program loads its rows' row_ptr pairs (beg, end [16]) and q [16, BLOCK_D], and walks the
block's entries ENTRIES_PER_STEP = NE = 64 at a time, whatever row they belong to: a coalesced [64] load of col, a
[64, BLOCK_D] gather of the k rows and one of the v rows (issued together from the same indices), the score tile
S [16, 64] = q k^T * scale on tensor cores (tl.dot), masked to -inf outside member[r, e] = beg[r] <= e < end[r]
(each entry belongs to exactly one row of the block), a per-row online softmax on the tile (running max m and
normaliser l [16]: alpha = exp(m - m_new), P = exp(S - m_new), zero off the row's entries) and acc [16, BLOCK_D] =
acc alpha + P v (tl.dot). Epilogue: out = acc / l (l = 0: empty row, out = 0), one [16, D] store in q's dtype, and
the lse [16] when asked (WANT_LSE is a constexpr: no log and no store otherwise). A block without any key never
enters the loop: two [16] row_ptr loads, two scalar loads, the q load and a zero store.
  Why entries rather than rows x keys: a [16 rows x KB keys] tile per step (the first version of this file, KB = 4)
runs max-count / KB steps per block with lanes of short and empty rows idle. On the simulated T=65536 lists that is
1.17M steps at 21% lane use (4.7M at KB = 1); walking the block's entries is 246K steps of 64 at 99% (491K at
NE = 32, 139K at NE = 128 with 88%; 16k: 158K at 99%), and each step's 64 key rows are all live, 16 KiB of useful
bf16 gathers in flight per program. The price is a [16, 64] score tile of which 1/16 is used: on tensor cores (2
MMAs of 16 x 64 x 64 plus the split below) and 8 exps per thread per step, cheap next to the gathers.
  fp32 accuracy with tensor cores: for bf16 / fp16 inputs the score products of 16-bit values are exact in fp32 and
the MMA sums in fp32; P (fp32) is split into three pieces in v's dtype (P = p1 + p2 + p3 to 2^-24 relative,
`_split_dot`), three MMAs with v (exact products, fp32 sums): the result is fp32 arithmetic up to summation order,
so bf16 outputs equal the row kernel's up to a bf16 rounding boundary (the tests check one ulp and that > 99% are
exactly one rounding of the fp32 result; P rounded to bf16 would not pass). fp32 inputs use input_precision="ieee"
dots (CUDA-core FMAs: exact, slower; not the benchmarked dtype; "tf32x3" would be the lever). Triton's interpreter
gets bf16 tl.dot wrong, so there (EMU, any non-CUDA device) the same pieces run as fp32 "ieee" dots.
  PIECES (SEA's sparse_pieces option, the `pieces` argument) trades that accuracy for time: 1 rounds P once to the
inputs' dtype before its product with v, as FlashAttention does (2 keeps two pieces). Measured on an H200 (bf16,
results/nvidia-h200/sea-train/call15/): the forward with lse 1.03 -> 0.64 ms at 8k on synthetic lists; SEA's 32k
causal fwd+bwd 13.8 -> 12.5 ms with the backward's pieces alike; the layer output's error against exact attention
on real q/k/v moved by < 0.001 % (call16/, call17/). The tests bound the error by the rounding it adds.
  Program order: groups of HEAD_GROUP (b, h) one after the other, time-block major inside a group (block 0 of
each (b, h) of the group, then block 1, ...). Not time-block major over all B*H (as sea_interp does) because here
programs gather k and v rows from their whole history: with all 16 heads interleaved, the resident programs at
t ~ 65536 touch 16 heads x 16 MiB of k and v (256 MiB, 5x the 50 MB L2 of an H200); the row kernel's grid (t fastest,
then b*h) runs one head at a time and so keeps that head's k and v in L2. HEAD_GROUP = None picks the largest
divisor of B*H whose k and v fit in HEAD_GROUP_L2_BYTES = 32 MiB (T=65536, D=64, bf16: 2 heads; 16k: 8; 256k: 1),
so the gathers hit L2 while the long blocks of each group still start first inside it. (In these lists the longest
blocks are not at small t: t < 4096 rows hold ~64 keys each, 1-2K entries a block, and the longest blocks, 31 steps,
come from rows with several cells at t ~ 4k-16k.) Offsets are int64 (b sqb, t sqt, row_ptr entries, key * stride).

Prediction (not measured; H200, B=1, H=16, T=65536 causal, D=64, bf16, the lists above). Assumptions: the 50 MB
L2 holds the active group's k and v (32 MiB), ~5-6 programs resident per SM (~100 registers a thread: two [64, 64]
bf16 tiles, the [16, 64] score and accumulator tiles; ~20 KB of shared memory for the dot operands), no software
pipelining of the gather loop, L2 hit latency ~0.6 us, HBM ~1 us. Traffic: the gathers are 15.6M x 2 x 128 B =
4.0 GB from L2 (floor ~0.6-0.7 ms at ~6-7 TB/s of L2 bandwidth for whole 128-byte rows; the row kernel's 2.6 ms is
1.5 TB/s of them); from HBM only ~0.6 GB (k, v once 256 MB, col 63 MB, q and out 2 x 134 MB): ~0.15 ms. Issue:
~1000 warp-instructions per step (gather addresses and loads, two operand conversions through shared memory, four
small MMAs, the [16, 64] mask/max/exp/sum, the split) x 246K steps + ~65K programs x ~1200: ~0.33G, ~0.3 ms at ~1.1T
warp-instructions/s. Latency: per non-empty program ~2 us of set-up (row_ptr -> bounds -> first col) + 4.5 steps x
~1.7 us (col -> gathers -> MMAs), ~9.5 us; 496 programs per SM at ~5.5 resident: ~90 rounds, ~0.85 ms. These
overlap (the rounds are themselves gathering about half the time: ~45 KB in flight per SM, about what L2 bandwidth
needs). Expected 0.7-1.0 ms (best guess 0.8 ms), i.e. ~3x faster than 2.6 ms; T=16k: 158K steps, 9.7 per program,
16,384 programs: 0.45-0.6 ms (was 1.27 ms). If it measures above ~1.2 ms: check the L2 hit rate (HEAD_GROUP = 1),
then NE = 128 (half the steps, 88% lane use, more registers) or 8 warps; if Triton pipelines the col -> gather chain
(num_stages), the latency term shrinks toward the L2 floor.

Under TRITON_INTERPRET=1 (CPU tests) the fp32 -> bf16 cast of the store truncates toward zero; on CUDA it rounds to
nearest even like torch (the row kernel does the same on each backend).

Limits: forward only (a RuntimeError in words when grad mode is on and q, k or v requires grad); q, k, v in one
dtype among bf16 / fp16 / fp32; they are made contiguous (no-ops for the layer's tensors); no padding mask (the
lists already hold only the keys each row may see); ROWS_PER_PROGRAM and ENTRIES_PER_STEP powers of two >= 16
(tl.dot tile sizes).
"""
from __future__ import annotations

import torch

from kernels._buffers import fresh, pow2_block, triton_runs_on
from kernels.sea_sparse_attention import check_csr_block_inputs

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
# warps of the forward's programs when P is rounded once (pieces=1: a third of the P v products per step). H200,
# T=65536 causal, SEA's lists, bf16: 0.960 -> 0.889 ms with 2 warps (4 warps with three pieces: 2 warps 1.016x
# there); results/nvidia-h200/sea-front/call3/. The backward kernels keep NUM_WARPS.
NUM_WARPS_ONE_PIECE = 2
# 16-bit pieces of the fp32 probabilities in the P v product (16-bit inputs; `_split_dot`): 3 = fp32 accuracy
# (the default), 1 = P rounded once to the inputs' dtype, FlashAttention's precision. sparse_rows_forward's `pieces`
# argument overrides it per call; the backward (kernels/sea_sparse_rows_bwd.py) applies the same to dS and P.
PIECES = 3
PIECES_CHOICES = (1, 2, 3)
# (b, h) whose time blocks are interleaved (time-block major inside a group of HEAD_GROUP (b, h), groups one after
# the other). None: the largest divisor of B*H whose groups' k and v (2 Tk D bytes-per-element each) fit in
# HEAD_GROUP_L2_BYTES, so the gathers of the resident programs hit L2. Tests force it.
HEAD_GROUP = None
HEAD_GROUP_L2_BYTES = 32 << 20
# The forward's group when HEAD_GROUP is None (None: the rule above, which the backward kernels keep): one (b, h) at
# a time measured fastest on an H200 (bf16, SEA's causal lists, pieces=1): 16k 0.518 -> 0.491 ms against the rule's
# 8 heads, 64k 0.894 -> 0.868 against its 2 (results/nvidia-h200/sea-graph-replay/call5/); inside SEA's forward
# 0.518 -> 0.490 and 0.897 -> 0.869 ms (call6/).
FORWARD_HEAD_GROUP = 1
# Tests set this to True: fresh outputs (out, lse) are then filled with NaN so a skipped write fails.
POISON_OUTPUTS = False



if triton is not None:

    @triton.jit
    def _piece_dot(piece, vt, acc, EMU: tl.constexpr):
        """acc + piece @ vt, both 16-bit, fp32 sums: tensor cores, or under Triton's interpreter (EMU, whose bf16
        tl.dot is wrong) the same values as fp32 "ieee" dots (the 16-bit products are exact in fp32 either way)."""
        if EMU:
            return tl.dot(piece.to(tl.float32), vt.to(tl.float32), acc, input_precision="ieee")
        return tl.dot(piece, vt, acc)

    @triton.jit
    def _split_dot(p, vt, acc, EMU: tl.constexpr, PIECES: tl.constexpr):
        """acc + p @ vt for p fp32 [M, N] and vt 16-bit [N, D] on tensor cores. PIECES = 3: at fp32 accuracy, p =
        p1 + p2 + p3 in vt's dtype (each piece takes the next 8 (bf16) or 11 (fp16) significant bits; the remainder
        past three pieces is below 2^-24 p), every product piece * v is exact in fp32, the sums fp32. PIECES = 2:
        the first two pieces (p to ~2^-16 relative); PIECES = 1: p rounded once to vt's dtype (FlashAttention's
        precision for its P v and dS k products)."""
        p1 = p.to(vt.dtype)
        acc = _piece_dot(p1, vt, acc, EMU)
        if PIECES >= 2:
            r1 = p - p1.to(tl.float32)
            p2 = r1.to(vt.dtype)
            acc = _piece_dot(p2, vt, acc, EMU)
            if PIECES >= 3:
                acc = _piece_dot((r1 - p2.to(tl.float32)).to(vt.dtype), vt, acc, EMU)
        return acc

    @triton.jit
    def _rows_program(ROWPTR, H, T, D, GROUP, NTB, HG, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
        """This program's block of query rows (shared by the forward and backward kernels): (b, h, kv head, t [ROWS]
        int64 time steps, rmask, row [ROWS] CSR rows (b, h, t), beg / end [ROWS] their entries (rows past T: [0, 0)),
        e_lo / e_hi the block's entries (consecutive in col), offs_d, dmask). Program order: groups of HG (b, h) one
        after the other; inside a group time-block major (block 0 of every (b, h) of the group, then block 1, ...)."""
        pid = tl.program_id(0).to(tl.int64)
        grp = pid // (HG * NTB)
        rem = pid % (HG * NTB)
        tb = rem // HG
        bh = grp * HG + rem % HG
        b = bh // H
        h = bh % H
        t0 = tb * ROWS
        t = t0 + tl.arange(0, ROWS)
        rmask = t < T
        row = bh * T + t
        beg = tl.load(ROWPTR + row, mask=rmask, other=0)
        end = tl.load(ROWPTR + row + 1, mask=rmask, other=0)
        e_lo = tl.load(ROWPTR + bh * T + t0)
        e_hi = tl.load(ROWPTR + bh * T + tl.minimum(t0 + ROWS, T))
        offs_d = tl.arange(0, BLOCK_D)
        return b, h, h // GROUP, t, rmask, row, beg, end, e_lo, e_hi, offs_d, offs_d < D

    @triton.jit
    def _rows_fwd_kernel(Q, K, V, ROWPTR, COL, O, LSE, SPROB, SMIX, CAVG, scale,
                         sqb, sqh, sqt, skb, skh, skt, sob, soh, sot,
                         spb, sph, spt, smb, smh, smt, scb, sch, sct, scd,
                         H, T, D, GROUP, NTB, HG,
                         ROWS: tl.constexpr, NE: tl.constexpr, BLOCK_D: tl.constexpr, WANT_LSE: tl.constexpr,
                         FP32: tl.constexpr, EMU: tl.constexpr, MIX: tl.constexpr,
                         PIECES: tl.constexpr):
        b, h, hk, t, rmask, row, beg, end, e_lo, e_hi, offs_d, dmask = _rows_program(
            ROWPTR, H, T, D, GROUP, NTB, HG, ROWS, BLOCK_D)
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
                acc = _split_dot(p, vt, acc * alpha[:, None], EMU, PIECES)   # [ROWS, BLOCK_D]
            m_i = m_new
        safe_l = tl.where(l_i > 0, l_i, 1.0)
        out = acc / safe_l[:, None]
        if MIX:     # SEA's mix in the epilogue: (1 - s_mix) c_avg + s_mix s_prob c, c kept in fp32
            sp = tl.load(SPROB + b * spb + h * sph + t * spt, mask=rmask, other=0.0)             # [ROWS]
            sm = tl.load(SMIX + b * smb + h * smh + t * smt, mask=rmask, other=0.0)
            ca = tl.load(CAVG + b * scb + h * sch + t[:, None] * sct + offs_d[None, :] * scd, mask=qmask,
                         other=0.0)                                                             # [ROWS, BLOCK_D]
            out = (1.0 - sm)[:, None] * ca + (sm * sp)[:, None] * out
        tl.store(O + b * sob + h * soh + t[:, None] * sot + offs_d[None, :], out.to(O.dtype.element_ty), mask=qmask)
        if WANT_LSE:
            lse = tl.where(l_i > 0, m_i + tl.log(safe_l), float("inf"))
            tl.store(LSE + row, lse, mask=rmask)


def check_pieces(pieces: int | None) -> int:
    """The pieces argument resolved (None: the module's PIECES) and checked."""
    pieces = PIECES if pieces is None else pieces
    if pieces not in PIECES_CHOICES:
        raise ValueError(f"pieces={pieces!r}: expected one of {PIECES_CHOICES}")
    return int(pieces)


def head_group(BH: int, Tk: int, D: int, elem_bytes: int, *, forward: bool = False) -> int:
    """(b, h) per group of the program order: HEAD_GROUP if set; else for the forward (forward=True)
    FORWARD_HEAD_GROUP when set and a divisor of BH; else the largest divisor of BH whose k and v
    (2 Tk D elem_bytes per (b, h)) fit in HEAD_GROUP_L2_BYTES (at least 1)."""
    if HEAD_GROUP is not None:
        g = int(HEAD_GROUP)
        if g < 1 or BH % g:
            raise ValueError(f"HEAD_GROUP={HEAD_GROUP} must be a divisor of B*H={BH}")
        return g
    if forward and FORWARD_HEAD_GROUP is not None and BH % FORWARD_HEAD_GROUP == 0:
        return int(FORWARD_HEAD_GROUP)
    fit = max(1, HEAD_GROUP_L2_BYTES // max(1, 2 * Tk * D * elem_bytes))
    return max(d for d in range(1, min(BH, fit) + 1) if BH % d == 0)


def rows_usable(device) -> bool:
    """Whether the kernel can run on `device` (CUDA, or CPU tensors under TRITON_INTERPRET=1)."""
    return triton_runs_on(device, triton is not None)


def sparse_rows_forward(q, k, v, row_ptr, col, scale: float, *, want_lse: bool = False, mix=None, out=None,
                        pieces: int | None = None):
    """out [B, H, Tq, D] in q's dtype (and, with want_lse, lse fp32 [B, H, Tq], +inf for empty rows): SEA's sparse
    attention of the query rows q [B, H, Tq, D] over their CSR keys in k, v [B, Hkv, Tk, D] (Tk >= Tq; row_ptr
    integer [B*H*Tq + 1] over rows (b, h, t); col integer key positions 0 .. Tk - 1, may be longer than row_ptr[-1]).
    Same result as kernels.sea_sparse_attention's row kernel up to float summation order. Forward only.
    mix = (s_prob, s_mix, c_avg): out = ((1 - s_mix) c_avg + s_mix s_prob c).to(q.dtype) with c the attention
    above in fp32 (never rounded to q's dtype), s_prob, s_mix fp32 [B, H, Tq, 1], c_avg fp32 [B, H, Tq, D] or
    [B, H, 1, D] (any strides): kernels/sea_sparse_mix.py's contract and checks on this kernel's layout (its mix
    lives in the epilogue; the lse, when asked, is c's). out: optionally a preallocated [B, H, Tq, D] tensor of q's
    dtype with a unit last stride (e.g. a query-block slice of the layer's output), written and returned.
    pieces: 16-bit pieces of P in the P v product (PIECES_CHOICES; None: the module's PIECES; 16-bit inputs only)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    pieces = check_pieces(pieces)
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise RuntimeError("sparse_rows_forward is forward-only (no autograd); use "
                           "kernels.sea_sparse_attention.sea_sparse_attention for gradients, or run under "
                           "torch.no_grad()")
    check_csr_block_inputs(q, k, v, row_ptr, col)
    if mix is not None:
        from kernels.sea_sparse_mix import check_mix

        check_mix(q, mix, "sparse_rows_forward")
    B, H, Tq, D = q.shape
    Hkv = k.shape[1]
    rows, ne = ROWS_PER_PROGRAM, ENTRIES_PER_STEP
    if rows < 16 or rows & (rows - 1) or ne < 16 or ne & (ne - 1):
        raise ValueError(f"ROWS_PER_PROGRAM={rows}, ENTRIES_PER_STEP={ne}: each must be a power of two >= 16")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    row_ptr = row_ptr.to(torch.int64).contiguous()
    col = col.to(torch.int32).contiguous()
    if out is not None:
        if tuple(out.shape) != (B, H, Tq, D) or out.dtype != q.dtype or out.device != q.device or out.stride(3) != 1:
            raise ValueError(f"out must be {q.dtype} {(B, H, Tq, D)} on {q.device} with a unit last stride; got "
                             f"{out.dtype} {tuple(out.shape)} on {out.device}, strides {out.stride()}")
        o = out
    else:
        o = fresh((B, H, Tq, D), q.dtype, q.device, poison=POISON_OUTPUTS)
    lse = fresh((B, H, Tq), torch.float32, q.device, poison=POISON_OUTPUTS) if want_lse else o
    if Tq and B * H:
        ntb = triton.cdiv(Tq, rows)
        hg = head_group(B * H, k.shape[2], D, k.element_size(), forward=True)
        from kernels.sea_sparse_mix import mix_launch_args

        mix_args = mix_launch_args(mix, o)
        _rows_fwd_kernel[(B * H * ntb,)](
            q, k, v, row_ptr, col, o, lse, *mix_args[:3], float(scale),
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            o.stride(0), o.stride(1), o.stride(2), *mix_args[3:],
            H, Tq, D, H // Hkv, ntb, hg,
            ROWS=rows, NE=ne, BLOCK_D=pow2_block(D), WANT_LSE=bool(want_lse), FP32=q.dtype == torch.float32,
            EMU=q.device.type != "cuda", MIX=mix is not None, PIECES=pieces,
            num_warps=NUM_WARPS_ONE_PIECE if pieces == 1 else NUM_WARPS)
    return (o, lse) if want_lse else o
