"""SEA's causal CNN decoder (methods/sea/estimator.py, CausalDecoder) in one Triton forward pass.

What: for z [B, H, T, 2d] fp32 (the estimator's encoder output) computes CausalDecoder.forward(z) ->
[B, H, T, K] fp32, with w = K / 4 and C = 2H channels:

    x0[b, 2h+j, t, i] = LayerNorm_w(z[b, h, t] @ Wr^T + br)[j*w + i]         row Linear 2d -> 2w, norm_in
    x1 = relu(conv1(x0)),  x2 = relu(conv2(x1))                                 C -> C, 3x3, dilation 2
    y[b, h, t, i]     = conv3(x2)                                                 1x1, C -> H, width w
    out[b, h, t, 4i+r] = (y[b,h,t,i] - mean_i y) / sqrt(var_i y + eps) * g[4i+r] + beta[4i+r]

conv1/conv2 are CausalConv2d(C, C, 3, dilation=2): padding 2 on time and width, kernel row kh=2 (time t+2)
zeroed by the module's time_mask, so they read time rows t-2, t and width columns i-2, i, i+2, zero outside
0 <= time and 0 <= column < w. The last line is conv3(repeat_interleave(x2, 4, width)) followed by
norm_out over K: conv3 is 1x1, so it commutes with the 4x width repeat, and a row of K = 4w values made of
four copies of each y_i has the same mean and (biased) variance as y over its w values. The tests check this
against the module itself, not by assumption.

Why: the torch path runs cuDNN convolutions on [B, 2H, T, w] and separate LayerNorm / ReLU / repeat passes
over [B, H, T, K] fp32 tensors: 6.8 ms at T = 65536 (d=64, H=16, K=64) on an H200, while the minimum
traffic (read z, write out) is ~0.8 GB, ~0.2 ms. Here z is read once (plus a 4-row halo per block) and the
output is written once; the intermediates live in a small per-program scratch buffer that stays in L2.

How: a persistent grid; each program loops over jobs (b, time block). A job's window is BLOCK_T time rows
t0-4 .. t0+BLOCK_T-5 and it writes the BLOCK_T-4 output rows t0 .. t0+BLOCK_T-5 (each output row needs input
rows t-4 .. t: two convs with time taps -2, 0). Three stages, separated by CTA barriers:
  1. row Linear (tl.dot over BLOCK_F-wide slices of the 2d features, per head and half j) + norm_in for all
     window rows -> scratch X0 laid out [CP, BLOCK_T, WP] (channel-major, so stores and the conv loads run
     along contiguous positions);
  2. conv1 as six tl.dot's of a shifted [BLOCK_C*WP, CP] position x channel tile of X0 (masked load: zero
     padding in width and before time 0) with the [CP, CP] weight tile of that tap, + bias, relu -> scratch X1;
  3. conv2 the same way from X1, relu, conv3 as one tl.dot with [CP, HP], norm_out over the w real columns,
     and the store of the [BLOCK_C, w, H, 4] output tile (out[b, h, t, 4i+r]).
Stages 2-3 run over chunks of BLOCK_C window rows (bounding registers); stage 1 over chunks of BLOCK_L rows.
The scratch is 2 x CP x BLOCK_T x WP fp32 per program (2 x 64 KiB at SEA's sizes with BLOCK_T = 32), reused
by every job of the program, so with ~2 programs per SM it stays L2-resident (264 x 128 KiB ~ 34 MB).
Rows of a window before time 0 or past T are computed on zero z (finite) and never stored; the convs' loads
mask time < 0 so they see the module's zero padding, not those rows.

Weights: conv1_w / conv2_w may be the raw module weights (CausalConv2d.weight): the kernel never reads kernel
row kh=2, which is exactly what the module's time_mask zeroes, so raw and masked weights give the same output.

Traffic per output row and head: read 2d floats of z (+4/(BLOCK_T-4) halo re-reads, mostly L2 hits), write K
floats; weights (~30 KiB at SEA's sizes) are L1/L2 resident. At B=1, H=16, T=65536, d=64, K=64: 0.54 GB read +
0.27 GB written.

Precision: dots take fp32 inputs with input_precision PRECISION ("tf32x3" by default: three TF32 tensor-core
products, close to fp32; "ieee": fp32 FMA; "tf32": one TF32 product, ~1e-3 relative, faster). Bias, ReLU and
both LayerNorms run in fp32.

Limits: K a multiple of 4 (the module otherwise resizes with nearest_resize, which this kernel does not do),
K <= MAX_K, H <= MAX_H, d <= MAX_D. Forward only: `causal_decoder_forward` refuses when grad is enabled and
any input requires grad.

Compiled offline for sm_90 (triton 3.6, default blocks, tf32x3, 4 warps; not run): 255 registers per thread,
no spills, 20 KiB shared memory, so at most 2 programs per SM (PROGRAMS_PER_SM). With software pipelining
(num_stages > 1) the compiler staged every tap's tiles in shared memory (~250 KiB, over the limit): NUM_STAGES
is 1. BLOCK_F = 128 (one z load per head) spilled ~0.5 KiB per thread. Tune BLOCK_C, BLOCK_T, NUM_WARPS and
PROGRAMS_PER_SM on the GPU.

Predicted time at B=1, T=65536, d=64, H=16, K=64 on an H200 (an estimate, not measured):
  * memory: 0.81 GB / ~4 TB/s ~ 0.20 ms (the 4/28 halo re-read of z mostly hits L2);
  * arithmetic: per output row 16 x 128 x 32 (row Linear) + 2 x 32 x 32 x 6 x 16 (conv1, conv2) + 32 x 16 x 16
    (conv3) ~ 2.7e5 MAC -> 3.5e10 FLOP at T = 65536, x 32/28 for the halo rows = 4.0e10; tf32x3 triples the
    tensor-core work: 1.2e11 TF32 FLOP against ~495 TFLOP/s dense peak = 0.24 ms at peak;
  * latency: 65536 / 28 = 2341 jobs over 264 programs ~ 9 jobs each. Without pipelining each job is a chain
    of dependent load -> dot steps: 64 z loads from DRAM in stage 1 (16 heads x 4 feature slices, ~0.7 us
    each) and 48 scratch tile loads from L1/L2 in stages 2-3 (8 chunks x 6 taps, ~0.3 us each): ~60 us a
    job, ~0.55 ms a program, with only the two programs of an SM overlapping each other.
  Estimate: ~0.6-1.0 ms (latency-bound more than bandwidth- or FLOP-bound), i.e. ~7-10x faster than the
  6.8 ms torch path. The first thing to try if it is slower: fewer, wider z loads in stage 1 (BLOCK_F = 64
  with NUM_WARPS = 8) and PRECISION = "tf32" to see how much of the time the dots are.
"""
from __future__ import annotations


import torch

from kernels._buffers import check_fp32_tensors, fresh, pow2_block, triton_runs_on

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: the decoder kernel is unavailable
    triton = None
    tl = None

# Tests set this to True: the fresh output is then filled with NaN so a skipped write fails.
POISON_OUTPUTS = False
PRECISION = "tf32x3"     # tl.dot input precision ("tf32x3", "ieee" or "tf32")
BLOCK_T = 32             # window rows per job (power of two >= 8); BLOCK_T - 4 output rows each
BLOCK_C = 8              # window rows per conv chunk (power of two; BLOCK_C x WP >= 16)
BLOCK_L = 32             # window rows per row-Linear chunk (power of two >= 16)
BLOCK_F = 64             # input features per row-Linear tl.dot step (power of two >= 16); H200, T=65536: 64 took
                         # 1.64 ms against 1.89 with 32 (results/nvidia-h200/sea-tune/tune-64k.txt)
NUM_WARPS = 4
NUM_STAGES = 1           # no software pipelining: it stages every tap's tiles in shared memory (~250 KiB)
PROGRAMS_PER_SM = 2      # persistent grid on CUDA: SMs x this many programs
PROGRAMS = None          # if set: the number of programs (tests: a few, so each program runs several jobs)
HALO = 4                 # input rows before an output row that it depends on (fixed by the module)
MAX_H = 32
MAX_K = 256
MAX_D = 256

_PRECISIONS = ("tf32x3", "ieee", "tf32")


def _fresh(shape, dtype, device):
    return fresh(shape, dtype, device, poison=POISON_OUTPUTS)


if triton is not None:

    @triton.jit
    def _conv_taps(SRC, Wc, t0, srow, mx, offs_c, cmask,
                   C: tl.constexpr, W: tl.constexpr, WP: tl.constexpr, BT: tl.constexpr, BM: tl.constexpr,
                   CP: tl.constexpr, PREC: tl.constexpr):
        """sum over the six taps (kh in {0, 1}: time t-2, t; kw: column i-2, i, i+2) of the shifted [BM, CP]
        tile of SRC ([CP, BT, WP] scratch) @ the tap's [CP, CP] weight tile (ci, co); zero padding outside
        0 <= column < W and before time 0 (t0 + window row)."""
        acc = tl.zeros([BM, CP], dtype=tl.float32)
        woff = offs_c[None, :] * (C * 9) + offs_c[:, None] * 9                 # [CP ci, CP co] -> w[co, ci, 0, 0]
        wmask = cmask[:, None] & cmask[None, :]
        # a runtime loop over the taps (not static_range): with unrolled taps the compiler hoists the twelve
        # [CP, CP] weight pointer tiles out of the job loop, which costs ~190 registers per thread
        for tap in range(6):
            kh = tap // 3
            kw = tap % 3
            sr = srow + (2 * kh - 2)                                          # [BM] source window row
            xc = mx + (2 * kw - 2)                                            # [BM] source column
            ok = (sr >= 0) & (t0 + sr >= 0) & (xc >= 0) & (xc < W)
            xt = tl.load(SRC + offs_c[None, :] * (BT * WP) + (sr * WP + xc)[:, None],
                         mask=ok[:, None] & cmask[None, :], other=0.0)                     # [BM, CP]
            wt = tl.load(Wc + (kh * 3 + kw) + woff, mask=wmask, other=0.0)               # [CP ci, CP co]
            acc += tl.dot(xt, wt, input_precision=PREC)
        return acc

    @triton.jit
    def _decoder_fwd_kernel(Z, RW, RB, G0, E0, W1, B1, W2, B2, W3, B3, G1, E1, OUT, SCR,
                            T, nblk, njobs, eps_in, eps_out,
                            H: tl.constexpr, D2: tl.constexpr, W: tl.constexpr,
                            HP: tl.constexpr, CP: tl.constexpr, WP: tl.constexpr, WL: tl.constexpr,
                            BT: tl.constexpr, BC: tl.constexpr, BL: tl.constexpr, BF: tl.constexpr,
                            HALO_: tl.constexpr, PREC: tl.constexpr):
        C: tl.constexpr = 2 * H
        K: tl.constexpr = 4 * W
        BM: tl.constexpr = BC * WP                                        # positions per conv chunk
        PLANE: tl.constexpr = BT * WP                                     # one channel of a scratch buffer
        pid = tl.program_id(0)
        nprog = tl.num_programs(0)
        X0 = SCR + pid.to(tl.int64) * (2 * CP * PLANE)                    # [CP, BT, WP] norm_in output
        X1 = X0 + CP * PLANE                                              # [CP, BT, WP] relu(conv1)

        offs_c = tl.arange(0, CP)
        cmask = offs_c < C
        offs_h = tl.arange(0, HP)
        hmask = offs_h < H
        offs_m = tl.arange(0, BM)
        mrow = offs_m // WP                                               # chunk row of a position
        mx = offs_m % WP                                                  # its column
        offs_l = tl.arange(0, BL)
        offs_xl = tl.arange(0, WL)
        xlmask = offs_xl < W
        offs_f = tl.arange(0, BF)
        offs_rc = tl.arange(0, BC)
        offs_x = tl.arange(0, WP)
        xmask = offs_x < W
        offs_r4 = tl.arange(0, 4)
        kidx = 4 * offs_x[:, None] + offs_r4[None, :]                     # [WP, 4] output column 4i + r
        kmask = xmask[:, None] & (offs_r4[None, :] < 4)                   # [WP, 4]

        # norm_in affine and biases, loaded once per program
        g0 = tl.load(G0 + offs_xl, mask=xlmask, other=0.0)
        e0 = tl.load(E0 + offs_xl, mask=xlmask, other=0.0)
        rb0 = tl.load(RB + offs_xl, mask=xlmask, other=0.0)
        rb1 = tl.load(RB + W + offs_xl, mask=xlmask, other=0.0)
        b1 = tl.load(B1 + offs_c, mask=cmask, other=0.0)
        b2 = tl.load(B2 + offs_c, mask=cmask, other=0.0)
        b3 = tl.load(B3 + offs_h, mask=hmask, other=0.0)
        w3 = tl.load(W3 + offs_h[None, :] * C + offs_c[:, None],
                     mask=cmask[:, None] & hmask[None, :], other=0.0)     # [CP c, HP h] = conv3_w[h, c]
        g1 = tl.load(G1 + kidx, mask=kmask, other=0.0)                    # [WP, 4]
        e1 = tl.load(E1 + kidx, mask=kmask, other=0.0)

        for job in range(pid, njobs, nprog):
            b = job // nblk
            t0 = (job % nblk) * (BT - HALO_) - HALO_                     # time of window row 0 (may be < 0)
            zb = Z + b.to(tl.int64) * H * T * D2
            # ---- stage 1: row Linear + norm_in for every window row -> X0
            for l0 in range(0, BT, BL):
                rows = l0 + offs_l                                        # [BL] window rows
                tt = t0 + rows
                tin = (tt >= 0) & (tt < T)
                for h in range(H):
                    zh = zb + (h * T).to(tl.int64) * D2
                    a0 = tl.zeros([BL, WL], dtype=tl.float32)
                    a1 = tl.zeros([BL, WL], dtype=tl.float32)
                    for f0 in range(0, D2, BF):
                        ff = f0 + offs_f
                        fmask = ff < D2
                        zt = tl.load(zh + tt[:, None] * D2 + ff[None, :], mask=tin[:, None] & fmask[None, :],
                                     other=0.0)                                         # [BL, BF]
                        wmask = fmask[:, None] & xlmask[None, :]
                        wr0 = tl.load(RW + offs_xl[None, :] * D2 + ff[:, None], mask=wmask, other=0.0)
                        wr1 = tl.load(RW + (W + offs_xl[None, :]) * D2 + ff[:, None], mask=wmask, other=0.0)
                        a0 += tl.dot(zt, wr0, input_precision=PREC)     # [BL, WL]: channel 2h
                        a1 += tl.dot(zt, wr1, input_precision=PREC)     # channel 2h + 1
                    for j in tl.static_range(2):
                        if j == 0:
                            a = a0 + rb0[None, :]
                        else:
                            a = a1 + rb1[None, :]
                        mean = tl.sum(tl.where(xlmask[None, :], a, 0.0), axis=1) / W
                        diff = tl.where(xlmask[None, :], a - mean[:, None], 0.0)
                        var = tl.sum(diff * diff, axis=1) / W
                        xn = diff * (1.0 / tl.sqrt(var + eps_in))[:, None] * g0[None, :] + e0[None, :]
                        tl.store(X0 + (2 * h + j) * PLANE + rows[:, None] * WP + offs_xl[None, :], xn,
                                 mask=(rows[:, None] < BT) & xlmask[None, :])
            tl.debug_barrier()
            # ---- stage 2: conv1 + relu -> X1 (window rows >= 2; rows 0, 1 would need rows -2, -1)
            for c0 in range((2 // BC) * BC, BT, BC):
                srow = c0 + mrow                                          # [BM] window row
                acc = _conv_taps(X0, W1, t0, srow, mx, offs_c, cmask, C, W, WP, BT, BM, CP, PREC)
                x1 = tl.maximum(acc + b1[None, :], 0.0)
                tl.store(X1 + offs_c[None, :] * PLANE + (c0 * WP + offs_m)[:, None], x1,
                         mask=(offs_m[:, None] < BM) & cmask[None, :])
            tl.debug_barrier()
            # ---- stage 3: conv2 + relu, conv3, norm_out, store (window rows >= HALO)
            for c0 in range((HALO_ // BC) * BC, BT, BC):
                srow = c0 + mrow
                acc = _conv_taps(X1, W2, t0, srow, mx, offs_c, cmask, C, W, WP, BT, BM, CP, PREC)
                x2 = tl.maximum(acc + b2[None, :], 0.0)                   # [BM, CP]
                y = tl.dot(x2, w3, input_precision=PREC) + b3[None, :]    # [BM, HP]
                y = tl.reshape(y, (BC, WP, HP))                           # [rows, columns, heads]
                xm3 = xmask[None, :, None]
                mean = tl.sum(tl.where(xm3, y, 0.0), axis=1) / W          # [BC, HP]
                diff = tl.where(xm3, y - mean[:, None, :], 0.0)
                var = tl.sum(diff * diff, axis=1) / W
                yn = diff * (1.0 / tl.sqrt(var + eps_out))[:, None, :]   # [BC, WP, HP]
                o = yn[:, :, :, None] * g1[None, :, None, :] + e1[None, :, None, :]   # [BC, WP, HP, 4]
                rows = c0 + offs_rc
                tt = t0 + rows                                            # >= 0 where rows >= HALO
                rok = (rows >= HALO_) & (tt < T)
                optr = (OUT + (b.to(tl.int64) * H + offs_h[None, None, :, None]) * T * K
                        + tt[:, None, None, None] * K + kidx[None, :, None, :])
                omask = (rok[:, None, None, None] & hmask[None, None, :, None]) & kmask[None, :, None, :]
                tl.store(optr, o, mask=omask)


def decoder_usable(device) -> bool:
    """True when the kernel can run on `device`: CUDA, or any device under TRITON_INTERPRET=1."""
    return triton_runs_on(device, triton is not None)


def _check(z, named: dict, K: int):
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"sea decoder: z must be a tensor, got {type(z).__name__}")
    check_fp32_tensors("sea decoder", {"z": z, **named}, "z")
    if z.dim() != 4:
        raise ValueError(f"sea decoder: z must be [B, H, T, 2d], got shape {tuple(z.shape)}")
    B, H, T, D2 = z.shape
    if not isinstance(K, int) or K < 4 or K % 4:
        raise ValueError(f"sea decoder: K={K!r} unsupported (needs a multiple of 4; the module resizes other K "
                         f"with nearest_resize, which this kernel does not do)")
    if K > MAX_K:
        raise ValueError(f"sea decoder: K={K} unsupported (needs K <= {MAX_K})")
    if H < 1 or H > MAX_H:
        raise ValueError(f"sea decoder: H={H} heads unsupported (needs 1 <= H <= {MAX_H})")
    if D2 < 2 or D2 % 2 or D2 > 2 * MAX_D:
        raise ValueError(f"sea decoder: z's last dim {D2} must be 2d with 1 <= d <= {MAX_D}")
    w, C = K // 4, 2 * H
    want = dict(row_w=(2 * w, D2), row_b=(2 * w,), norm_in_w=(w,), norm_in_b=(w,),
                conv1_w=(C, C, 3, 3), conv1_b=(C,), conv2_w=(C, C, 3, 3), conv2_b=(C,),
                conv3_w=(H, C, 1, 1), conv3_b=(H,), norm_out_w=(K,), norm_out_b=(K,))
    for name, shape in want.items():
        if tuple(named[name].shape) != shape:
            raise ValueError(f"sea decoder: {name} has shape {tuple(named[name].shape)}, expected {shape} "
                             f"for H={H}, 2d={D2}, K={K}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (z, *named.values())):
        raise RuntimeError("sea decoder kernel is forward-only: an input requires grad while grad is enabled "
                           "(run under torch.no_grad() or use the torch module)")
    return B, H, T, D2


def _programs(device, njobs: int) -> int:
    if PROGRAMS is not None:
        n = PROGRAMS
    elif torch.device(device).type == "cuda":
        n = torch.cuda.get_device_properties(device).multi_processor_count * PROGRAMS_PER_SM
    else:
        n = 4
    return max(1, min(njobs, n))


def causal_decoder_forward(z, row_w, row_b, norm_in_w, norm_in_b, norm_in_eps, conv1_w, conv1_b, conv2_w,
                           conv2_b, conv3_w, conv3_b, norm_out_w, norm_out_b, norm_out_eps, K, *, precision=None):
    """z [B, H, T, 2d] fp32 -> CausalDecoder.forward(z) [B, H, T, K] fp32; see the module docstring.

    row_w [2w, 2d], row_b [2w] (nn.Linear(2d, 2w), w = K/4); norm_in_w, norm_in_b [w] and norm_in_eps
    (nn.LayerNorm(w)); conv1_w, conv2_w [2H, 2H, 3, 3] (raw or time-masked: kernel row 2 is never read),
    conv1_b, conv2_b [2H]; conv3_w [H, 2H, 1, 1], conv3_b [H]; norm_out_w, norm_out_b [K] and norm_out_eps
    (nn.LayerNorm(K)). The conv geometry (dilation 2, padding 2, causal time mask) is the module's, fixed.
    precision: the dots' input precision (None: the module's PRECISION). Forward only."""
    named = dict(row_w=row_w, row_b=row_b, norm_in_w=norm_in_w, norm_in_b=norm_in_b, conv1_w=conv1_w,
                 conv1_b=conv1_b, conv2_w=conv2_w, conv2_b=conv2_b, conv3_w=conv3_w, conv3_b=conv3_b,
                 norm_out_w=norm_out_w, norm_out_b=norm_out_b)
    B, H, T, D2, prec = check_call("sea decoder", z, named, K, precision, PRECISION, _PRECISIONS, decoder_usable)
    w = K // 4
    wp = pow2_block(w, floor=1)
    for name, val, lo in (("BLOCK_T", BLOCK_T, 8), ("BLOCK_C", BLOCK_C, 1), ("BLOCK_L", BLOCK_L, 16),
                          ("BLOCK_F", BLOCK_F, 16)):
        if val < lo or val & (val - 1):
            raise ValueError(f"sea decoder: {name}={val} must be a power of two >= {lo}")
    if BLOCK_C > BLOCK_T or BLOCK_L > BLOCK_T or BLOCK_C * wp < 16:
        raise ValueError(f"sea decoder: BLOCK_C={BLOCK_C}, BLOCK_L={BLOCK_L} must be <= BLOCK_T={BLOCK_T}, "
                         f"and BLOCK_C x {wp} (padded w) >= 16")
    out = _fresh((B, H, T, K), torch.float32, z.device)
    if B * T == 0:
        return out
    cp = pow2_block(2 * H)
    hp = pow2_block(H)
    nblk = triton.cdiv(T, BLOCK_T - HALO)
    njobs = B * nblk
    nprog = _programs(z.device, njobs)
    scratch = torch.empty(nprog * 2 * cp * BLOCK_T * wp, dtype=torch.float32, device=z.device)
    c = lambda t: t.contiguous()  # noqa: E731
    _decoder_fwd_kernel[(nprog,)](
        c(z), c(row_w), c(row_b), c(norm_in_w), c(norm_in_b), c(conv1_w), c(conv1_b), c(conv2_w), c(conv2_b),
        c(conv3_w), c(conv3_b), c(norm_out_w), c(norm_out_b), out, scratch,
        T, nblk, njobs, float(norm_in_eps), float(norm_out_eps),
        H=H, D2=D2, W=w, HP=hp, CP=cp, WP=wp, WL=pow2_block(w), BT=BLOCK_T, BC=BLOCK_C, BL=BLOCK_L,
        BF=BLOCK_F, HALO_=HALO, PREC=prec, num_warps=NUM_WARPS,
        num_stages=NUM_STAGES)
    return out


def check_call(what, z, named: dict, K: int, precision, default: str, allowed: tuple, usable):
    """The checks of a causal_decoder_forward call (this kernel's and kernels/sea_decoder_v2.py's): shapes and
    dtypes of z and the weights, the precision (None: the module's default), a device the kernel runs on.
    Returns (B, H, T, 2d, precision)."""
    B, H, T, D2 = _check(z, named, K)
    prec = default if precision is None else precision
    if prec not in allowed:
        raise ValueError(f"{what}: PRECISION={default!r}, precision={precision!r}: expected one of {allowed}")
    if not usable(z.device):
        raise RuntimeError(f"{what} kernel needs triton on CUDA (or TRITON_INTERPRET=1); got device {z.device}")
    return B, H, T, D2, prec


def module_args(dec) -> tuple:
    """causal_decoder_forward's arguments after z for a CausalDecoder `dec` (its weights; both decoder kernels take
    the same). Refuses a decoder whose conv geometry is not the causal one the kernels implement. The check reads
    the time masks' values (a device-to-host copy), so it runs once per decoder module and is remembered: later
    calls, including those inside a CUDA-graph capture (where such a copy is an error), skip it."""
    if not getattr(dec, "_fused_kernel_geometry_ok", False):
        _check_geometry(dec)
        dec._fused_kernel_geometry_ok = True
    return (dec.row.weight, dec.row.bias, dec.norm_in.weight, dec.norm_in.bias, dec.norm_in.eps,
            dec.conv1.weight, dec.conv1.bias, dec.conv2.weight, dec.conv2.bias, dec.conv3.weight, dec.conv3.bias,
            dec.norm_out.weight, dec.norm_out.bias, dec.norm_out.eps, dec.K)


def decoder_forward(z, dec, *, precision=None):
    """z [B, H, T, 2d] fp32 -> dec(z) [B, H, T, K] for a CausalDecoder `dec` (its weights, forward only; geometry
    checked once per module: module_args)."""
    return causal_decoder_forward(z, *module_args(dec), precision=precision)


def _check_geometry(dec) -> None:
    geometry = (("conv1", (3, 3), (2, 2), (2, 2)), ("conv2", (3, 3), (2, 2), (2, 2)),
                ("conv3", (1, 1), (1, 1), (0, 0)))
    for name, ks, dil, pad in geometry:
        conv = getattr(dec, name)
        if (tuple(conv.kernel_size) != ks or tuple(conv.dilation) != dil or tuple(conv.padding) != pad
                or tuple(conv.stride) != (1, 1) or conv.groups != 1 or conv.bias is None):
            raise ValueError(f"sea decoder: {name} is {conv}, expected kernel {ks}, dilation {dil}, padding "
                             f"{pad}, stride 1, bias (CausalDecoder's geometry)")
        mask = getattr(conv, "time_mask", None)
        if ks == (3, 3) and (mask is None or mask.reshape(3, 3).tolist() != [[1, 1, 1], [1, 1, 1], [0, 0, 0]]):
            raise ValueError(f"sea decoder: {name} has no causal time_mask zeroing kernel row 2")
