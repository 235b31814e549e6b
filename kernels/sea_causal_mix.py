"""SEA's causal mix stage in three Triton launches (forward only): the cumulative mean of v and the mix with c.

What: for a block of query rows at positions row0 .. row0 + T - 1 of a longer causal sequence (row0 = 0, v_sum0 = 0:
the whole sequence), per (b, h) and column d,
    c_avg[t] = (v_sum0 + sum_{s <= t} v[s]) / (row0 + t + 1)                          (fp32 sums)
    out[t]   = ((1 - s_mix[t]) * c_avg[t] + s_mix[t] * s_prob[t] * c[t]).to(out_dtype)   (fp32 arithmetic)
with c, v [B, H, T, D] (bf16 / fp16 / fp32, any strides, e.g. an expanded GQA view of v), s_prob, s_mix fp32
[B, H, T, 1], v_sum0 fp32 [B, H, D] (the column sum of v over the rows before row0). This is what
methods/sea/layer.py's `stage_mix` computes for causal calls without a padding mask: `causal_mean(vr.float(), None)`
(`chunked_cumsum`, then a division by 1..T) followed by `torch.addcmul((1 - s_mix) * c_avg, s_mix * s_prob,
c.float()).to(out_dtype)`. Optionally also returned: c_avg (fp32 [B, H, T, D]) and the running column sum
v_sum0 + sum_t v[t] (fp32 [B, H, D]: the v_sum0 of the next query block).

Why: in PyTorch the stage is ~8 passes over [B, H, T, D] fp32 tensors (the cast of v, the chunked cumsum's
pad / reshape / cumsum / cat / add, the division, the addcmul with its two fp32 temporaries, the cast of c, the final
cast): measured on an H200 (B=1, H=16, D=64, bf16) ~1.5 ms at T = 65536 and 5-6 ms at T = 262144, against a traffic
floor (read v and c once, write out once) of ~0.1 / ~0.5 ms.

Algorithm (chunk-parallel, the same shape as kernels/linear_attention.py's parallel pass), NC = cdiv(T, CHUNK):
  1. `_chunk_sums_kernel`, one program per (chunk, b * H + h, block of BLOCK_D columns): the chunk's fp32 column sums
     of v -> PRE[bh, chunk + 1, :] (PRE is fp32 [B * H, NC + 1, D]; the wrapper puts v_sum0, or zeros, in row 0).
  2. `_prefix_kernel`, one program per (block of SCAN_BLOCK_D columns, bh): in place, inclusive prefix sum of PRE's
     NC + 1 rows, SCAN_STEPS rows per step of its dependent chain (a tile, tl.cumsum down it, plus the running
     total). Afterwards PRE[bh, i] = v_sum0 + (sum of the chunks before chunk i), and PRE[bh, NC] is the running
     total returned as v_sum.
  3. `_mix_kernel`, one program per (chunk, bh, column block): v's chunk again, tl.cumsum down its rows plus
     PRE[bh, chunk], divided by (row0 + t + 1), mixed with c and the two scalers, stored in out_dtype (and c_avg).
Summation order: fp32 throughout; a row's sum is (v_sum0 + chunk totals in groups of SCAN_STEPS) + the in-chunk
prefix, which differs from torch's (sequential cumsum or chunked_cumsum with chunk 64): compare with a tolerance.
The divisor is exact in fp32 up to position 2^24 (as in causal_mean's fp32 arange).

Bytes moved, B=1, H=16, D=64, bf16 c / v / out (N = B H T D elements): read v twice (launch 1 and 3; 2 N x 2 B,
too large to stay in L2 between launches), read c once (2 N), write out once (2 N), scalers 8 B per row, PRE
(N / CHUNK x 4 B, written, scanned in place and read: < 1 %). T = 65536: N = 67.1 M -> ~545 MB (+268 MB with
want_c_avg: fp32 c_avg); T = 262144: ~2.18 GB (+1.07 GB).
Prediction (written before any GPU run; H200 ~4.8 TB/s peak, ~3.5-4 TB/s reachable for streaming kernels):
  T = 65536:  ~0.15 ms streaming + ~3 launches + the scan's chain (NC = 512 rows of PRE in 2 steps of 256) ->
              ~0.17-0.2 ms (~0.25 ms with want_c_avg), against ~1.5 ms for the torch path (7-9x).
  T = 262144: ~0.6 ms streaming + scan (2048 rows, 8 steps) -> ~0.6-0.7 ms (~0.9 ms with want_c_avg), against
              5-6 ms (~8x).
If launch 3 measures far above its share (~0.1 ms at 64k), tl.cumsum down the rows is the suspect (try a smaller
CHUNK, or num_warps); if the scan shows up (>~30 us), raise SCAN_STEPS.

Under TRITON_INTERPRET=1 (CPU tests) the fp32 -> bf16 cast of the store truncates toward zero; on CUDA it rounds to
nearest even like torch. The tests allow either.

Limits: forward only (RuntimeError when a gradient is needed: use SEA's torch path); float64 inputs are refused
(the kernel sums in fp32; causal_mix_ref computes in float64); no padding mask (SEA's masked causal mean divides by
the count of valid keys: stays on the torch path).
"""
from __future__ import annotations

import torch

from kernels._buffers import fresh, triton_runs_on

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: nothing here can run
    triton = None
    tl = None

# Tests set this to True: fresh outputs (and the internal prefix buffer) start as NaN so a skipped write fails.
POISON_OUTPUTS = False

CHUNK = 128          # rows per program of launches 1 and 3 (power of two; tests shrink it)
BLOCK_D_MAX = 64     # columns per program of launches 1 and 3 (power of two; D above it splits over the grid)
SCAN_BLOCK_D = 16    # columns per program of the prefix scan (power of two)
SCAN_STEPS = 256     # rows of PRE per step of the scan's dependent chain (power of two)
NUM_WARPS = 4

_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


if triton is not None:
    @triton.jit
    def _chunk_tile(V, svb, svh, svt, svd, H, T, D, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr):
        """Program (chunk c, b * H + h, column block) of launches 1 and 3: its indices, masks and v tile [C, BD]
        (int64 row offsets)."""
        c = tl.program_id(0).to(tl.int64)
        bh = tl.program_id(1).to(tl.int64)
        pid_d = tl.program_id(2)
        b = bh // H
        h = bh % H
        t = c * CHUNK + tl.arange(0, CHUNK)                                             # [C] int64
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)                                     # [BD]
        t_ok = t < T
        d_ok = d < D
        ok = t_ok[:, None] & d_ok[None, :]                                              # [C, BD]
        x = tl.load(V + b * svb + h * svh + t[:, None] * svt + d[None, :] * svd, mask=ok, other=0.0)
        return c, bh, b, h, t, d, t_ok, d_ok, ok, x

    @triton.jit
    def _chunk_sums_kernel(V, PRE, svb, svh, svt, svd, H, T, D, NC,
                           CHUNK: tl.constexpr, BLOCK_D: tl.constexpr):
        """Launch 1: PRE[bh, c + 1, d] = sum over the chunk's rows of v[b, h, t, d], fp32."""
        c, bh, b, h, t, d, t_ok, d_ok, ok, x = _chunk_tile(V, svb, svh, svt, svd, H, T, D, CHUNK, BLOCK_D)
        tot = tl.sum(x.to(tl.float32), axis=0)                                          # [BD]
        tl.store(PRE + (bh * (NC + 1) + c + 1) * D + d, tot, mask=d_ok)

    @triton.jit
    def _prefix_kernel(PRE, D, NR, SCAN_BLOCK_D: tl.constexpr, SCAN_STEPS: tl.constexpr):
        """Launch 2, in place: PRE[bh, i, :] <- sum of PRE[bh, 0..i, :] over the NR = NC + 1 rows of one bh."""
        pid_d = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        d = pid_d * SCAN_BLOCK_D + tl.arange(0, SCAN_BLOCK_D)                            # [SD]
        d_ok = d < D
        base = PRE + bh * NR * D
        run = tl.zeros([SCAN_BLOCK_D], dtype=tl.float32)
        for i0 in range(0, NR, SCAN_STEPS):
            i = i0 + tl.arange(0, SCAN_STEPS)                                            # [S]
            ok = (i < NR)[:, None] & d_ok[None, :]                                       # [S, SD]
            ptr = base + i[:, None].to(tl.int64) * D + d[None, :]
            x = tl.load(ptr, mask=ok, other=0.0)
            tl.store(ptr, run[None, :] + tl.cumsum(x, axis=0), mask=ok)
            run += tl.sum(x, axis=0)

    @triton.jit
    def _mix_kernel(C, V, SP, SM, PRE, O, CA, row0,
                    scb, sch, sct, scd, svb, svh, svt, svd,
                    spb, sph, spt, smb, smh, smt,
                    sob, soh, sot, sod,
                    H, T, D, NC,
                    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, WANT_CA: tl.constexpr):
        """Launch 3: in-chunk inclusive cumsum of v + the chunk's prefix, / (row0 + t + 1), mixed with c."""
        c, bh, b, h, t, d, t_ok, d_ok, ok, x = _chunk_tile(V, svb, svh, svt, svd, H, T, D, CHUNK, BLOCK_D)
        cc = tl.load(C + b * scb + h * sch + t[:, None] * sct + d[None, :] * scd, mask=ok, other=0.0)
        sp = tl.load(SP + b * spb + h * sph + t * spt, mask=t_ok, other=0.0)            # [C]
        sm = tl.load(SM + b * smb + h * smh + t * smt, mask=t_ok, other=0.0)            # [C]
        pre = tl.load(PRE + (bh * (NC + 1) + c) * D + d, mask=d_ok, other=0.0)          # [BD]
        csum = pre[None, :] + tl.cumsum(x.to(tl.float32), axis=0)                        # [C, BD]
        n = (row0 + t + 1).to(tl.float32)                                               # [C]
        cavg = csum / n[:, None]
        out = (1.0 - sm)[:, None] * cavg + (sm * sp)[:, None] * cc.to(tl.float32)
        tl.store(O + b * sob + h * soh + t[:, None] * sot + d[None, :] * sod, out.to(O.dtype.element_ty), mask=ok)
        if WANT_CA:
            tl.store(CA + ((bh * T + t[:, None]) * D + d[None, :]), cavg, mask=ok)


def mix_usable(device) -> bool:
    """Whether the kernels can run on `device` (CUDA, or CPU tensors under TRITON_INTERPRET=1)."""
    return triton_runs_on(device, triton is not None)


def _check(c, v, s_prob, s_mix, out_dtype, row0, v_sum0, *, kernel: bool):
    for name, x in (("c", c), ("v", v), ("s_prob", s_prob), ("s_mix", s_mix)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"causal_mix: {name} must be a tensor, got {type(x).__name__}")
    if c.dim() != 4 or tuple(v.shape) != tuple(c.shape):
        raise ValueError(f"causal_mix: c and v must both be [B, H, T, D]; got {tuple(c.shape)} and {tuple(v.shape)}")
    B, H, T, D = c.shape
    allowed = _DTYPES if kernel else _DTYPES + (torch.float64,)
    names = "bfloat16, float16, float32" + ("" if kernel else ", float64")
    for name, x in (("c", c), ("v", v)):
        if x.dtype not in allowed:
            hint = " (the kernel sums in fp32: use causal_mix_ref for float64)" if x.dtype == torch.float64 else ""
            raise ValueError(f"causal_mix: {name} dtype {x.dtype}: expected one of {names}{hint}")
    if not isinstance(out_dtype, torch.dtype) or out_dtype not in allowed:
        raise ValueError(f"causal_mix: out_dtype {out_dtype!r}: expected one of {names}")
    sdt = (torch.float32,) if kernel else (torch.float32, torch.float64)
    for name, x in (("s_prob", s_prob), ("s_mix", s_mix)):
        if x.dtype not in sdt or tuple(x.shape) != (B, H, T, 1):
            raise ValueError(f"causal_mix: {name} must be float32 [B, H, T, 1] = {(B, H, T, 1)}; "
                             f"got {x.dtype} {tuple(x.shape)}")
    if isinstance(row0, bool) or not isinstance(row0, int) or row0 < 0:
        raise ValueError(f"causal_mix: row0={row0!r} must be an int >= 0 (position of the block's first row)")
    if v_sum0 is not None:
        if not isinstance(v_sum0, torch.Tensor) or v_sum0.dtype not in sdt or tuple(v_sum0.shape) != (B, H, D):
            got = f"{v_sum0.dtype} {tuple(v_sum0.shape)}" if isinstance(v_sum0, torch.Tensor) else type(v_sum0).__name__
            raise ValueError(f"causal_mix: v_sum0 must be float32 [B, H, D] = {(B, H, D)} or None; got {got}")
    others = (v, s_prob, s_mix) + (() if v_sum0 is None else (v_sum0,))
    if any(x.device != c.device for x in others):
        raise ValueError("causal_mix: c, v, s_prob, s_mix (and v_sum0) must be on one device")


def _result(out, c_avg, v_sum, want_c_avg, want_v_sum):
    if not (want_c_avg or want_v_sum):
        return out
    return out, (c_avg if want_c_avg else None), (v_sum if want_v_sum else None)


def causal_mix(c, v, s_prob, s_mix, *, out_dtype, row0: int = 0, v_sum0=None, want_c_avg: bool = False,
               want_v_sum: bool = False, out=None):
    """SEA's causal mix (module docstring): out [B, H, T, D] in out_dtype =
    (1 - s_mix) * cumulative_mean(v) + s_mix * s_prob * c, the rows being positions row0 .. row0 + T - 1 and v_sum0
    (fp32 [B, H, D], None = zeros) the column sum of v over the rows before row0.
    Returns out when neither want flag is set, else the tuple (out, c_avg or None, v_sum or None) with
    c_avg fp32 [B, H, T, D] (want_c_avg) and v_sum = v_sum0 + sum_t v[t], fp32 [B, H, D] (want_v_sum; pass it as the
    next block's v_sum0). out: a [B, H, T, D] tensor in out_dtype to write into, c itself included (each value of c
    is read by the program that writes the same position of out, before it writes it: no other program reads it),
    so the mix needs no second [B, H, T, D] tensor. Forward only."""
    if triton is None:
        raise RuntimeError("causal_mix: triton is not installed")
    grads = (c, v, s_prob, s_mix) + (() if v_sum0 is None else (v_sum0,))
    if torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in grads):
        raise RuntimeError("causal_mix is forward-only (no backward): use SEA's torch mix (causal_mean + addcmul) "
                           "when gradients are needed, or call it under torch.no_grad()")
    _check(c, v, s_prob, s_mix, out_dtype, row0, v_sum0, kernel=True)
    if not mix_usable(c.device):
        raise RuntimeError(f"causal_mix: Triton cannot run on {c.device} (needs CUDA, or TRITON_INTERPRET=1 on CPU)")
    for name, val in (("CHUNK", CHUNK), ("BLOCK_D_MAX", BLOCK_D_MAX), ("SCAN_BLOCK_D", SCAN_BLOCK_D),
                      ("SCAN_STEPS", SCAN_STEPS)):
        if val < 1 or val & (val - 1):
            raise ValueError(f"causal_mix: {name}={val} must be a power of two")
    B, H, T, D = c.shape
    dev = c.device
    if out is None:
        out = fresh((B, H, T, D), out_dtype, dev, poison=POISON_OUTPUTS)
    elif not isinstance(out, torch.Tensor) or tuple(out.shape) != (B, H, T, D) or out.dtype != out_dtype \
            or out.device != dev:
        raise ValueError(f"causal_mix: out must be a {out_dtype} tensor [B, H, T, D] = {(B, H, T, D)} on {dev}")
    c_avg = fresh((B, H, T, D), torch.float32, dev, poison=POISON_OUTPUTS) if want_c_avg else None
    if B * H * T * D == 0:
        v_sum = (v_sum0.clone() if v_sum0 is not None else torch.zeros(B, H, D, device=dev)) if want_v_sum else None
        if v_sum is not None and T and D:
            v_sum = v_sum + v.float().sum(2)
        return _result(out, c_avg, v_sum, want_c_avg, want_v_sum)
    BH = B * H
    if BH > 65535:
        raise ValueError(f"causal_mix: B * H = {BH} programs on the grid's second axis (at most 65535)")
    NC = -(-T // CHUNK)
    pre = fresh((BH, NC + 1, D), torch.float32, dev, poison=POISON_OUTPUTS)   # [BH, NC + 1, D]
    if v_sum0 is None:
        pre[:, 0].zero_()
    else:
        pre[:, 0].copy_(v_sum0.reshape(BH, D))                                # [BH, D]
    bd = min(BLOCK_D_MAX, _pow2(D))
    n_db = -(-D // bd)
    sv, sc = v.stride(), c.stride()
    _chunk_sums_kernel[(NC, BH, n_db)](v, pre, *sv, H, T, D, NC, CHUNK=CHUNK, BLOCK_D=bd, num_warps=NUM_WARPS)
    sbd = min(SCAN_BLOCK_D, _pow2(D))
    _prefix_kernel[(-(-D // sbd), BH)](pre, D, NC + 1, SCAN_BLOCK_D=sbd, SCAN_STEPS=SCAN_STEPS,
                                       num_warps=NUM_WARPS)
    sp, sm, so = s_prob.stride(), s_mix.stride(), out.stride()
    _mix_kernel[(NC, BH, n_db)](
        c, v, s_prob, s_mix, pre, out, out if c_avg is None else c_avg, int(row0),
        *sc, *sv, sp[0], sp[1], sp[2], sm[0], sm[1], sm[2], *so,
        H, T, D, NC, CHUNK=CHUNK, BLOCK_D=bd, WANT_CA=c_avg is not None, num_warps=NUM_WARPS)
    v_sum = pre[:, NC].reshape(B, H, D).clone() if want_v_sum else None       # [B, H, D]
    return _result(out, c_avg, v_sum, want_c_avg, want_v_sum)


def causal_mix_ref(c, v, s_prob, s_mix, *, out_dtype, row0: int = 0, v_sum0=None, want_c_avg: bool = False,
                   want_v_sum: bool = False):
    """causal_mix in plain PyTorch: a sequential torch.cumsum along T, in float64 when c or v is float64, else fp32;
    same arguments and returns (c_avg and v_sum in the computing dtype)."""
    _check(c, v, s_prob, s_mix, out_dtype, row0, v_sum0, kernel=False)
    B, H, T, D = c.shape
    dt = torch.float64 if torch.float64 in (c.dtype, v.dtype) else torch.float32
    start = torch.zeros(B, H, 1, D, dtype=dt, device=c.device) if v_sum0 is None else v_sum0.to(dt)[:, :, None]
    csum = start + v.to(dt).cumsum(2)                                                 # [B, H, T, D]
    n = torch.arange(row0 + 1, row0 + T + 1, device=c.device, dtype=dt)               # [T]
    c_avg = csum / n[:, None]                                                         # [B, H, T, D]
    out = (1 - s_mix.to(dt)) * c_avg + (s_mix.to(dt) * s_prob.to(dt)) * c.to(dt)
    v_sum = start[:, :, 0] + v.to(dt).sum(2)                                          # [B, H, D]
    return _result(out.to(out_dtype), c_avg, v_sum, want_c_avg, want_v_sum)
