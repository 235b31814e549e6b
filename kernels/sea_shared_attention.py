"""Sparse attention where each block of R query rows attends one key set made of compressed cells (causal, or
bidirectional with causal=False: every block takes the geometry L = T, its cells' keys outside its own rows and all of
its own R keys, no mask inside).

What: q [B, H, T, D], k, v [B, Hkv, T, D] (GQA: head h reads kv head h // (H / Hkv)), sel bool [B, H, NB, KC]
(NB = ceil(T / R); per (b, h, block j) its selected cells). Block j holds query rows [j R, min(T, (j+1) R)) and
its geometry is L_j = min(T, (j+1) R): cell c spans keys [lo, hi) = [floor((2 c L_j + KC) / (2 KC)),
floor((2 (c+1) L_j + KC) / (2 KC))) and contributes n = min(hi - lo, k_sel) keys lo + floor(i (hi - lo) / n), i < n
(methods/sea/interp.py's rule), of which those before the block's first row j R count; then the block's own keys
j R .. t. Row t attends
    out[t] = sum_key softmax(q_t . k_key * scale) v_key      (renormalised over those keys; at least key t)
fp32 arithmetic (score products of 16-bit inputs are exact in fp32; P v by kernels/sea_sparse_rows.py's pieces),
out in q's dtype. The per-row CSR form of the same selection (methods/sea/shared.py: shared_row_csr) run through
any of the CSR kernels gives the same function: that is what the tests compare against.

Why: SEA's per-row selection makes the sparse kernel a gather (kernels/sea_sparse_rows.py walks ~10M scattered
(row, key) entries at T = 16k causal). With a shared selection a program loads each selected key once for its R rows
and the score and P v products are [R, BN] x [BN, D] tiles on tensor cores, with no CSR lists at all: the cells are
expanded to keys in the kernel.

Layout: one program per (b, h, block). Its selected cells' keys, one cell after the other, form a run of key slots
that the loop walks BN at a time (a slot finds its cell by one compare-and-sum against the cells' cumulative key
counts, [KC] in registers, then reads the cell's geometry from a per-program int32 table the program wrote first), so
narrow cells share a tile; then one [R, R] causal tile of the block's own keys; an online softmax (running max and
normaliser per row; `_tile`) throughout. Keys are loaded as rows ([N, D], as kernels/sea_sparse_rows.py does).
Measured on an H200 (bf16, B=1, H=16, D=64, causal, SEA's untrained estimate, R=64, budget 2): the first form, a loop
over cells with scalar cell loads and keys gathered as [D, N] columns, 0.55 ms at T = 16k (as long as the rows kernel
it replaces); the slot run with per-slot one-hot selects of int64 [64 x 64] vectors 4.65 ms; with the table made
by tensor ops 0.231 ms (but ~20 small launches a call); the table made in the kernel 0.320 ms on 4 warps, 0.195 on 2
(results/nvidia-h200/sea-shared-keys/).
"""
from __future__ import annotations

import torch

from kernels._buffers import pow2_block

try:
    import triton
    import triton.language as tl
except ImportError:                                                      # pragma: no cover - triton is a dependency
    triton = None

# keys per loop step (the N of the score tile; a power of two >= 16) and warps per program. Measured on an H200 (bf16,
# B=1, H=16, D=64, causal, SEA's untrained estimate, R=64, budget 2; scripts/probe_shared_kernel.py): 64 keys on 2
# warps 0.195 ms at 16k, 0.484 at 64k; on 4 warps 0.317 / 0.827; 128 keys on 4 warps 0.216 / 0.632; 32 keys >= 0.275
# / 0.667; 8 warps slower everywhere (results/nvidia-h200/sea-shared-keys/call6/). Bidirectional (every block
# attends its cells and all R of its own keys; 8k, k=13 of 128 cells, with SOFTMAX_EXP="ex2_ftz"): 4 warps 0.060 ms
# against 0.088 on 2, 128 keys on 4 warps 0.144 (results/nvidia-h200/sea-key-pass-ncu/call2/), so that direction
# takes NUM_WARPS_BIDIR.
BLOCK_N = 64
NUM_WARPS = 2
NUM_WARPS_BIDIR = 4
# The cells' geometry in int64 (the kernel's WIDE form) at every T when True; by default only where 2 KC (T + 1)
# passes 2^31 (tests compare the two forms on small T).
FORCE_WIDE = False
# The online softmax's exponentials: "ex2_ftz" keeps the scores in log2 units (scale log2 e applied with the scale)
# and takes 2^x by PTX's ex2.approx.ftz (kernels/_tl_math.py; terms below 2^-126 of the row maximum flushed to 0);
# "exp": tl.exp, whose lowering adds a compare and two multiplies to each exponential
# (the A/B switch, twenty-second session). H200, SEA's bidirectional 8k forward: the kernel 0.097 -> 0.088 ms on 2
# warps (results/nvidia-h200/sea-key-pass-ncu/call2/).
SOFTMAX_EXP = "ex2_ftz"


def _softmax_ex2() -> bool:
    if SOFTMAX_EXP not in ("exp", "ex2_ftz"):
        raise ValueError(f"SOFTMAX_EXP={SOFTMAX_EXP!r}: 'exp' or 'ex2_ftz'")
    return SOFTMAX_EXP == "ex2_ftz"


if triton is not None:
    from kernels._tl_math import LOG2E, ex2_ftz
    from kernels.sea_sparse_rows import _split_dot

    @triton.jit
    def _tile(q, kbase, vbase, key, kmask, t, m_i, l_i, acc, scale, skt, svt, offs_d, dmask,
              FP32: tl.constexpr, EMU: tl.constexpr, PIECES: tl.constexpr, CAUSAL: tl.constexpr,
              EX2: tl.constexpr):
        """One step of the online softmax: the keys `key` [N] (where kmask, and causal: <= each row's t) against
        q [R, D]. EX2: m_i in log2 units (scores times scale log2 e) and 2^x by ex2_ftz."""
        kv_mask = kmask[:, None] & dmask[None, :]
        kr = tl.load(kbase + key[:, None] * skt + offs_d[None, :], mask=kv_mask, other=0.0)   # [N, BLOCK_D] rows
        vt = tl.load(vbase + key[:, None] * svt + offs_d[None, :], mask=kv_mask, other=0.0)   # [N, BLOCK_D]
        if FP32:
            s = tl.dot(q, tl.trans(kr), input_precision="ieee")
        elif EMU:                                                        # interpreter: exact products, fp32 sums
            s = tl.dot(q.to(tl.float32), tl.trans(kr.to(tl.float32)), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(kr))                                  # [R, N] fp32 sums of exact products
        if CAUSAL:
            ok = kmask[None, :] & (key[None, :] <= t[:, None])
        else:
            ok = kmask[None, :] & (t[:, None] >= 0)
        if EX2:
            s = tl.where(ok, s * (scale * LOG2E), float("-inf"))
        else:
            s = tl.where(ok, s * scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)           # rows with no key yet: all terms 0
        if EX2:
            alpha = ex2_ftz(m_i - m_safe, EMU)
            p = ex2_ftz(s - m_safe[:, None], EMU)
        else:
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if FP32:
            acc = tl.dot(p, vt, acc * alpha[:, None], input_precision="ieee")
        else:
            acc = _split_dot(p, vt, acc * alpha[:, None], EMU, PIECES)
        return m_new, l_i, acc

    @triton.jit
    def _shared_fwd_kernel(Q, K, V, MASK, TAB, O, SPROB, SMIX, CAVG, scale,
                           sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
                           spb, sph, spt, smb, smh, smt, scb, sch, sct, scd,
                           H, T, D, GROUP, NB, KSEL,
                           KC: tl.constexpr, KCP: tl.constexpr, R: tl.constexpr, BN: tl.constexpr,
                           BLOCK_D: tl.constexpr, FP32: tl.constexpr, EMU: tl.constexpr, PIECES: tl.constexpr,
                           CAUSAL: tl.constexpr, MIX: tl.constexpr, EX2: tl.constexpr, WIDE: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        j = pid % NB
        bh = pid // NB
        b = bh // H
        h = bh % H
        hk = h // GROUP
        t = j * R + tl.arange(0, R)                                      # [R] int64 query rows
        rmask = t < T
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        q = tl.load(Q + b * sqb + h * sqh + t[:, None] * sqt + offs_d[None, :],
                    mask=rmask[:, None] & dmask[None, :], other=0.0)
        kbase = K + b * skb + hk * skh
        vbase = V + b * svb + hk * svh
        offs_n = tl.arange(0, BN)
        m_i = tl.full([R], float("-inf"), tl.float32)
        l_i = tl.zeros([R], dtype=tl.float32)
        acc = tl.zeros([R, BLOCK_D], dtype=tl.float32)
        # The selected cells' keys outside the block's own rows [j R, j R + R) (causal: before them), cells in
        # ascending order, form a run of `total` key slots: cell c holds slots [ends[c] - m[c], ends[c]). Of its n keys
        # lo + floor(i w / n) (ascending) the first a = min(n, ceil((j R - lo) n / w)) lie before the block and the
        # first b = min(n, ceil((j R + R - lo) n / w)) before its end: causal m = a; bidirectional m = n - (b - a),
        # slot i of the cell taking key i, or i + (b - a) from i = a on. Per cell (lo, w, n, first slot, a, b - a)
        # go to this program's rows of TAB (int32 scratch), read back by gathers; BN slots a step, so narrow cells
        # share a tile.
        cc = tl.arange(0, KCP)
        ccm = cc < KC
        sel = tl.load(MASK + pid * KC + cc, mask=ccm, other=0) != 0     # [KCP] the block's selection of this head
        if CAUSAL:
            L = tl.minimum((j + 1) * R, T).to(tl.int32)                  # the block's geometry
        else:
            L = T                                                        # one geometry for all rows
        start = (j * R).to(tl.int32)
        # The cells' geometry. WIDE: in int64 where 2 c L passes 2^31 (T = 8M at KC = 128), the values (each at most
        # T) back in int32; otherwise int32 throughout (the casts are no-ops). Not the default: in int64 at every T
        # this kernel took 0.065 / 0.474 ms instead of 0.060 / 0.439 at 8k / 64k on an H200
        # (results/nvidia-h200/sea-rows/call8/, call9/). The slot loop keeps 32-bit products either way
        # (i w < KSEL (T / KC + 2), checked by shared_attention).
        if WIDE:
            cg = cc.to(tl.int64)
        else:
            cg = cc
        lo = (2 * cg * L + KC) // (2 * KC)
        w = (2 * (cg + 1) * L + KC) // (2 * KC) - lo
        n = tl.minimum(w, KSEL)
        wd = tl.maximum(w, 1)
        a = tl.minimum(tl.maximum(((start - lo) * n + w - 1) // wd, 0), n).to(tl.int32)
        if CAUSAL:
            gap = tl.zeros_like(a)
        else:                                                            # the block's own keys inside the cell
            gap = tl.minimum(tl.maximum(((start + R - lo) * n + w - 1) // wd, 0), n).to(tl.int32) - a
        lo, w, n = lo.to(tl.int32), w.to(tl.int32), n.to(tl.int32)
        live = sel & ccm & (w > 0)
        if CAUSAL:
            m = tl.where(live, a, 0)
        else:
            m = tl.where(live, n - gap, 0)
        ends = tl.cumsum(m, 0)                                           # [KCP] int32
        total = tl.sum(m, 0)
        tab = TAB + pid * (6 * KC)
        tl.store(tab + cc, lo, mask=ccm)
        tl.store(tab + KC + cc, w, mask=ccm)
        tl.store(tab + 2 * KC + cc, tl.maximum(n, 1), mask=ccm)
        tl.store(tab + 3 * KC + cc, ends - m, mask=ccm)
        tl.store(tab + 4 * KC + cc, a, mask=ccm)
        tl.store(tab + 5 * KC + cc, gap, mask=ccm)
        tl.debug_barrier()                                               # the table is read by other threads
        ends = tl.where(ccm, ends, 2147483647)
        for s0 in range(0, total, BN):
            slot = s0 + offs_n                                           # [BN] int32
            smask = slot < total
            ci = tl.sum((ends[None, :] <= slot[:, None]).to(tl.int32), 1)   # [BN] the cell holding each slot
            ci = tl.minimum(ci, KC - 1)
            c_lo = tl.load(tab + ci, mask=smask, other=0)
            c_w = tl.load(tab + KC + ci, mask=smask, other=0)
            c_n = tl.load(tab + 2 * KC + ci, mask=smask, other=1)
            c_first = tl.load(tab + 3 * KC + ci, mask=smask, other=0)
            i = slot - c_first                                           # the slot's place in its cell's run
            if not CAUSAL:                                               # past the keys inside the block: skip them
                i += tl.where(i >= tl.load(tab + 4 * KC + ci, mask=smask, other=0),
                              tl.load(tab + 5 * KC + ci, mask=smask, other=0), 0)
            key = (c_lo + (i * c_w) // c_n).to(tl.int64)                 # [BN] key positions (interp.py's rule)
            m_i, l_i, acc = _tile(q, kbase, vbase, key, smask, t, m_i, l_i, acc, scale, skt, svt, offs_d, dmask,
                                  FP32, EMU, PIECES, CAUSAL, EX2)
        own = j * R + tl.arange(0, R)                                    # the block's own keys (causal: <= t)
        m_i, l_i, acc = _tile(q, kbase, vbase, own, own < T, t, m_i, l_i, acc, scale, skt, svt, offs_d, dmask,
                              FP32, EMU, PIECES, CAUSAL, EX2)
        out = tl.where(l_i[:, None] > 0, acc / tl.where(l_i > 0, l_i, 1.0)[:, None], 0.0)
        if MIX:     # SEA's mix in the epilogue, as kernels/sea_sparse_rows.py's: c stays in fp32
            sp = tl.load(SPROB + b * spb + h * sph + t * spt, mask=rmask, other=0.0)             # [R]
            sm = tl.load(SMIX + b * smb + h * smh + t * smt, mask=rmask, other=0.0)
            ca = tl.load(CAVG + b * scb + h * sch + t[:, None] * sct + offs_d[None, :] * scd,
                         mask=rmask[:, None] & dmask[None, :], other=0.0)                       # [R, BLOCK_D]
            out = (1.0 - sm)[:, None] * ca + (sm * sp)[:, None] * out
        tl.store(O + b * sob + h * soh + t[:, None] * sot + offs_d[None, :], out.to(O.dtype.element_ty),
                 mask=rmask[:, None] & dmask[None, :])

    @triton.jit
    def _rebin_kernel(A, SHIFT, SRANGE, OUT, sab, sah, sat, H, T, NB,
                      K: tl.constexpr, KP: tl.constexpr, R: tl.constexpr):
        """One (b, h, block j): OUT[b, h, j, c'] = sum of A[b, h, t, c] over the block's rows t and the cells c whose
        middle key (row geometry L_t = t + 1) lies in block cell c' (geometry L_j): c' = c - SHIFT[t, c] (a table
        made once per shape, rebin_tables). The sum runs over the block's shifts s in SRANGE[j]: for each, the
        [R, K] tile of A read s cells to the right (L1 / L2 after the first), the entries whose shift is s, summed
        over the rows. No division in the kernel."""
        pid = tl.program_id(0).to(tl.int64)
        j = pid % NB
        bh = pid // NB
        t = j * R + tl.arange(0, R)                                      # [R] rows
        rmask = t < T
        cb = tl.arange(0, KP)                                            # [KP] block cells c'
        base = A + (bh // H) * sab + (bh % H) * sah
        acc = tl.zeros([KP], dtype=tl.float32)
        for sh in range(tl.load(SRANGE + 2 * j), tl.load(SRANGE + 2 * j + 1) + 1):
            c = cb + sh                                                  # [KP] row cells read at this shift
            ok = rmask[:, None] & ((c >= 0) & (c < K))[None, :]
            a = tl.load(base + t[:, None] * sat + c[None, :], mask=ok, other=0.0)
            s = tl.load(SHIFT + t[:, None] * K + c[None, :], mask=ok, other=-32768)
            acc += tl.sum(tl.where(s.to(tl.int32) == sh, a.to(tl.float32), 0.0), 0)
        tl.store(OUT + pid * K + cb, acc, mask=cb < K)


def check_shared_inputs(q, k, v, sel, R: int) -> None:
    """Shapes, dtypes and devices of shared_attention's inputs (ValueError naming what is wrong)."""
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"shared attention: q [B, H, T, D], k = v [B, Hkv, T, D]; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    B, H, T, D = q.shape
    if k.shape[0] != B or k.shape[2] != T or k.shape[3] != D or H % k.shape[1]:
        raise ValueError(f"shared attention: k, v {tuple(k.shape)} do not match q {tuple(q.shape)} (B, T, D equal, "
                         "H a multiple of Hkv)")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"shared attention: q, k, v of one dtype among fp32 / fp16 / bf16; got {q.dtype}, "
                         f"{k.dtype}, {v.dtype}")
    if R < 16 or R & (R - 1):
        raise ValueError(f"shared attention: rows per block {R} must be a power of two >= 16")
    NB = -(-T // R)
    if sel.dim() != 4 or tuple(sel.shape[:3]) != (B, H, NB) or sel.dtype != torch.bool:
        raise ValueError(f"shared attention: the blocks' selection bool [B, H, NB, K] with (B, H, NB) = "
                         f"{(B, H, NB)}; got {sel.dtype} {tuple(sel.shape)}")
    if T + R >= 2 ** 31:
        raise ValueError(f"shared attention: T={T} overflows its int32 row arithmetic")
    for name, x in (("k", k), ("v", v), ("sel", sel)):
        if x.device != q.device:
            raise ValueError(f"shared attention: {name} on {x.device}, q on {q.device}")


def shared_attention(q, k, v, sel, *, rows: int, k_sel: int, scale: float, pieces: int = 3, causal: bool = True,
                     mix=None) -> torch.Tensor:
    """out [B, H, T, D] in q's dtype for the blocks' selection sel bool [B, H, NB, K] (see the module docstring;
    causal=False: one geometry L = T for every block, cells' keys outside the block's rows, all of its own keys).
    Forward only: inputs that require grad are refused (the per-row CSR kernels carry the backward). pieces:
    kernels/sea_sparse_rows.py's P v precision for 16-bit inputs (3: fp32 accuracy, 1: P rounded once).
    mix = (s_prob, s_mix, c_avg): SEA's mix in the epilogue, out = ((1 - s_mix) c_avg + s_mix s_prob c).to(q.dtype)
    with c the attention above in fp32, s_prob, s_mix fp32 [B, H, T, 1], c_avg fp32 [B, H, T, D] or [B, H, 1, D]
    (any strides; the contract of kernels/sea_sparse_rows.py's mix)."""
    if triton is None:
        raise RuntimeError("shared attention needs Triton")
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise RuntimeError("shared_attention is forward-only (no autograd); run under torch.no_grad() or use the "
                           "per-row CSR lists (methods/sea/shared.py: shared_row_csr) with a CSR kernel")
    if pieces not in (1, 2, 3):
        raise ValueError(f"pieces={pieces!r}: expected 1, 2 or 3")
    check_shared_inputs(q, k, v, sel, rows)
    B, H, T, D = q.shape
    if int(k_sel) * (T // sel.shape[3] + 2) >= 2 ** 31:                 # the slot loop's i w products (int32)
        raise ValueError(f"shared attention: k_sel={k_sel} keys a cell of ~T / K = {T // sel.shape[3]} keys "
                         "overflows its int32 key arithmetic")
    if mix is not None:
        from kernels.sea_sparse_mix import check_mix

        check_mix(q, mix, "shared_attention")
    KC = sel.shape[3]
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    mask = sel.contiguous().view(torch.int8)
    NB = -(-T // rows)
    tab = torch.empty(B * H * NB, 6, KC, dtype=torch.int32, device=q.device)   # per program: its cells' table
    out = torch.empty(B, H, T, D, dtype=q.dtype, device=q.device)
    from kernels.sea_sparse_mix import mix_launch_args

    mix_args = mix_launch_args(mix, out)
    if B * H * NB and D:
        _shared_fwd_kernel[(B * H * NB,)](
            q, k, v, mask, tab, out, *mix_args[:3], float(scale),
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2), *mix_args[3:],
            H, T, D, H // k.shape[1], NB, int(k_sel),
            KC=KC, KCP=pow2_block(KC), R=rows, BN=BLOCK_N, BLOCK_D=pow2_block(D), FP32=q.dtype == torch.float32,
            EMU=q.device.type != "cuda", PIECES=pieces, CAUSAL=bool(causal), MIX=mix is not None,
            EX2=_softmax_ex2(), WIDE=FORCE_WIDE or 2 * KC * (T + 1) >= 2 ** 31,
            num_warps=NUM_WARPS if causal else NUM_WARPS_BIDIR)
    return out


def rebin_scores(a_hat: torch.Tensor, rows: int, shift: torch.Tensor, srange: torch.Tensor) -> torch.Tensor:
    """A_hat [B, H, T, K] (fp32 / bf16 / fp16) -> float32 [B, H, NB, K]: each block of `rows` query rows pooled into
    the block cells c' = c - shift[t, c] (int16 [T, K]; srange int32 [NB, 2] each block's smallest and largest
    shift: methods/sea/shared.py's rebin_tables). The tensor-op form is a scatter_add (atomics)."""
    if triton is None:
        raise RuntimeError("rebin_scores needs Triton")
    B, H, T, K = a_hat.shape
    NB = -(-T // rows)
    if shift.shape != (T, K) or shift.dtype != torch.int16 or srange.shape != (NB, 2) or srange.dtype != torch.int32:
        raise ValueError(f"rebin_scores: shift int16 {(T, K)} and srange int32 {(NB, 2)}; got {shift.dtype} "
                         f"{tuple(shift.shape)}, {srange.dtype} {tuple(srange.shape)}")
    if a_hat.stride(-1) != 1:
        a_hat = a_hat.contiguous()
    out = torch.empty(B, H, NB, K, dtype=torch.float32, device=a_hat.device)
    if out.numel():
        _rebin_kernel[(B * H * NB,)](a_hat, shift.contiguous(), srange.contiguous(), out, a_hat.stride(0),
                                     a_hat.stride(1), a_hat.stride(2), H, T, NB, K=K, KP=pow2_block(K), R=rows,
                                     num_warps=4)
    return out
