"""Sparse attention over per-query key lists in CSR form (SEA's sparse path): Triton forward + backward.

Mask format (CSR over the flattened query rows r = (b * H + h) * T + t):
    row_ptr int64 [B*H*T + 1]   row r's keys are col[row_ptr[r] : row_ptr[r+1]]
    col     int32 [nnz]         key positions in 0..T-1, no duplicates inside a row
Why CSR: SEA's grouped top-k gives uneven rows (a budget shared across heads or rows), so a fixed-width
padded layout would cost B H T x (widest row); CSR costs nnz + rows. One program handles one query
row and loops over ceil(count / BLOCK_N) blocks of its own slice: a single indirection, and the same
layout serves the backward (dq per row; dk, dv by atomic adds into float32 buffers).

out[r] = sum_j softmax_j(q_r . k_j * scale) v_j over the selected j only (renormalised over them);
a row with no key gives 0. k, v may carry fewer heads (GQA: head h reads kv head h // (H / Hkv)).
Arithmetic in float32; output in q's dtype.

Also here: `sparse_attention_torch`, the plain-PyTorch gather/segment implementation (CPU without
TRITON_INTERPRET), and `sea_sparse_attention`, which picks one and says which ran.
"""
from __future__ import annotations

import math
import os

import torch

from kernels._buffers import fresh, pow2_block

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: only the torch path is available
    triton = None
    tl = None

# Tests set this to True: fresh outputs (out, lse, dq) are then filled with NaN so a skipped write fails.
POISON_OUTPUTS = False


def _fresh(shape, dtype, device):
    return fresh(shape, dtype, device, poison=POISON_OUTPUTS)


if triton is not None:

    @triton.jit
    def _row_program(H, GROUP, D, BLOCK_D: tl.constexpr):
        """Program (query row t, batch x head bh) of the row kernels' grid: (t, bh, b, h, kv head, offs_d, dmask),
        int64 indices (nnz and B H T D can pass 2^31)."""
        t = tl.program_id(0).to(tl.int64)
        bh = tl.program_id(1).to(tl.int64)
        b = bh // H
        h = bh % H
        offs_d = tl.arange(0, BLOCK_D)
        return t, bh, b, h, h // GROUP, offs_d, offs_d < D

    @triton.jit
    def _row_attend(q, kbase, vbase, COL, beg, end, skt, scale, offs_d, dmask,
                    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        """Online softmax of one query row q [BLOCK_D] (fp32) over its CSR keys COL[beg:end] (rows of kbase /
        vbase, stride skt): returns (running max, normaliser, unnormalised sum of p v [BLOCK_D]), all fp32. Shared
        by the row kernel and the fused attend-and-mix kernel (kernels/sea_sparse_mix.py)."""
        m_i = tl.full([], -1.0e30, tl.float32)
        l_i = tl.full([], 0.0, tl.float32)
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for start in range(beg, end, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            nmask = offs_n < end
            kid = tl.load(COL + offs_n, mask=nmask, other=0).to(tl.int64)
            m2 = nmask[:, None] & dmask[None, :]
            kt = tl.load(kbase + kid[:, None] * skt + offs_d[None, :], mask=m2, other=0.0).to(tl.float32)
            s = tl.sum(kt * q[None, :], axis=1) * scale
            s = tl.where(nmask, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=0))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new)
            vt = tl.load(vbase + kid[:, None] * skt + offs_d[None, :], mask=m2, other=0.0).to(tl.float32)
            l_i = l_i * alpha + tl.sum(p, axis=0)
            acc = acc * alpha + tl.sum(p[:, None] * vt, axis=0)
            m_i = m_new
        return m_i, l_i, acc

    @triton.jit
    def _fwd_kernel(Q, K, V, ROWPTR, COL, O, LSE, scale,
                    sqb, sqh, sqt, skb, skh, skt, sob, soh, sot,
                    H, T, D, GROUP,
                    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        t, bh, b, h, hk, offs_d, dmask = _row_program(H, GROUP, D, BLOCK_D)
        q = tl.load(Q + b * sqb + h * sqh + t * sqt + offs_d, mask=dmask, other=0.0).to(tl.float32)
        row = bh * T + t
        beg = tl.load(ROWPTR + row)
        end = tl.load(ROWPTR + row + 1)
        m_i, l_i, acc = _row_attend(q, K + b * skb + hk * skh, V + b * skb + hk * skh, COL, beg, end, skt, scale,
                                    offs_d, dmask, BLOCK_N, BLOCK_D)
        safe_l = tl.where(l_i > 0, l_i, 1.0)
        out = acc / safe_l
        tl.store(O + b * sob + h * soh + t * sot + offs_d, out.to(O.dtype.element_ty), mask=dmask)
        lse = tl.where(l_i > 0, m_i + tl.log(safe_l), float("inf"))
        tl.store(LSE + row, lse)

    @triton.jit
    def _bwd_kernel(Q, K, V, DO, ROWPTR, COL, LSE, DELTA, DQ, DK, DV, O, scale,
                    sqb, sqh, sqt, skb, skh, skt,
                    H, T, D, GROUP, BH,
                    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HEADS_FAST: tl.constexpr,
                    WANT_KV: tl.constexpr):
        # q, do, dq share the layout of q (contiguous [B, H, T, D]); k, v, dk, dv that of k.
        # HEADS_FAST: a 1-D grid of T * BH programs, (b, h) fastest (see ROW_BWD_HEADS_FAST)
        # WANT_KV: False computes dq only (no dk / dv atomic adds; DK, DV are not touched)
        # delta = rowsum(o dout) from O (q's layout) and DO, also written to DELTA for passes after this one
        if HEADS_FAST:
            pid = tl.program_id(0).to(tl.int64)
            t = pid // BH
            bh = pid % BH
            b = bh // H
            h = bh % H
            hk = h // GROUP
            offs_d = tl.arange(0, BLOCK_D)
            dmask = offs_d < D
        else:
            t, bh, b, h, hk, offs_d, dmask = _row_program(H, GROUP, D, BLOCK_D)
        qoff = b * sqb + h * sqh + t * sqt
        q = tl.load(Q + qoff + offs_d, mask=dmask, other=0.0).to(tl.float32)
        do = tl.load(DO + qoff + offs_d, mask=dmask, other=0.0).to(tl.float32)
        row = bh * T + t
        beg = tl.load(ROWPTR + row)
        end = tl.load(ROWPTR + row + 1)
        lse = tl.load(LSE + row)
        o = tl.load(O + qoff + offs_d, mask=dmask, other=0.0).to(tl.float32)
        delta = tl.sum(o * do, axis=0)
        tl.store(DELTA + row, delta)
        dq = tl.zeros([BLOCK_D], dtype=tl.float32)
        kvoff = b * skb + hk * skh
        for start in range(beg, end, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            nmask = offs_n < end
            kid = tl.load(COL + offs_n, mask=nmask, other=0).to(tl.int64)
            m2 = nmask[:, None] & dmask[None, :]
            ptr = kvoff + kid[:, None] * skt + offs_d[None, :]
            kt = tl.load(K + ptr, mask=m2, other=0.0).to(tl.float32)
            vt = tl.load(V + ptr, mask=m2, other=0.0).to(tl.float32)
            s = tl.sum(kt * q[None, :], axis=1) * scale
            p = tl.where(nmask, tl.exp(s - lse), 0.0)
            dp = tl.sum(vt * do[None, :], axis=1)
            ds = p * (dp - delta)
            dq += tl.sum(ds[:, None] * kt, axis=0) * scale
            if WANT_KV:
                tl.atomic_add(DK + ptr, ds[:, None] * q[None, :] * scale, mask=m2)
                tl.atomic_add(DV + ptr, p[:, None] * do[None, :], mask=m2)
        tl.store(DQ + qoff + offs_d, dq, mask=dmask)


    @triton.jit
    def _tiled_fwd_kernel(Q, K, V, MASK, TILES, NTILES, O, LSE, scale,
                          sqb, sqh, sqt, skb, skh, skt, sob, soh, sot,
                          H, T, GROUP, NQB, NKB, KC, KSEL,
                          CAUSAL: tl.constexpr, IEEE: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, D: tl.constexpr):
        # One program: BLOCK_M query rows of one (b, h). It visits the block's active key tiles and uses
        # tl.dot on each; key j counts for row t only if SEA's interpolation picks it: j lies in cell c of
        # row t (cells of L_t = t + 1 or T keys), c is selected in MASK[b, h, t, :], and j is one of the
        # min(width, KSEL) uniformly spaced keys lo + floor(i width / n) of that cell.
        qb = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        b = bh // H
        h = bh % H
        hk = h // GROUP
        offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
        mmask = offs_m < T
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None].to(tl.int64) * sqt + offs_d[None, :],
                    mask=mmask[:, None] & dmask[None, :], other=0.0)
        if CAUSAL:
            Lr = (offs_m + 1)[:, None]                                   # [BLOCK_M, 1] keys of row t
        else:
            Lr = T                                                       # every row spans T keys
        mrow = MASK + (bh * T + offs_m[:, None].to(tl.int64)) * KC       # [BLOCK_M, 1] row of the mask
        m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        kbase = K + b * skb + hk * skh
        vbase = V + b * skb + hk * skh
        blk = bh * NQB + qb
        nt = tl.load(NTILES + blk)
        for i in range(0, nt):
            kb = tl.load(TILES + blk * NKB + i)
            offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
            nmask = offs_n < T
            j = offs_n[None, :]                                          # [1, BLOCK_N]
            # cell of key j in row t: the largest c with round(c L / K) <= j
            c = (KC * (2 * j + 1) - 1) // (2 * Lr)
            c = tl.minimum(c, KC - 1)
            lo = (2 * c * Lr + KC) // (2 * KC)
            hi = (2 * (c + 1) * Lr + KC) // (2 * KC)
            w = tl.maximum(hi - lo, 1)
            n = tl.minimum(w, KSEL)
            o = j - lo
            ii = (o * n + w - 1) // w                                    # first sample at or after o
            picked = (ii < n) & ((ii * w) // n == o) & (j < Lr) & nmask[None, :]
            cell_on = tl.load(mrow + c, mask=picked & mmask[:, None], other=0)
            member = picked & (cell_on != 0) & mmask[:, None]            # [BLOCK_M, BLOCK_N]
            kv_ptr = offs_n[:, None].to(tl.int64) * skt + offs_d[None, :]
            kvm = nmask[:, None] & dmask[None, :]
            kt = tl.load(kbase + kv_ptr, mask=kvm, other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(kt), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(kt))
            s = tl.where(member, s * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            vt = tl.load(vbase + kv_ptr, mask=kvm, other=0.0)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if IEEE:
                pv = tl.dot(p, vt.to(tl.float32), input_precision="ieee")
            else:
                pv = tl.dot(p.to(vt.dtype), vt)
            acc = acc * alpha[:, None] + pv
            m_i = m_new
        safe_l = tl.where(l_i > 0, l_i, 1.0)
        out = acc / safe_l[:, None]
        tl.store(O + b * sob + h * soh + offs_m[:, None].to(tl.int64) * sot + offs_d[None, :],
                 out.to(O.dtype.element_ty), mask=mmask[:, None] & dmask[None, :])
        lse = tl.where(l_i > 0, m_i + tl.log(safe_l), float("inf"))
        tl.store(LSE + bh * T + offs_m, lse, mask=mmask)


BLOCK_N = 32
# Program order of the row kernel's backward: False, the grid (T, B*H) (t fastest: the resident programs are
# consecutive rows of one head); True, (b, h) fastest (resident programs spread over the heads, whose dk / dv rows are
# disjoint: tried against same-address atomics, measured slower on an H200, 6.10 against 5.60 ms at 32k causal,
# results/nvidia-h200/sea-train/call5/). Tests force both.
ROW_BWD_HEADS_FAST = False
# Tiled kernel blocks (query rows per program, keys per tile). Tests under the interpreter shrink them.
TILED_BLOCK_M = 64
TILED_BLOCK_N = 64


_CSR_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def check_csr_block_inputs(q, k, v, row_ptr, col):
    """The checks every forward-only CSR kernel over a query block shares (kernels/sea_sparse_mix.py,
    kernels/sea_sparse_rows.py): q [B, H, Tq, D], k / v [B, Hkv, Tk, D] of one float dtype, H a multiple of Hkv, integer
    row_ptr / col on q's device, then `_check(..., block=True)` (row_ptr length, Tk >= Tq, 1-D, col length).
    Raises ValueError in words."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be [B, H, T, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, _, D = q.shape
    Hkv = k.shape[1]
    if q.dtype not in _CSR_DTYPES:
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
    _check(q, k, v, row_ptr, col, block=True)


def _check(q, k, v, row_ptr, col, *, block: bool = False):
    B, H, T, D = q.shape
    if row_ptr.numel() != B * H * T + 1:
        raise ValueError(f"row_ptr has {row_ptr.numel()} entries; expected B*H*T+1 = {B * H * T + 1}")
    if k.shape[2] != T and not (block and k.shape[2] >= T):
        raise ValueError("the sparse kernel expects as many keys as queries (self-attention)")
    if col.dim() != 1 or row_ptr.dim() != 1:
        raise ValueError(f"row_ptr and col must be 1-D; got {tuple(row_ptr.shape)} and {tuple(col.shape)}")
    # col may be longer than row_ptr[-1] (a capacity layout built without a device sync: the tail is filler
    # no row points at). Checked only for CPU tensors: on CUDA the check itself would be a device sync.
    if col.device.type == "cpu" and col.numel() < int(row_ptr[-1]):
        raise ValueError(f"col has {col.numel()} entries but row_ptr ends at {int(row_ptr[-1])}")


def _triton_forward(q, k, v, row_ptr, col, scale, out=None, lse=None):
    """Launch the forward kernel. `out` / `lse` may be passed pre-filled (tests poison them with NaN)."""
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    o = _fresh(q.shape, q.dtype, q.device) if out is None else out
    lse = _fresh((B, H, T), torch.float32, q.device) if lse is None else lse
    _fwd_kernel[(T, B * H)](
        q, k, v, row_ptr, col, o, lse, scale,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        H, T, D, H // Hkv,
        BLOCK_N=BLOCK_N, BLOCK_D=pow2_block(D))
    return o, lse


def grad_buffers(q, k, do, *, poison: bool, stored: bool = False):
    """What a CSR sparse-attention backward kernel takes besides its inputs: (do contiguous, delta fp32 [B, H, T]
    (fresh: the dq pass computes rowsum(o do) and stores it there), dq fp32 (fresh, NaN when poison), dk / dv fp32
    zeros of k's shape for atomic adds). stored: the kernels store every element of dq, dk, dv once (no atomic
    adds), so all three are fresh in q's / k's dtype (no zero fill, no cast afterwards)."""
    do = do.contiguous()
    delta = fresh(q.shape[:3], torch.float32, q.device, poison=poison)
    if stored:
        return (do, delta, fresh(q.shape, q.dtype, q.device, poison=poison),
                fresh(k.shape, k.dtype, q.device, poison=poison), fresh(k.shape, k.dtype, q.device, poison=poison))
    dq = fresh(q.shape, torch.float32, q.device, poison=poison)
    dk = torch.zeros(k.shape, dtype=torch.float32, device=q.device)
    return do, delta, dq, dk, torch.zeros_like(dk)


class _SparseAttnFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, row_ptr, col, scale):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o, lse = _triton_forward(q, k, v, row_ptr, col, scale)
        ctx.save_for_backward(q, k, v, o, lse, row_ptr, col)
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, row_ptr, col = ctx.saved_tensors
        B, H, T, D = q.shape
        Hkv = k.shape[1]
        do, delta, dq, dk, dv = grad_buffers(q, k, do, poison=POISON_OUTPUTS)
        row_backward(q, k, v, o, do, row_ptr, col, lse, delta, dq, dk, dv, ctx.scale)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None


def row_backward(q, k, v, o, do, row_ptr, col, lse, delta, dq, dk, dv, scale: float, *,
                 want_kv: bool = True) -> None:
    """Launch the row kernel's backward (`_bwd_kernel`): dq written, dk / dv (fp32 zeros) added to atomically
    (want_kv=False: dq only); delta = rowsum(o do) from the forward's output o (q's layout) computed per row and
    written to `delta` (for passes after this one). Grid: (T, B*H) with t fastest, or with ROW_BWD_HEADS_FAST one of
    T * B*H programs with (b, h) fastest."""
    B, H, T, D = q.shape
    BH = B * H
    grid = (T * BH,) if ROW_BWD_HEADS_FAST else (T, BH)
    if o.shape != q.shape or o.stride() != q.stride() or do.stride() != q.stride():
        raise ValueError("row_backward: o and do must share q's shape and layout")
    if T and BH:
        _bwd_kernel[grid](
            q, k, v, do, row_ptr, col, lse, delta, dq, dk, dv, o, float(scale),
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            H, T, D, H // k.shape[1], BH,
            BLOCK_N=BLOCK_N, BLOCK_D=pow2_block(D), HEADS_FAST=bool(ROW_BWD_HEADS_FAST), WANT_KV=bool(want_kv))


def sparse_attention_triton(q, k, v, row_ptr, col, scale: float):
    """Triton path (CUDA, or CPU tensors under TRITON_INTERPRET=1)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    _check(q, k, v, row_ptr, col)
    return _SparseAttnFn.apply(q, k, v, row_ptr.to(torch.int64).contiguous(), col.to(torch.int32).contiguous(),
                               float(scale))


def sparse_attention_torch(q, k, v, row_ptr, col, scale: float, *, block: bool = False):
    """Plain-PyTorch path: gather the selected (query, key) pairs, segment softmax per row, scatter-add.
    Memory O(nnz D); autograd through torch ops; float32 arithmetic. block: see sparse_attention_block."""
    _check(q, k, v, row_ptr, col, block=block)
    B, H, T, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    col = col[:int(row_ptr[-1])]                                        # drop a capacity layout's filler
    counts = row_ptr[1:] - row_ptr[:-1]                                 # [B*H*T]
    row = torch.repeat_interleave(torch.arange(B * H * T, device=q.device), counts)   # query row per entry
    bh = row // T
    kv_row = ((bh // H) * Hkv + (bh % H) // (H // Hkv)) * Tk + col.long()   # flat row in [B*Hkv*Tk]
    qf = q.reshape(B * H * T, D).float()
    kf = k.reshape(B * Hkv * Tk, D).float()
    vf = v.reshape(B * Hkv * Tk, D).float()
    s = (qf[row] * kf[kv_row]).sum(-1) * scale                           # [nnz]
    mx = torch.full((B * H * T,), float("-inf"), device=q.device).scatter_reduce(
        0, row, s.detach(), reduce="amax", include_self=True)
    e = torch.exp(s - mx[row])
    den = torch.zeros(B * H * T, device=q.device).index_add(0, row, e)
    p = e / den[row]
    out = torch.zeros(B * H * T, D, device=q.device).index_add(0, row, p[:, None] * vf[kv_row])
    return out.view(B, H, T, D).to(q.dtype)


def sparse_attention_block(q, k, v, row_ptr, col, scale: float, backend: str = "auto"):
    """Forward only, no autograd: a block of query rows q [B, H, Tq, D] (any consecutive positions of a longer
    sequence) against all keys k, v [B, Hkv, Tk, D], Tk >= Tq; the CSR lists (row_ptr over the block's B*H*Tq rows,
    col = key positions in 0 .. Tk - 1) already hold only the keys each row may see. Returns (out [B, H, Tq, D] in
    q's dtype, what ran). The kernels index keys by stride and queries by the block's own rows, so this is the
    row kernel (or the gather path) unchanged."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise RuntimeError("sparse_attention_block is forward-only (query blocks); use sea_sparse_attention for grads")
    if backend == "auto":
        backend = "triton" if triton_usable(q.device) else "torch"
    if backend == "torch":
        return sparse_attention_torch(q, k, v, row_ptr, col, scale, block=True), "torch-gather"
    if backend != "triton":
        raise ValueError(f"unknown sparse attention backend {backend!r}")
    if triton is None:
        raise RuntimeError("triton is not installed")
    _check(q, k, v, row_ptr, col, block=True)
    o, _ = _triton_forward(q.contiguous(), k.contiguous(), v.contiguous(), row_ptr.to(torch.int64).contiguous(),
                           col.to(torch.int32).contiguous(), float(scale))
    return o, "triton"


def triton_usable(device: torch.device) -> bool:
    if triton is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def sea_sparse_attention(q, k, v, row_ptr, col, scale: float | None = None, backend: str = "auto"):
    """Returns (out [B, H, T, D], name of what ran: 'triton' or 'torch-gather')."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if backend == "auto":
        backend = "triton" if triton_usable(q.device) else "torch"
    if backend == "triton":
        return sparse_attention_triton(q, k, v, row_ptr, col, scale), "triton"
    if backend == "torch":
        return sparse_attention_torch(q, k, v, row_ptr, col, scale), "torch-gather"
    raise ValueError(f"unknown sparse attention backend {backend!r}")


def sparse_attention_tiled(q, k, v, mask, tiles, ntiles, scale: float, *, k_sel: int, causal: bool,
                           block_m: int, block_n: int, return_lse: bool = False):
    """Forward-only tiled SEA attention (no padding mask): BLOCK_M query rows per program, tl.dot over the
    active key tiles (methods.sea.interp.active_tiles), each key tested against the row's selection
    arithmetically from the compressed mask bool [B, H, T, Kc] (interp.py geometry: cells of L_t keys,
    min(width, k_sel) uniformly spaced keys per selected cell). Same result as the row kernel on the CSR
    lists mask_to_csr(mask, k=k_sel, causal=causal) up to float summation order."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise RuntimeError("the tiled SEA kernel is forward-only; use the row kernel (backend=triton) for grads")
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    Kc = mask.shape[-1]
    nqb, nkb = -(-T // block_m), -(-T // block_n)
    if mask.shape[:3] != (B, H, T) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool [B, H, T, Kc] = {(B, H, T)} + (Kc,); got {tuple(mask.shape)} {mask.dtype}")
    if k.shape[2] != T:
        raise ValueError("the sparse kernel expects as many keys as queries (self-attention)")
    if tiles.shape != (B * H * nqb, nkb) or ntiles.shape != (B * H * nqb,):
        raise ValueError(f"tiles {tuple(tiles.shape)} / ntiles {tuple(ntiles.shape)} do not match "
                         f"B*H*nQB={B * H * nqb}, nKB={nkb} for block_m={block_m}, block_n={block_n}")
    if 2 * Kc * (T + 1) >= 2 ** 31:
        raise ValueError(f"T={T}, Kc={Kc}: cell arithmetic would overflow int32")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    m8 = mask.contiguous().view(torch.uint8)
    o = _fresh(q.shape, q.dtype, q.device)
    lse = _fresh((B, H, T), torch.float32, q.device)
    _tiled_fwd_kernel[(nqb, B * H)](
        q, k, v, m8, tiles.to(torch.int32).contiguous(), ntiles.to(torch.int32).contiguous(), o, lse, float(scale),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        H, T, H // Hkv, nqb, nkb, Kc, int(k_sel),
        CAUSAL=bool(causal), IEEE=q.dtype == torch.float32,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=pow2_block(D), D=D)
    return (o, lse) if return_lse else o
