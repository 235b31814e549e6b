"""The gradient of the causal linear-attention normaliser in three Triton launches (kernels/linear_attention.py's
backward on the Triton path).

What: with den[t] = fq[t] . sum_{s <= t} fk[s] (per batch, head; fq [B, H, T, M], fk [B, Hkv, T, M], H % Hkv == 0,
head h reading kv head h // (H / Hkv)) and its gradient dden [B, H, T] (fp32),
    dfq[t] += dden[t] * sum_{s <= t} fk[s]            (prefix sums of fk)
    dfk[s] += sum_{t >= s} dden[t] * fq[t]            (suffix sums; per query head, [B, H, T, M])
added in place into fp32 [B, H, T, M] buffers (the passes' gradients of the numerator). The PyTorch form
(chunked_cumsum / chunked_rev_cumsum with the casts, the flips, the products and the adds) took ~1 ms of SEA's 32k
causal forward+backward on an H200 in ~25 small kernels (results/nvidia-h200/sea-train/); the traffic here is
reading fk and fq twice and dden, reading and writing dfq and dfk once.

How (the chunking of kernels/sea_causal_mix.py, whose prefix-scan kernel it reuses), NC = cdiv(T, CHUNK):
  1. `_den_sums_kernel`, one program per (chunk, b * H + h): the chunk's column sums of fk -> PRE[bh, c + 1] and
     of dden * fq -> SUF[bh, NC - c] (reverse order), fp32.
  2. `sea_causal_mix._prefix_kernel` once over the stacked PRE and SUF rows: PRE[bh, c] = fk summed over the chunks
     before c, SUF[bh, NC - c - 1] = dden * fq summed over the chunks after c.
  3. `_den_apply_kernel`, one program per (chunk, bh): the in-chunk cumsum (reverse cumsum) plus PRE (SUF), times
     dden (for dfq), added into dfq and dfk.
Sums in fp32 in chunked order (not torch's; tests compare with a tolerance). Whole rows per program (BLOCK_M = the
next power of two >= M, at most MAX_M).
"""
from __future__ import annotations

import torch

from kernels import sea_causal_mix as scm

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: nothing here can run
    triton = None
    tl = None

CHUNK = 64           # rows per program (power of two)
MAX_M = 512          # features per row held by one program

if triton is not None:
    from kernels.sea_causal_mix_grad import chunk_rows, prefix_suffix_scan

    @triton.jit
    def _den_tile(FQ, FK, DDEN, sqb, sqh, sqt, skb, skh, skt, H, T, M, G,
                  CHUNK: tl.constexpr, BLOCK_M: tl.constexpr):
        """Program (chunk c, b * H + h): indices, masks, the fq and fk tiles [C, BM] (fp32) and dden [C]."""
        c, bh, b, h, t, m, t_ok, m_ok, ok = chunk_rows(H, T, M, CHUNK, BLOCK_M)
        fq = tl.load(FQ + b * sqb + h * sqh + t[:, None] * sqt + m[None, :], mask=ok, other=0.0).to(tl.float32)
        fk = tl.load(FK + b * skb + (h // G) * skh + t[:, None] * skt + m[None, :], mask=ok, other=0.0)
        dd = tl.load(DDEN + bh * T + t, mask=t_ok, other=0.0)                           # [C]
        return c, bh, t, m, t_ok, m_ok, ok, fq, fk.to(tl.float32), dd

    @triton.jit
    def _den_sums_kernel(FQ, FK, DDEN, PRE, SUF, sqb, sqh, sqt, skb, skh, skt, H, T, M, G, NC,
                         CHUNK: tl.constexpr, BLOCK_M: tl.constexpr):
        """Launch 1: PRE[bh, c + 1] = sum of the chunk's fk rows; SUF[bh, NC - c] = sum of its dden * fq rows."""
        c, bh, t, m, t_ok, m_ok, ok, fq, fk, dd = _den_tile(FQ, FK, DDEN, sqb, sqh, sqt, skb, skh, skt, H, T, M, G,
                                                             CHUNK, BLOCK_M)
        tl.store(PRE + (bh * (NC + 1) + c + 1) * M + m, tl.sum(fk, axis=0), mask=m_ok)
        tl.store(SUF + (bh * (NC + 1) + NC - c) * M + m, tl.sum(fq * dd[:, None], axis=0), mask=m_ok)

    @triton.jit
    def _den_apply_kernel(FQ, FK, DDEN, PRE, SUF, DFQ, DFK, sqb, sqh, sqt, skb, skh, skt, H, T, M, G, NC,
                          CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, WANT_Q: tl.constexpr, WANT_K: tl.constexpr):
        """Launch 3: dfq += dden * (prefix sums of fk); dfk += suffix sums of dden * fq (contiguous fp32)."""
        c, bh, t, m, t_ok, m_ok, ok, fq, fk, dd = _den_tile(FQ, FK, DDEN, sqb, sqh, sqt, skb, skh, skt, H, T, M, G,
                                                             CHUNK, BLOCK_M)
        row = (bh * T + t[:, None]) * M + m[None, :]                                    # [C, BM]
        if WANT_Q:
            pre = tl.load(PRE + (bh * (NC + 1) + c) * M + m, mask=m_ok, other=0.0)      # [BM] fk before the chunk
            ck = pre[None, :] + tl.cumsum(fk, axis=0)
            tl.store(DFQ + row, tl.load(DFQ + row, mask=ok, other=0.0) + dd[:, None] * ck, mask=ok)
        if WANT_K:
            suf = tl.load(SUF + (bh * (NC + 1) + NC - c - 1) * M + m, mask=m_ok, other=0.0)   # [BM] after it
            rq = suf[None, :] + tl.cumsum(fq * dd[:, None], axis=0, reverse=True)
            tl.store(DFK + row, tl.load(DFK + row, mask=ok, other=0.0) + rq, mask=ok)


def den_grad_add_(fq, fk, dden, dfq, dfk) -> None:
    """Add the normaliser's gradient (module docstring) into dfq and / or dfk (fp32 contiguous [B, H, T, M]
    buffers, or None for a gradient not wanted). fq [B, H, T, M], fk [B, Hkv, T, M] (fp32 / fp16 / bf16, last dim
    contiguous), dden [B, H, T] fp32."""
    if triton is None:
        raise RuntimeError("den_grad_add_: triton is not installed")
    B, H, T, M = fq.shape
    Hkv = fk.shape[1]
    if fk.shape != (B, Hkv, T, M) or H % Hkv or tuple(dden.shape) != (B, H, T) or dden.dtype != torch.float32:
        raise ValueError(f"den_grad_add_: fq {tuple(fq.shape)}, fk {tuple(fk.shape)}, dden {dden.dtype} "
                         f"{tuple(dden.shape)}: expected fk [B, Hkv, T, M] with H % Hkv == 0, dden fp32 [B, H, T]")
    for name, buf in (("dfq", dfq), ("dfk", dfk)):
        if buf is not None and (buf.shape != fq.shape or buf.dtype != torch.float32 or not buf.is_contiguous()):
            raise ValueError(f"den_grad_add_: {name} must be a contiguous fp32 {tuple(fq.shape)} buffer")
    if M > MAX_M or fq.stride(-1) != 1 or fk.stride(-1) != 1:
        raise ValueError(f"den_grad_add_: M = {M} (at most {MAX_M}) with contiguous rows expected")
    if (dfq is None and dfk is None) or fq.numel() == 0:
        return
    if B * H > 65535:
        raise ValueError(f"den_grad_add_: B * H = {B * H} programs on the grid's second axis (at most 65535)")
    BH, NC = B * H, -(-T // CHUNK)
    bm = scm._pow2(M)
    dden = dden.contiguous()
    args = (fq.stride(0), fq.stride(1), fq.stride(2), fk.stride(0), fk.stride(1), fk.stride(2), H, T, M, H // Hkv, NC)
    pre, suf = prefix_suffix_scan(
        lambda pre, suf: _den_sums_kernel[(NC, BH)](fq, fk, dden, pre, suf, *args, CHUNK=CHUNK, BLOCK_M=bm,
                                                    num_warps=4),
        BH, NC, M, fq.device)
    _den_apply_kernel[(NC, BH)](fq, fk, dden, pre, suf, dfq if dfq is not None else pre,
                                dfk if dfk is not None else pre, *args, CHUNK=CHUNK, BLOCK_M=bm,
                                WANT_Q=dfq is not None, WANT_K=dfk is not None, num_warps=4)
