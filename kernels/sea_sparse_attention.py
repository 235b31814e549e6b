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

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: only the torch path is available
    triton = None
    tl = None

# Tests set this to True: fresh outputs (out, lse, dq) are then filled with NaN so a skipped write fails.
POISON_OUTPUTS = False


def _fresh(shape, dtype, device):
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


if triton is not None:

    @triton.jit
    def _fwd_kernel(Q, K, V, ROWPTR, COL, O, LSE, scale,
                    sqb, sqh, sqt, skb, skh, skt, sob, soh, sot,
                    H, T, D, GROUP,
                    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        t = tl.program_id(0).to(tl.int64)             # int64 offsets: nnz and B H T D can pass 2^31
        bh = tl.program_id(1).to(tl.int64)
        b = bh // H
        h = bh % H
        hk = h // GROUP
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        q = tl.load(Q + b * sqb + h * sqh + t * sqt + offs_d, mask=dmask, other=0.0).to(tl.float32)
        row = bh * T + t
        beg = tl.load(ROWPTR + row)
        end = tl.load(ROWPTR + row + 1)
        m_i = tl.full([], -1.0e30, tl.float32)
        l_i = tl.full([], 0.0, tl.float32)
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        kbase = K + b * skb + hk * skh
        vbase = V + b * skb + hk * skh
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
        safe_l = tl.where(l_i > 0, l_i, 1.0)
        out = acc / safe_l
        tl.store(O + b * sob + h * soh + t * sot + offs_d, out.to(O.dtype.element_ty), mask=dmask)
        lse = tl.where(l_i > 0, m_i + tl.log(safe_l), float("inf"))
        tl.store(LSE + row, lse)

    @triton.jit
    def _bwd_kernel(Q, K, V, DO, ROWPTR, COL, LSE, DELTA, DQ, DK, DV, scale,
                    sqb, sqh, sqt, skb, skh, skt,
                    H, T, D, GROUP,
                    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        # q, do, dq share the layout of q (contiguous [B, H, T, D]); k, v, dk, dv that of k.
        t = tl.program_id(0).to(tl.int64)
        bh = tl.program_id(1).to(tl.int64)
        b = bh // H
        h = bh % H
        hk = h // GROUP
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        qoff = b * sqb + h * sqh + t * sqt
        q = tl.load(Q + qoff + offs_d, mask=dmask, other=0.0).to(tl.float32)
        do = tl.load(DO + qoff + offs_d, mask=dmask, other=0.0).to(tl.float32)
        row = bh * T + t
        beg = tl.load(ROWPTR + row)
        end = tl.load(ROWPTR + row + 1)
        lse = tl.load(LSE + row)
        delta = tl.load(DELTA + row)
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
            tl.atomic_add(DK + ptr, ds[:, None] * q[None, :] * scale, mask=m2)
            tl.atomic_add(DV + ptr, p[:, None] * do[None, :], mask=m2)
        tl.store(DQ + qoff + offs_d, dq, mask=dmask)


BLOCK_N = 32


def _check(q, k, v, row_ptr, col):
    B, H, T, D = q.shape
    if row_ptr.numel() != B * H * T + 1:
        raise ValueError(f"row_ptr has {row_ptr.numel()} entries; expected B*H*T+1 = {B * H * T + 1}")
    if k.shape[2] != T:
        raise ValueError("the sparse kernel expects as many keys as queries (self-attention)")
    if col.dim() != 1 or row_ptr.dim() != 1:
        raise ValueError(f"row_ptr and col must be 1-D; got {tuple(row_ptr.shape)} and {tuple(col.shape)}")
    if col.numel() != int(row_ptr[-1]):
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
        BLOCK_N=BLOCK_N, BLOCK_D=max(16, _next_pow2(D)))
    return o, lse


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
        do = do.contiguous()
        delta = (o.float() * do.float()).sum(-1).contiguous()           # [B, H, T]
        dq = _fresh(q.shape, torch.float32, q.device)
        dk = torch.zeros(k.shape, dtype=torch.float32, device=q.device)
        dv = torch.zeros(v.shape, dtype=torch.float32, device=q.device)
        _bwd_kernel[(T, B * H)](
            q, k, v, do, row_ptr, col, lse, delta, dq, dk, dv, ctx.scale,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            H, T, D, H // Hkv,
            BLOCK_N=BLOCK_N, BLOCK_D=max(16, _next_pow2(D)))
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None


def sparse_attention_triton(q, k, v, row_ptr, col, scale: float):
    """Triton path (CUDA, or CPU tensors under TRITON_INTERPRET=1)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    _check(q, k, v, row_ptr, col)
    return _SparseAttnFn.apply(q, k, v, row_ptr.to(torch.int64).contiguous(), col.to(torch.int32).contiguous(),
                               float(scale))


def sparse_attention_torch(q, k, v, row_ptr, col, scale: float):
    """Plain-PyTorch path: gather the selected (query, key) pairs, segment softmax per row, scatter-add.
    Memory O(nnz D); autograd through torch ops; float32 arithmetic."""
    _check(q, k, v, row_ptr, col)
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    counts = row_ptr[1:] - row_ptr[:-1]                                 # [B*H*T]
    row = torch.repeat_interleave(torch.arange(B * H * T, device=q.device), counts)   # query row per entry
    bh = row // T
    kv_row = ((bh // H) * Hkv + (bh % H) // (H // Hkv)) * T + col.long()   # flat row in [B*Hkv*T]
    qf = q.reshape(B * H * T, D).float()
    kf = k.reshape(B * Hkv * T, D).float()
    vf = v.reshape(B * Hkv * T, D).float()
    s = (qf[row] * kf[kv_row]).sum(-1) * scale                           # [nnz]
    mx = torch.full((B * H * T,), float("-inf"), device=q.device).scatter_reduce(
        0, row, s.detach(), reduce="amax", include_self=True)
    e = torch.exp(s - mx[row])
    den = torch.zeros(B * H * T, device=q.device).index_add(0, row, e)
    p = e / den[row]
    out = torch.zeros(B * H * T, D, device=q.device).index_add(0, row, p[:, None] * vf[kv_row])
    return out.view(B, H, T, D).to(q.dtype)


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
