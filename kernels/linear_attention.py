"""Chunked causal linear attention: a Triton kernel (forward and backward), a PyTorch chunked fallback and
a plain prefix-sum reference.

    out[t] = sum_{s <= t} (fq[t] . fk[s]) v[s]          fq, fk: [B, H, T, M]   v: [B, H, T, E]
    den[t] = sum_{s <= t}  fq[t] . fk[s]                 (the linear-attention normaliser, [B, H, T])

Algorithm (both backends): walk T in chunks of C rows, carrying the running state S = sum_s fk[s]^T v[s]
([M, E], fp32) and z = sum_s fk[s] ([M]) from chunk to chunk. Inside a chunk the intra-chunk part is a
masked C x C matmul: out_c = tril(fq_c fk_c^T) v_c + fq_c S. Memory is O(T (M + E)); no (T, M, E) prefix
sum is ever built.

Normaliser: computed *in the same pass* (fused), not via a ones column appended to v: den_c =
rowsum(tril(fq_c fk_c^T)) + fq_c . z. This costs a row sum per chunk instead of widening E to E + 1
(which would waste a whole power-of-two block for E = 64 or 128). Its gradient is two cumulative sums
done in PyTorch in backward (O(T M) memory).

Backward is three more passes of the same kernel:
    dfq = causal(q=dout, k=v,    v=fk)      (+ dden * cumsum(fk))
    dfk = anti-causal(q=v, k=dout, v=fq)    (+ reverse-cumsum(dden * fq))
    dv  = anti-causal(q=fk, k=fq,  v=dout)
where "anti-causal" is the same kernel walking the chunks from last to first with an upper-triangular
intra-chunk mask (s >= t).

Dtypes: fq/fk/v may be fp32, fp16 or bf16 (each tile is upcast to fp32 on load; the matmuls run in
fp32 - IEEE by default, TF32 on request); accumulation is fp32 and *outputs (out, den) are always fp32*.
Gradients come back in each input's dtype. fp64 runs on the PyTorch backend only (in fp64).

Grouped heads: fk and v may have fewer heads than fq (H % Hkv == 0); the kernel indexes the shared head
directly (no repeat), and the key/value gradients are summed over each group.

Large feature dims: the feature axis M is split into blocks of <= 64 across programs; each block writes a
partial output (the computation is linear in M) and the partials are summed afterwards (deterministic,
no atomics).

Backends: "triton" (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1), "torch" (the same chunked
algorithm in PyTorch, used on CPU when TRITON_INTERPRET is not set), "auto" picks between them;
`pick_backend()` tells which would run, so callers can record it.

This module imports triton lazily (inside the kernel builder), so importing it is cheap.
"""
from __future__ import annotations

import functools
import os

import torch

__all__ = ["causal_linear_attention", "causal_linear_attention_ref", "pick_backend"]


# --------------------------------------------------------------------------------------------------
# backend choice


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def pick_backend(x: torch.Tensor, backend: str = "auto") -> str:
    """Which backend `causal_linear_attention` runs for tensors like `x`: "triton" or "torch"."""
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend={backend!r}: expected auto, triton or torch")
    if backend != "auto":
        return backend
    if x.dtype == torch.float64:
        return "torch"
    if x.is_cuda or _interpret():
        try:
            import triton  # noqa: F401
        except ImportError:
            return "torch"
        return "triton"
    return "torch"


# --------------------------------------------------------------------------------------------------
# Triton kernel


@functools.lru_cache(maxsize=None)
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def _chunked_linear_attention_kernel(
        Q, K, V, O, DEN,
        sqb, sqh, sqt, sqm,
        skb, skh, skt, skm,
        svb, svh, svt, sve,
        sop, sob, soh, sot, soe,
        sdp, sdb, sdh, sdt,
        H, T, M, E, GQ, GK, GV,
        CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr,
        REVERSE: tl.constexpr, HAS_DEN: tl.constexpr, PRECISION: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)
        pid_e = tl.program_id(1)
        pid_m = tl.program_id(2)
        b = (pid_bh // H).to(tl.int64)          # 64-bit offsets: B*H*T*M can pass 2^31
        h = (pid_bh % H).to(tl.int64)
        q_base = Q + b * sqb + (h // GQ) * sqh
        k_base = K + b * skb + (h // GK) * skh
        v_base = V + b * svb + (h // GV) * svh
        o_base = O + pid_m.to(tl.int64) * sop + b * sob + h * soh
        d_base = DEN + pid_m.to(tl.int64) * sdp + b * sdb + h * sdh

        offs_c = tl.arange(0, CHUNK)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        m_ok = offs_m < M
        e_ok = offs_e < E
        if REVERSE:
            keep = offs_c[None, :] >= offs_c[:, None]       # [C, C]: key s at or after query t
        else:
            keep = offs_c[None, :] <= offs_c[:, None]       # [C, C]: key s at or before query t

        state = tl.zeros([BLOCK_M, BLOCK_E], dtype=tl.float32)   # sum fk^T v over finished chunks
        zsum = tl.zeros([BLOCK_M], dtype=tl.float32)            # sum fk over finished chunks
        n_chunks = tl.cdiv(T, CHUNK)
        for i in range(0, n_chunks):
            if REVERSE:
                c = n_chunks - 1 - i
            else:
                c = i
            t = c * CHUNK + offs_c
            t_ok = t < T
            q = tl.load(q_base + t[:, None] * sqt + offs_m[None, :] * sqm,
                        mask=t_ok[:, None] & m_ok[None, :], other=0.0).to(tl.float32)   # [C, BM]
            k = tl.load(k_base + t[:, None] * skt + offs_m[None, :] * skm,
                        mask=t_ok[:, None] & m_ok[None, :], other=0.0).to(tl.float32)   # [C, BM]
            v = tl.load(v_base + t[:, None] * svt + offs_e[None, :] * sve,
                        mask=t_ok[:, None] & e_ok[None, :], other=0.0).to(tl.float32)   # [C, BE]
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION)                         # [C, C]
            s = tl.where(keep, s, 0.0)
            o = tl.dot(s, v, input_precision=PRECISION)
            o += tl.dot(q, state, input_precision=PRECISION)                              # [C, BE]
            tl.store(o_base + t[:, None] * sot + offs_e[None, :] * soe, o,
                     mask=t_ok[:, None] & e_ok[None, :])
            if HAS_DEN:
                if pid_e == 0:
                    den = tl.sum(s, axis=1) + tl.sum(q * zsum[None, :], axis=1)             # [C]
                    tl.store(d_base + t * sdt, den, mask=t_ok)
                zsum += tl.sum(k, axis=0)
            state += tl.dot(tl.trans(k), v, input_precision=PRECISION)                    # [BM, BE]

    return _chunked_linear_attention_kernel


def _pow2_block(n: int, cap: int) -> int:
    b = 16
    while b < n and b < cap:
        b *= 2
    return b


def _triton_pass(q, k, v, *, reverse: bool, with_den: bool, chunk: int, tf32: bool,
                 block_m: int = 64, block_e: int = 64, num_warps: int = 4):
    """One kernel pass. q: [B, Hq, T, M], k: [B, Hk, T, M], v: [B, Hv, T, E] (heads divide the max).

    Returns out fp32 [B, H, T, E] and den fp32 [B, H, T] (or None), H = max(Hq, Hk, Hv)."""
    if chunk < 16 or chunk & (chunk - 1):
        raise ValueError(f"chunk={chunk}: the Triton kernel needs a power of two >= 16")
    for x in (q, k, v):
        if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"Triton linear attention takes fp32/fp16/bf16, got {x.dtype} (use backend='torch')")
    B, Hq, T, M = q.shape
    Hk, Hv, E = k.shape[1], v.shape[1], v.shape[3]
    H = max(Hq, Hk, Hv)
    BM = _pow2_block(M, block_m)
    BE = _pow2_block(E, block_e)
    n_mb = triton_cdiv(M, BM)
    n_eb = triton_cdiv(E, BE)
    # partial outputs per feature block; every (t < T, e < E) is written by each program -> empty is fine
    out = _new_buffer((n_mb, B, H, T, E), q.device)
    den = _new_buffer((n_mb, B, H, T), q.device) if with_den else out
    dstr = den.stride() if with_den else (0, 0, 0, 0)
    grid = (B * H, n_eb, n_mb)
    _kernel()[grid](
        q, k, v, out, den,
        *q.stride(), *k.stride(), *v.stride(),
        *out.stride(), *dstr,
        H, T, M, E, H // Hq, H // Hk, H // Hv,
        CHUNK=chunk, BLOCK_M=BM, BLOCK_E=BE, REVERSE=reverse, HAS_DEN=with_den,
        PRECISION="tf32" if tf32 else "ieee", num_warps=num_warps,
    )
    out = out[0] if n_mb == 1 else out.sum(0)
    if not with_den:
        return out, None
    return out, (den[0] if n_mb == 1 else den.sum(0))


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _new_buffer(shape, device) -> torch.Tensor:
    """Kernel output buffer (uninitialised; tests patch this to poison it with NaN)."""
    return torch.empty(shape, device=device, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------
# PyTorch chunked fallback (same algorithm, same signature as _triton_pass)


def _torch_pass(q, k, v, *, reverse: bool, with_den: bool, chunk: int, tf32: bool = False):
    H = max(q.shape[1], k.shape[1], v.shape[1])
    work = torch.float64 if torch.float64 in (q.dtype, k.dtype, v.dtype) else torch.float32
    q, k, v = (x.repeat_interleave(H // x.shape[1], dim=1).to(work) for x in (q, k, v))   # [B, H, T, *]
    B, _, T, M = q.shape
    E = v.shape[3]
    out = torch.empty((B, H, T, E), dtype=work, device=q.device)
    den = torch.empty((B, H, T), dtype=work, device=q.device) if with_den else None
    state = torch.zeros((B, H, M, E), dtype=work, device=q.device)
    zsum = torch.zeros((B, H, M), dtype=work, device=q.device)
    tri = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device)
    tri = tri.triu() if reverse else tri.tril()              # [C, C] visible (query row, key col)
    starts = list(range(0, T, chunk))
    for s0 in (reversed(starts) if reverse else starts):
        sl = slice(s0, min(s0 + chunk, T))
        L = sl.stop - sl.start
        qc, kc, vc = q[:, :, sl], k[:, :, sl], v[:, :, sl]  # [B, H, L, *]
        sc = torch.matmul(qc, kc.transpose(-1, -2)).masked_fill(~tri[:L, :L], 0.0)   # [B, H, L, L]
        out[:, :, sl] = torch.matmul(sc, vc) + torch.matmul(qc, state)
        if with_den:
            den[:, :, sl] = sc.sum(-1) + torch.matmul(qc, zsum[..., None])[..., 0]
            zsum = zsum + kc.sum(2)
        state = state + torch.matmul(kc.transpose(-1, -2), vc)
    return out, den


def _pass(backend, *args, **kw):
    return (_triton_pass if backend == "triton" else _torch_pass)(*args, **kw)


def _group_sum(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, H, T, *] -> [B, heads, T, *] summing each group of H // heads consecutive heads."""
    B, H = x.shape[:2]
    if H == heads:
        return x
    return x.view(B, heads, H // heads, *x.shape[2:]).sum(2)


def _rev_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.flip(dim).cumsum(dim).flip(dim)


class _CausalLinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fq, fk, v, backend, kw):
        out, den = _pass(backend, fq, fk, v, reverse=False, with_den=True, **kw)
        ctx.save_for_backward(fq, fk, v)
        ctx.cfg = (backend, kw)
        ctx.set_materialize_grads(False)
        return out, den

    @staticmethod
    def backward(ctx, dout, dden):
        fq, fk, v = ctx.saved_tensors
        backend, kw = ctx.cfg
        kw = dict(kw, with_den=False)
        H, Hkv = fq.shape[1], fk.shape[1]
        work = torch.float64 if fq.dtype == torch.float64 else torch.float32
        dfq = dfk = dv = None
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        if dout is not None:
            dout = dout.contiguous()
            if need_q:
                dfq = _pass(backend, dout, v, fk, reverse=False, **kw)[0]            # [B, H, T, M]
            if need_k:
                dfk = _pass(backend, v, dout, fq, reverse=True, **kw)[0]             # [B, H, T, M]
            if need_v:
                dv = _group_sum(_pass(backend, fk, fq, dout, reverse=True, **kw)[0], Hkv)   # [B, Hkv, T, E]
        if dden is not None:
            dden = dden.to(work)[..., None]                                           # [B, H, T, 1]
            if need_q:
                ck = fk.to(work).cumsum(2).repeat_interleave(H // Hkv, dim=1)         # [B, H, T, M]
                dfq = dden * ck if dfq is None else dfq + dden * ck
            if need_k:
                rq = _rev_cumsum(dden * fq.to(work), 2)                               # [B, H, T, M]
                dfk = rq if dfk is None else dfk + rq
        if dfk is not None:
            dfk = _group_sum(dfk, Hkv)                                                # [B, Hkv, T, M]
        cast = lambda g, like: None if g is None else g.to(like.dtype)               # noqa: E731
        return cast(dfq, fq), cast(dfk, fk), cast(dv, v), None, None


def causal_linear_attention(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, *, chunk: int = 64,
                            backend: str = "auto", tf32: bool = False, block_m: int = 64, block_e: int = 64,
                            num_warps: int = 4):
    """Causal linear attention with its normaliser, differentiable.

    fq: [B, H, T, M]; fk: [B, Hkv, T, M]; v: [B, Hkv, T, E] (H % Hkv == 0).
    Returns (num, den): num[t] = sum_{s<=t} (fq[t].fk[s]) v[s]  -> fp32 [B, H, T, E] (fp64 for fp64 inputs)
                        den[t] = sum_{s<=t}  fq[t].fk[s]        -> fp32 [B, H, T]
    The caller divides (and decides what to do with den == 0). `pick_backend(fq, backend)` names the path.
    chunk: rows per chunk (Triton: power of two >= 16). tf32: TF32 matmuls in the Triton kernel (fp32 IEEE
    otherwise). block_m / block_e / num_warps: Triton tiling (caps on the feature / value blocks).
    """
    if fq.dim() != 4 or fk.dim() != 4 or v.dim() != 4:
        raise ValueError(f"expected 4-d fq, fk, v; got {tuple(fq.shape)}, {tuple(fk.shape)}, {tuple(v.shape)}")
    B, H, T, M = fq.shape
    if fk.shape != (B, fk.shape[1], T, M) or v.shape[:3] != fk.shape[:3] or H % fk.shape[1]:
        raise ValueError(f"incompatible fq {tuple(fq.shape)}, fk {tuple(fk.shape)}, v {tuple(v.shape)}")
    which = pick_backend(fq, backend)
    if which == "torch" and chunk < 1:
        raise ValueError(f"chunk={chunk} must be positive")
    kw = dict(chunk=chunk, tf32=tf32)
    if which == "triton":
        kw.update(block_m=block_m, block_e=block_e, num_warps=num_warps)
    return _CausalLinearAttention.apply(fq, fk, v, which, kw)


def causal_linear_attention_ref(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor):
    """Plain prefix-sum formula (materialises the [B, H, T, M, E] cumsum: tests only, tiny sizes).

    Same signature/result as causal_linear_attention; computes in the inputs' dtype (use float64)."""
    H = fq.shape[1]
    fk = fk.repeat_interleave(H // fk.shape[1], dim=1)                  # [B, H, T, M]
    v = v.repeat_interleave(H // v.shape[1], dim=1)                     # [B, H, T, E]
    S = torch.cumsum(fk[..., :, None] * v[..., None, :], dim=2)         # [B, H, T, M, E]
    z = torch.cumsum(fk, dim=2)                                         # [B, H, T, M]
    num = torch.einsum("bhtm,bhtme->bhte", fq, S)                       # [B, H, T, E]
    den = (fq * z).sum(-1)                                              # [B, H, T]
    return num, den
