"""SEA's causal mix with a backward: kernels/sea_causal_mix.py's forward wrapped in an autograd.Function whose
backward is two more Triton launches.

What: the forward is causal_mix over a whole sequence (row0 = 0, no carried sum): per (b, h), row t, column d,
    n[t] = t + 1,   c_avg[t] = (sum_{s <= t} v[s]) / n[t],
    out[t] = (1 - s_mix[t]) * c_avg[t] + s_mix[t] * s_prob[t] * c[t]          (fp32 arithmetic, out in out_dtype)
and the backward, for the output gradient g (read as fp32),
    dc[t]      = s_mix[t] * s_prob[t] * g[t]                                     (c's dtype)
    ds_prob[t] = s_mix[t] * sum_d g[t, d] c[t, d]                                (fp32 [B, H, T, 1])
    ds_mix[t]  = sum_d g[t, d] (s_prob[t] c[t, d] - c_avg[t, d])                 (fp32 [B, H, T, 1])
    dv[s]      = sum_{t >= s} (1 - s_mix[t]) g[t] / n[t]                         (v's dtype; a suffix sum along T)
which is what autograd computes for SEA's torch mix (methods/sea/layer.py `stage_mix`: causal_mean's chunked cumsum
and division, the addcmul, the casts), in fewer passes.

Why: in SEA's 32k causal training step on an H200 the torch mix took ~0.6 ms forward and ~1.5 ms backward in ~30
small kernels (casts, the cumsum's flips and copies, the addcmul's products and sums:
results/nvidia-h200/sea-train/); the traffic floor of the backward is ~0.1 ms (read g twice, v twice, c once; write
dc and dv).

Backward algorithm, NC = cdiv(T, CHUNK), with kernels/sea_causal_mix.py's chunking and its `_prefix_kernel`:
  1. `_grad_sums_kernel`, one program per (chunk, b * H + h): the chunk's fp32 column sums of v -> PRE[bh, c + 1]
     and of w[t] = (1 - s_mix[t]) g[t] / n[t] -> SUF[bh, NC - c] (chunks stored in reverse order, row 0 zero).
  2. `_prefix_kernel` once over the 2 B H stacked rows of PRE and SUF: PRE[bh, c] is then the sum of v over the
     chunks before c, SUF[bh, NC - c - 1] the sum of w over the chunks after c.
  3. `_mix_bwd_kernel`, one program per (chunk, bh): c_avg by the in-chunk cumsum of v + PRE, dv by the in-chunk
     reverse cumsum of w + SUF, the row sums over d for the two scalers, dc. Each program holds whole rows
     (BLOCK_D = next power of two >= D) so the row sums need no second pass.
Summation order: fp32 throughout, chunked (differs from torch's; compare with a tolerance).

Limits: whole sequences only (no row0 / v_sum0: query blocks are inference-only), no padding mask, float64 refused
(causal_mix_grad_ref computes in float64); D <= MAX_D.
"""
from __future__ import annotations

import torch

from kernels import sea_causal_mix as scm
from kernels._buffers import fresh

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: nothing here can run
    triton = None
    tl = None

MAX_D = 256          # whole rows per program in the backward

if triton is not None:
    @triton.jit
    def chunk_rows(H, T, D, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr):
        """Program (chunk c, b * H + h) of a grid (NC, B * H) over whole rows: c, bh, b, h (int64), the chunk's rows
        t [C] (int64), the columns d [BD] and their masks (also used by kernels/linear_attention_den_grad.py)."""
        c = tl.program_id(0).to(tl.int64)
        bh = tl.program_id(1).to(tl.int64)
        t = c * CHUNK + tl.arange(0, CHUNK)                                             # [C] int64
        d = tl.arange(0, BLOCK_D)                                                       # [BD]
        t_ok = t < T
        d_ok = d < D
        return c, bh, bh // H, bh % H, t, d, t_ok, d_ok, t_ok[:, None] & d_ok[None, :]

    @triton.jit
    def _tile(V, G, SM, svb, svh, svt, svd, sgb, sgh, sgt, sgd, smb, smh, smt, H, T, D,
              CHUNK: tl.constexpr, BLOCK_D: tl.constexpr):
        """Program (chunk c, b * H + h) of launches 1 and 3: indices, masks, the v and g tiles [C, BD] (int64 row
        offsets) and s_mix [C]."""
        c, bh, b, h, t, d, t_ok, d_ok, ok = chunk_rows(H, T, D, CHUNK, BLOCK_D)
        x = tl.load(V + b * svb + h * svh + t[:, None] * svt + d[None, :] * svd, mask=ok, other=0.0)
        g = tl.load(G + b * sgb + h * sgh + t[:, None] * sgt + d[None, :] * sgd, mask=ok, other=0.0)
        sm = tl.load(SM + b * smb + h * smh + t * smt, mask=t_ok, other=0.0)            # [C]
        return c, bh, b, h, t, d, t_ok, d_ok, ok, x, g, sm

    @triton.jit
    def _grad_sums_kernel(V, G, SM, PRE, SUF,
                          svb, svh, svt, svd, sgb, sgh, sgt, sgd, smb, smh, smt,
                          H, T, D, NC, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr):
        """Launch 1: PRE[bh, c + 1] = sum of the chunk's v rows; SUF[bh, NC - c] = sum of its w rows (fp32)."""
        c, bh, b, h, t, d, t_ok, d_ok, ok, x, g, sm = _tile(V, G, SM, svb, svh, svt, svd, sgb, sgh, sgt, sgd,
                                                             smb, smh, smt, H, T, D, CHUNK, BLOCK_D)
        w = g.to(tl.float32) * ((1.0 - sm) / (t + 1).to(tl.float32))[:, None]          # [C, BD]
        tl.store(PRE + (bh * (NC + 1) + c + 1) * D + d, tl.sum(x.to(tl.float32), axis=0), mask=d_ok)
        tl.store(SUF + (bh * (NC + 1) + NC - c) * D + d, tl.sum(w, axis=0), mask=d_ok)

    @triton.jit
    def _mix_bwd_kernel(C, V, G, SP, SM, PRE, SUF, DC, DV, DSP, DSM,
                        scb, sch, sct, scd, svb, svh, svt, svd, sgb, sgh, sgt, sgd,
                        spb, sph, spt, smb, smh, smt,
                        H, T, D, NC, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr):
        """Launch 3: dc, dv (contiguous [B, H, T, D]) and ds_prob, ds_mix (contiguous [B, H, T, 1]) of one chunk."""
        c, bh, b, h, t, d, t_ok, d_ok, ok, x, g, sm = _tile(V, G, SM, svb, svh, svt, svd, sgb, sgh, sgt, sgd,
                                                             smb, smh, smt, H, T, D, CHUNK, BLOCK_D)
        cc = tl.load(C + b * scb + h * sch + t[:, None] * sct + d[None, :] * scd, mask=ok, other=0.0)
        sp = tl.load(SP + b * spb + h * sph + t * spt, mask=t_ok, other=0.0)            # [C]
        n = (t + 1).to(tl.float32)                                                      # [C]
        g = g.to(tl.float32)
        cf = cc.to(tl.float32)
        pre = tl.load(PRE + (bh * (NC + 1) + c) * D + d, mask=d_ok, other=0.0)          # [BD] v before the chunk
        cavg = (pre[None, :] + tl.cumsum(x.to(tl.float32), axis=0)) / n[:, None]        # [C, BD]
        gc = tl.sum(g * cf, axis=1)                                                     # [C]
        ga = tl.sum(g * cavg, axis=1)                                                   # [C]
        tl.store(DSP + bh * T + t, sm * gc, mask=t_ok)
        tl.store(DSM + bh * T + t, sp * gc - ga, mask=t_ok)
        row = (bh * T + t[:, None]) * D + d[None, :]                                    # [C, BD] contiguous
        tl.store(DC + row, (g * (sm * sp)[:, None]).to(DC.dtype.element_ty), mask=ok)
        w = g * ((1.0 - sm) / n)[:, None]                                               # [C, BD]
        suf = tl.load(SUF + (bh * (NC + 1) + NC - c - 1) * D + d, mask=d_ok, other=0.0)  # [BD] w after the chunk
        dv = suf[None, :] + tl.cumsum(w, axis=0, reverse=True)
        tl.store(DV + row, dv.to(DV.dtype.element_ty), mask=ok)


def prefix_suffix_scan(sums_launch, BH: int, NC: int, D: int, device):
    """The chunk totals' scan shared by this module and kernels/linear_attention_den_grad.py: a fresh fp32 buffer
    of 2 BH (NC + 1) D (PRE rows [BH, NC + 1, D], then SUF rows, row 0 of each zero), `sums_launch(pre, suf)` writing
    chunk c's totals to PRE[:, c + 1] and SUF[:, NC - c], then one scm._prefix_kernel launch over both: PRE[:, c] is
    the sum over the chunks before c, SUF[:, NC - c - 1] over the chunks after c. Returns (pre, suf)."""
    stacked = fresh((2 * BH, NC + 1, D), torch.float32, device, poison=scm.POISON_OUTPUTS)
    pre, suf = stacked[:BH], stacked[BH:]
    stacked[:, 0].zero_()
    sums_launch(pre, suf)
    sbd = min(scm.SCAN_BLOCK_D, scm._pow2(D))
    scm._prefix_kernel[(-(-D // sbd), 2 * BH)](stacked, D, NC + 1, SCAN_BLOCK_D=sbd, SCAN_STEPS=scm.SCAN_STEPS,
                                               num_warps=scm.NUM_WARPS)
    return pre, suf


def _backward(g, c, v, s_prob, s_mix):
    """(dc, dv, ds_prob, ds_mix) by the two launches above around the prefix scan."""
    B, H, T, D = c.shape
    dev = c.device
    BH = B * H
    NC = -(-T // scm.CHUNK)
    bd = scm._pow2(D)
    sv, sg, sm = v.stride(), g.stride(), s_mix.stride()
    pre, suf = prefix_suffix_scan(
        lambda pre, suf: _grad_sums_kernel[(NC, BH)](v, g, s_mix, pre, suf, *sv, *sg, sm[0], sm[1], sm[2], H, T, D,
                                                     NC, CHUNK=scm.CHUNK, BLOCK_D=bd, num_warps=scm.NUM_WARPS),
        BH, NC, D, dev)
    dc = fresh((B, H, T, D), c.dtype, dev, poison=scm.POISON_OUTPUTS)
    dv = fresh((B, H, T, D), v.dtype, dev, poison=scm.POISON_OUTPUTS)
    dsp = fresh((B, H, T, 1), torch.float32, dev, poison=scm.POISON_OUTPUTS)
    dsm = fresh((B, H, T, 1), torch.float32, dev, poison=scm.POISON_OUTPUTS)
    sp = s_prob.stride()
    _mix_bwd_kernel[(NC, BH)](c, v, g, s_prob, s_mix, pre, suf, dc, dv, dsp, dsm,
                              *c.stride(), *sv, *sg, sp[0], sp[1], sp[2], sm[0], sm[1], sm[2], H, T, D, NC,
                              CHUNK=scm.CHUNK, BLOCK_D=bd, num_warps=scm.NUM_WARPS)
    return dc, dv, dsp, dsm


class _CausalMixFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, c, v, s_prob, s_mix, out_dtype):
        ctx.save_for_backward(c, v, s_prob, s_mix)
        with torch.no_grad():
            return scm.causal_mix(c, v, s_prob, s_mix, out_dtype=out_dtype)

    @staticmethod
    def backward(ctx, g):
        c, v, s_prob, s_mix = ctx.saved_tensors
        dc, dv, dsp, dsm = _backward(g, c, v, s_prob, s_mix)
        need = ctx.needs_input_grad
        return (dc if need[0] else None, dv if need[1] else None, dsp if need[2] else None,
                dsm if need[3] else None, None)


def causal_mix_grad(c, v, s_prob, s_mix, *, out_dtype):
    """SEA's causal mix over a whole sequence (module docstring), differentiable in c, v, s_prob and s_mix: the
    forward is kernels/sea_causal_mix.causal_mix (row0 = 0), the backward two Triton launches around its prefix
    scan. Returns out [B, H, T, D] in out_dtype."""
    if triton is None:
        raise RuntimeError("causal_mix_grad: triton is not installed")
    scm._check(c, v, s_prob, s_mix, out_dtype, 0, None, kernel=True)
    if c.shape[-1] > MAX_D:
        raise ValueError(f"causal_mix_grad: head dim {c.shape[-1]} > {MAX_D} (whole rows per program)")
    if c.numel() == 0:
        raise ValueError(f"causal_mix_grad: empty input {tuple(c.shape)}")
    if c.shape[0] * c.shape[1] > 65535:
        raise ValueError(f"causal_mix_grad: B * H = {c.shape[0] * c.shape[1]} programs on the grid's second axis "
                         "(at most 65535)")
    return _CausalMixFn.apply(c, v, s_prob, s_mix, out_dtype)


def causal_mix_grad_ref(g, c, v, s_prob, s_mix):
    """The backward's formulas (module docstring) in float64 with torch.cumsum: (dc, dv, ds_prob, ds_mix), float64."""
    g, c, v, sp, sm = (x.double() for x in (g, c, v, s_prob, s_mix))
    T = c.shape[2]
    n = torch.arange(1, T + 1, dtype=torch.float64, device=c.device)[:, None]        # [T, 1]
    c_avg = v.cumsum(2) / n
    w = (1 - sm) * g / n
    dv = w.flip(2).cumsum(2).flip(2)
    gc = (g * c).sum(-1, keepdim=True)
    return sm * sp * g, dv, sm * gc, sp * gc - (g * c_avg).sum(-1, keepdim=True)
