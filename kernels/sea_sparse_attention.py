"""Sparse attention over per-query key index lists (SEA's sparse path), Triton forward + backward.

Mask format: fixed-width padded index lists
    idx   int32 [B, H, T, W]  key positions, first `count` entries valid (any order, no duplicates), rest -1
    count int32 [B, H, T]
One program handles one (batch, head, query row) and loops over ceil(count / BLOCK_N) blocks of its own
list, so padding costs memory but no compute, and the same layout serves forward and backward (no
per-row pointer indirection as CSR would need, no transposed index for dk/dv: those use atomics).

out[t] = sum_j softmax_j(q_t . k_j * scale) v_j over the selected j only (renormalised over them);
a row with count 0 gives 0. k, v may carry fewer heads (GQA: head h reads kv head h // (H / Hkv)).
Arithmetic in float32; output in q's dtype.

Also here: `sparse_attention_torch`, the plain-PyTorch gather implementation (CPU without
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
    def _fwd_kernel(Q, K, V, IDX, CNT, O, LSE, scale,
                    sqb, sqh, sqt, skb, skh, skt, sob, soh, sot,
                    H, T, W, D, GROUP,
                    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        t = tl.program_id(0).to(tl.int64)             # int64 offsets: B H T W can pass 2^31
        bh = tl.program_id(1).to(tl.int64)
        b = bh // H
        h = bh % H
        hk = h // GROUP
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        q = tl.load(Q + b * sqb + h * sqh + t * sqt + offs_d, mask=dmask, other=0.0).to(tl.float32)
        row = (b * H + h) * T + t
        cnt = tl.load(CNT + row)
        m_i = tl.full([], -1.0e30, tl.float32)
        l_i = tl.full([], 0.0, tl.float32)
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        kbase = K + b * skb + hk * skh
        vbase = V + b * skb + hk * skh
        for start in range(0, cnt, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            nmask = offs_n < cnt
            kid = tl.load(IDX + row * W + offs_n, mask=nmask, other=0).to(tl.int64)
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
    def _bwd_kernel(Q, K, V, DO, IDX, CNT, LSE, DELTA, DQ, DK, DV, scale,
                    sqb, sqh, sqt, skb, skh, skt,
                    H, T, W, D, GROUP,
                    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        # q, do, dq share the layout of q (contiguous [B, H, T, D]); k, v, dk, dv that of k.
        t = tl.program_id(0).to(tl.int64)             # int64 offsets: B H T W can pass 2^31
        bh = tl.program_id(1).to(tl.int64)
        b = bh // H
        h = bh % H
        hk = h // GROUP
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        qoff = b * sqb + h * sqh + t * sqt
        q = tl.load(Q + qoff + offs_d, mask=dmask, other=0.0).to(tl.float32)
        do = tl.load(DO + qoff + offs_d, mask=dmask, other=0.0).to(tl.float32)
        row = (b * H + h) * T + t
        cnt = tl.load(CNT + row)
        lse = tl.load(LSE + row)
        delta = tl.load(DELTA + row)
        dq = tl.zeros([BLOCK_D], dtype=tl.float32)
        kvoff = b * skb + hk * skh
        for start in range(0, cnt, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            nmask = offs_n < cnt
            kid = tl.load(IDX + row * W + offs_n, mask=nmask, other=0).to(tl.int64)
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


def _block_n(W: int) -> int:
    return max(16, min(64, _next_pow2(W)))


def _triton_forward(q, k, v, idx, count, scale, out=None, lse=None):
    """Launch the forward kernel. `out` / `lse` may be passed pre-filled (tests poison them with NaN)."""
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    W = idx.shape[-1]
    o = _fresh(q.shape, q.dtype, q.device) if out is None else out
    lse = _fresh((B, H, T), torch.float32, q.device) if lse is None else lse
    _fwd_kernel[(T, B * H)](
        q, k, v, idx, count, o, lse, scale,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        H, T, W, D, H // Hkv,
        BLOCK_N=_block_n(W), BLOCK_D=max(16, _next_pow2(D)))
    return o, lse


class _SparseAttnFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, idx, count, scale):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o, lse = _triton_forward(q, k, v, idx, count, scale)
        ctx.save_for_backward(q, k, v, o, lse, idx, count)
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, idx, count = ctx.saved_tensors
        B, H, T, D = q.shape
        Hkv = k.shape[1]
        W = idx.shape[-1]
        do = do.contiguous()
        delta = (o.float() * do.float()).sum(-1).contiguous()           # [B, H, T]
        dq = _fresh(q.shape, torch.float32, q.device)
        dk = torch.zeros(k.shape, dtype=torch.float32, device=q.device)
        dv = torch.zeros(v.shape, dtype=torch.float32, device=q.device)
        _bwd_kernel[(T, B * H)](
            q, k, v, do, idx, count, lse, delta, dq, dk, dv, ctx.scale,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            H, T, W, D, H // Hkv,
            BLOCK_N=_block_n(W), BLOCK_D=max(16, _next_pow2(D)))
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None


def sparse_attention_triton(q, k, v, idx, count, scale: float):
    """Triton path (CUDA, or CPU tensors under TRITON_INTERPRET=1)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    return _SparseAttnFn.apply(q, k, v, idx.to(torch.int32).contiguous(), count.to(torch.int32).contiguous(),
                               float(scale))


def sparse_attention_torch(q, k, v, idx, count, scale: float, row_chunk: int = 256):
    """Plain-PyTorch gather implementation (autograd through torch ops), float32 arithmetic."""
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    W = idx.shape[-1]
    kr = k.repeat_interleave(H // Hkv, dim=1).float()                   # [B, H, T, D]
    vr = v.repeat_interleave(H // Hkv, dim=1).float()
    outs = []
    for s in range(0, T, row_chunk):
        e = min(T, s + row_chunk)
        c = e - s
        ic = idx[:, :, s:e].long()                                      # [B, H, c, W]
        live = torch.arange(W, device=q.device) < count[:, :, s:e, None]   # [B, H, c, W]
        g = ic.clamp(min=0).reshape(B, H, c * W, 1).expand(B, H, c * W, D)
        ks = kr.gather(2, g).view(B, H, c, W, D)                        # [B, H, c, W, D]
        vs = vr.gather(2, g).view(B, H, c, W, D)
        sc = torch.einsum("bhcd,bhcwd->bhcw", q[:, :, s:e].float(), ks) * scale
        empty = ~live.any(-1, keepdim=True)                             # [B, H, c, 1]
        sc = sc.masked_fill(~live, float("-inf")).masked_fill(empty, 0.0)
        p = torch.softmax(sc, dim=-1).masked_fill(empty, 0.0)          # empty rows -> 0, finite grads
        outs.append(torch.einsum("bhcw,bhcwd->bhcd", p, vs))
    return torch.cat(outs, dim=2).to(q.dtype)                           # [B, H, T, D]


def triton_usable(device: torch.device) -> bool:
    if triton is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def sea_sparse_attention(q, k, v, idx, count, scale: float | None = None, backend: str = "auto"):
    """Returns (out [B, H, T, D], name of what ran: 'triton' or 'torch-gather')."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if backend == "auto":
        backend = "triton" if triton_usable(q.device) else "torch"
    if backend == "triton":
        return sparse_attention_triton(q, k, v, idx, count, scale), "triton"
    if backend == "torch":
        return sparse_attention_torch(q, k, v, idx, count, scale), "torch-gather"
    raise ValueError(f"unknown sparse attention backend {backend!r}")
