"""SEA's causal CNN decoder (methods/sea/estimator.py, CausalDecoder) forward as three plain Triton kernels.

What: the same function as kernels/sea_decoder.py (read its docstring for the math): for z [B, H, T, 2d] fp32
computes CausalDecoder.forward(z) -> [B, H, T, K] fp32, with w = K / 4 and C = 2H channels:

    x0[b, 2h+j, t, i] = LayerNorm_w(z[b, h, t] @ Wr^T + br)[j*w + i]         row Linear 2d -> 2w, norm_in
    x1 = relu(conv1(x0)),  x2 = relu(conv2(x1))                                 C -> C, 3x3, dilation 2, causal
    y[b, h, t, i]     = conv3(x2)                                                 1x1, C -> H, width w
    out[b, h, t, 4i+r] = (y[b,h,t,i] - mean_i y) / sqrt(var_i y + eps) * g[4i+r] + beta[4i+r]

The convs read time rows t-2, t (kernel rows 0, 1; row 2 is the module's time-masked row, never read, so raw
and masked weights give the same output) and width columns i-2, i, i+2, zero outside 0 <= time, 0 <= column < w.
Same API as kernels/sea_decoder.py: decoder_forward(z, dec, *, precision=None) and causal_decoder_forward(...),
with that module's argument checks and geometry checks (imported from it, so both refuse the same inputs).

Why a rewrite: the fused one-kernel version keeps x0 / x1 in a per-program L2 scratch between three stages
separated by CTA barriers; at 255 registers per thread it runs 2 programs (8 warps) per SM and each job is a
chain of ~110 dependent load -> dot steps, so it is latency bound: 1.54-1.64 ms at T = 65536 on an H200 against
~0.2 ms of traffic and ~0.27 ms of tf32x3 math; one-pass TF32 was not faster. Here the work is split at the
two places where a row needs its neighbours' results (the convs' time and width taps), and x0 / x1 go through
global memory instead: each kernel is then one independent tile per program, with no barriers, no job loop and
a small register footprint, so many programs share an SM and hide each other's load latency.

How (x0 and x1 are [B, C, T, w] channel planes: one (channel, time block) is BLOCK_M contiguous values):
  1. _rowlin_kernel, grid (T / BLOCK_T, B*H): a [BLOCK_T, 2d] tile of z @ the [2d, 2w] row weight as two dots
     (half j = 0, 1), + bias, norm_in over the w columns, stored as channels 2h, 2h+1 of x0 (two contiguous runs
     of BLOCK_T*w values). No halo: z is read exactly once.
  2. _conv1_kernel, grid (T / R, B), R = BLOCK_M / w time rows per program (4 at w = 16): acc [R*w positions,
     C] = sum over the six taps (kh, kw) of the shifted [R*w, C] tile of x0 (a masked load: width padding and
     time < 0 read as zero, like the module's padding) @ the tap's [C, C] weight tile; + bias, relu -> x1.
     The two-row time halo is just a load two rows up: x0 was finished by the previous launch.
  3. _conv2_out_kernel, same grid: conv2 the same way from x1, relu, conv3 as one [R*w, C] @ [C, H] dot, norm_out
     over the w columns (4 copies of each y_i have y's mean and biased variance: kernels/sea_decoder.py), the
     x4 width repeat times norm_out's affine, stored as H runs of R*K contiguous values of out.
x0 is dead once kernel 2 has run and C*w = H*K/2, so x0 lives in the first half of the output buffer (kernel 3
overwrites all of it); the only extra allocation is x1 (B*C*T*w values: 134 MB fp32 at T = 65536 and SEA's sizes,
half of `out`). With POISON_OUTPUTS (tests) x0 and x1 are separate NaN-filled buffers, so a skipped write fails.

Precision: PRECISION / precision "tf32x3" (default: three TF32 tensor-core products, close to fp32), "ieee"
(fp32 FMA) or "tf32" (one TF32 product, ~1e-3 relative) for every dot; "bf16": the row Linear stays tf32x3 but
x0 and x1 are stored in bf16 and the conv dots (conv1, conv2, conv3) take bf16 operands (fp32 accumulation):
the conv operands are rounded to bf16 anyway, so bf16 storage adds no error and halves the intermediate
traffic; outputs differ from the module by ~1e-2 (an option, not a default). Bias, ReLU and both LayerNorms run
in fp32. Under TRITON_INTERPRET=1 the interpreter's bf16 dots return garbage (triton 3.6 and 3.9), so there the
bf16-rounded operands are multiplied in fp32 (same rounding, exact products); its fp32 -> bf16 store truncates.

Limits: those of kernels/sea_decoder.py (K a multiple of 4, H <= 32, K <= 256, d <= 256). Forward only:
refuses when grad is enabled and any input requires grad.

Compiled offline for sm_90 (GPUTarget("cuda", 90, 64), default constants, with the divisibility-by-16 of the
pointers and of T that the JIT specialises at T = 65536; not run). Registers per thread / shared memory / resident
programs per SM (the limit in brackets), no spills in any precision:
                          triton 3.6           triton 3.9      programs/SM      per program
  kernel 1 (4 warps)      66 regs, 20 KiB      70 regs         7 (registers)    64 rows: 32 KiB of z
  kernel 2 (4 warps)      111 regs, 32 KiB     103 regs        4 (registers)    64 positions (4 rows)
  kernel 3 (4 warps)      109 regs, 32 KiB     109 regs        4 (registers)    64 positions, 16 KiB of out
At tf32x3; tf32 48-80, ieee 72-96, bf16 58-72 regs. Without the divisibility hints (T not a multiple of 16):
90 / 127 / 127 regs. All dots are Hopper wgmma (M = 64 positions); the feature loop of kernel 1 and the six-tap
loop of kernels 2-3 are software-pipelined (cp.async, 4 and 3 stages); stores are 16-byte vectors when w is a
power of two. (The fused kernel: 255 regs, 2 programs of 4 warps per SM, ~110 dependent steps per job.)

Cost model at B=1, H=16, d=64 (2d=128), K=64 (w=16), C=32, T=65536 on an H100/H200 (HBM ~4 TB/s reachable by a
streaming kernel; dense TF32 ~495 TFLOP/s peak, ~300-400 reachable with these N=32 wgmma tiles).
MEASURED on an H200 (results/nvidia-h200/sea-decoder-split/, `pytest -m gpu -s tests/test_sea_decoder_v2.py`, same
run): 3.375 ms at T = 65536 against 1.843 ms for the fused kernel (0.55x its speed), 12.6 against 6.27 ms at
262144; precision="bf16" 2.97 / 11.4 ms. The prediction below was 7.5x too optimistic; not profiled yet (the
first suspects: the six [C, C] tap tiles gathered from the raw stride-9 weights by every program, and 4 time rows
per program giving 16384 programs of short chains). It stays an option (sea decoder_backend=split).
The prediction, made before any GPU run:
  kernel 1: reads z 537 MB, writes x0 134 MB -> 0.17 ms at 4 TB/s. Math 65536*16*128*32*2 = 8.6e9 FLOP (x3 for
    tf32x3 = 2.6e10) ~ 0.07 ms, hidden under the memory time. 16384 programs; per program 8 pipelined 4 KiB z
    tiles with 3 in flight, so ~7 x 12 KiB = 84 KiB in flight per SM: enough to cover ~1 us of DRAM latency at
    4 TB/s (Little: 4 TB/s x 1 us / 132 SMs = 30 KiB per SM). Bandwidth bound: ~0.17-0.2 ms.
  kernel 2: reads x0 134 MB (of each program's six shifted [64, 32] tap tiles only 8 KiB are new data, the rest
    are L1/L2 hits) and writes x1 134 MB -> 0.07 ms of traffic; math 1.05e6 positions x 32 x 32 x 6 x 2 =
    1.3e10 FLOP, x3 = 3.9e10 at tf32x3 -> ~0.1-0.13 ms. Latency: 16384 programs / (132 SMs x 4) = 31 waves of a
    6-step chain (each step a tile load 2 taps ahead + 3 small wgmma) of ~3-4 us -> ~0.1-0.12 ms. So ~0.12 ms,
    tensor-core/latency bound at tf32x3 (~0.07 at bf16 or tf32).
  kernel 3: reads x1 134 MB, writes out 268 MB -> 0.1 ms; conv2 as kernel 2 plus conv3 (+5% math) and the norm:
    ~0.12-0.15 ms.
  total: ~1.34 GB of traffic (0.34 ms at 4 TB/s) and ~0.27 ms of tf32x3 math, overlapping within each kernel:
  ~0.17 + 0.12 + 0.14 = ~0.43 ms, plus 3 launch gaps (~5 us in a CUDA graph).
  PREDICTED: ~0.45 ms (range 0.35-0.7) at T = 65536 against 1.54-1.64 ms measured for kernels/sea_decoder.py
  (~3.5x), ~1.8 ms at T = 262144 (against 6.1; everything is linear in T). precision="bf16": x0 / x1 traffic
  halves (kernel 1 ~0.15 ms, kernels 2-3 ~0.06-0.08 each) -> ~0.3 ms.
Memory: one extra [B, 2H, T, w] buffer (x1): 134 MB fp32 / 67 MB bf16 at T = 65536, 537 / 268 MB at 262144
(the fused kernel needed a ~34 MB scratch). If it is slower than predicted, try in this order: NUM_STAGES_CONV
2 / 4; BLOCK_M 128 with NUM_WARPS_CONV 8 (fewer weight-tile loads per position: each program gathers the six
[C, C] tap tiles from the raw [C, C, 3, 3] weights, a stride-9 L1-resident read); BLOCK_T 128; precision="tf32"
or "bf16" to see how much of the time is conv math.
"""
from __future__ import annotations

import os

import torch

from kernels._buffers import fresh, pow2_block, triton_runs_on
from kernels.sea_decoder import check_call, module_args

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: the decoder kernels are unavailable
    triton = None
    tl = None

# Tests set this to True: outputs and intermediates are then NaN-filled separate buffers, so a skipped write fails.
POISON_OUTPUTS = False
PRECISION = "tf32x3"     # dot input precision: "tf32x3", "ieee", "tf32", or "bf16" (conv dots + x0/x1 in bf16)
BLOCK_T = 64             # kernel 1: time rows per program (power of two >= 16)
BLOCK_F = 16             # kernel 1: input features per pipelined dot step (power of two >= 16)
BLOCK_M = 64             # kernels 2-3: positions (time rows x padded width) per program (power of two >= 16)
NUM_WARPS_ROW = 4        # kernel 1
NUM_WARPS_CONV = 4       # kernels 2-3
NUM_STAGES_ROW = 4       # kernel 1: software pipelining of the feature loop (z tiles staged by cp.async)
NUM_STAGES_CONV = 3      # kernels 2-3: the same over the six-tap loop

_PRECISIONS = ("tf32x3", "ieee", "tf32", "bf16")


if triton is not None:

    @triton.jit
    def _mm(a, b, PREC: tl.constexpr, EMU: tl.constexpr):
        """a @ b with fp32 accumulation: bf16 operands for PREC == "bf16", else fp32 at input_precision PREC.
        EMU (the interpreter, whose bf16 dots return garbage): the bf16-rounded operands multiplied in fp32."""
        if PREC == "bf16":
            if EMU:
                return tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32),
                              input_precision="ieee")
            else:
                return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
        else:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PREC)

    @triton.jit
    def _rowlin_kernel(Z, RW, RB, G0, E0, X0, T, eps_in,
                       H: tl.constexpr, D2: tl.constexpr, W: tl.constexpr, WL: tl.constexpr,
                       BT: tl.constexpr, BF: tl.constexpr, PREC: tl.constexpr):
        """x0[b, 2h+j, t, :] = norm_in(z[b, h, t] @ Wr[j*w:(j+1)*w]^T + br[j*w:(j+1)*w]) for BT rows t."""
        pid_t = tl.program_id(0)
        bh = tl.program_id(1)                                             # b * H + h
        b = bh // H
        h = bh % H
        tt = pid_t * BT + tl.arange(0, BT)                                # [BT] time rows
        tin = tt < T
        offs_x = tl.arange(0, WL)
        xmask = offs_x < W
        offs_f = tl.arange(0, BF)
        zrow = Z + bh.to(tl.int64) * T * D2                               # z[b, h] [T, 2d]
        a0 = tl.zeros([BT, WL], dtype=tl.float32)
        a1 = tl.zeros([BT, WL], dtype=tl.float32)
        for f0 in range(0, D2, BF):
            ff = f0 + offs_f
            fmask = ff < D2
            zt = tl.load(zrow + tt[:, None] * D2 + ff[None, :], mask=tin[:, None] & fmask[None, :],
                         other=0.0)                                       # [BT, BF]
            wmask = fmask[:, None] & xmask[None, :]
            wr0 = tl.load(RW + offs_x[None, :] * D2 + ff[:, None], mask=wmask, other=0.0)        # [BF, WL]
            wr1 = tl.load(RW + (W + offs_x[None, :]) * D2 + ff[:, None], mask=wmask, other=0.0)
            a0 += tl.dot(zt, wr0, input_precision=PREC)                   # channel 2h
            a1 += tl.dot(zt, wr1, input_precision=PREC)                   # channel 2h + 1
        g0 = tl.load(G0 + offs_x, mask=xmask, other=0.0)
        e0 = tl.load(E0 + offs_x, mask=xmask, other=0.0)
        for j in tl.static_range(2):
            if j == 0:
                a = a0 + tl.load(RB + offs_x, mask=xmask, other=0.0)[None, :]
            else:
                a = a1 + tl.load(RB + W + offs_x, mask=xmask, other=0.0)[None, :]
            mean = tl.sum(tl.where(xmask[None, :], a, 0.0), axis=1) / W
            diff = tl.where(xmask[None, :], a - mean[:, None], 0.0)
            var = tl.sum(diff * diff, axis=1) / W
            xn = diff * (1.0 / tl.sqrt(var + eps_in))[:, None] * g0[None, :] + e0[None, :]   # [BT, WL]
            dst = X0 + (b * (2 * H) + 2 * h + j).to(tl.int64) * T * W     # channel plane [T, w] of x0
            if WL == W:                                                   # no column mask: wider stores
                smask = tin[:, None] & (offs_x >= 0)[None, :]
            else:
                smask = tin[:, None] & xmask[None, :]
            tl.store(dst + tt[:, None] * W + offs_x[None, :], xn.to(X0.dtype.element_ty), mask=smask)

    @triton.jit
    def _conv_taps(SRC, Wc, t0, T, offs_m, offs_c, cmask,
                   C: tl.constexpr, W: tl.constexpr, WP: tl.constexpr, BM: tl.constexpr, CP: tl.constexpr,
                   PREC: tl.constexpr, EMU: tl.constexpr):
        """[BM, CP] = sum over the six taps (kh: time t-2, t; kw: column i-2, i, i+2) of the shifted [BM, CP]
        position x channel tile of SRC ([C, T, W] planes of one batch) @ the tap's [CP ci, CP co] weight tile;
        zero outside 0 <= column < W and before time 0 (the module's padding)."""
        row = offs_m // WP
        col = offs_m % WP
        tt = t0 + row                                                     # [BM] time of the output position
        cplane = offs_c.to(tl.int64) * T * W                              # [CP] channel plane offsets
        woff = offs_c[None, :] * (C * 9) + offs_c[:, None] * 9             # [CP ci, CP co] -> w[co, ci, 0, 0]
        wmask = cmask[:, None] & cmask[None, :]
        acc = tl.zeros([BM, CP], dtype=tl.float32)
        for tap in range(6):
            kh = tap // 3
            kw = tap % 3
            ts = tt + (2 * kh - 2)                                        # source time row
            xc = col + (2 * kw - 2)                                       # source column
            ok = (ts >= 0) & (ts < T) & (xc >= 0) & (xc < W)
            xt = tl.load(SRC + cplane[None, :] + (ts * W + xc)[:, None], mask=ok[:, None] & cmask[None, :],
                         other=0.0)                                       # [BM, CP]
            wt = tl.load(Wc + (kh * 3 + kw) + woff, mask=wmask, other=0.0)                     # [CP, CP]
            acc += _mm(xt, wt, PREC, EMU)
        return acc

    @triton.jit
    def _conv1_kernel(X0, W1, B1, X1, T,
                      C: tl.constexpr, W: tl.constexpr, WP: tl.constexpr, CP: tl.constexpr, BM: tl.constexpr,
                      PREC: tl.constexpr, EMU: tl.constexpr):
        """x1 = relu(conv1(x0) + b1) for the BM / WP time rows of this program (all channels)."""
        R: tl.constexpr = BM // WP
        t0 = tl.program_id(0) * R
        b = tl.program_id(1)
        boff = b.to(tl.int64) * C * T * W
        offs_m = tl.arange(0, BM)
        offs_c = tl.arange(0, CP)
        cmask = offs_c < C
        acc = _conv_taps(X0 + boff, W1, t0, T, offs_m, offs_c, cmask, C, W, WP, BM, CP, PREC, EMU)
        x1 = tl.maximum(acc + tl.load(B1 + offs_c, mask=cmask, other=0.0)[None, :], 0.0)
        row = offs_m // WP
        col = offs_m % WP
        tt = t0 + row
        if WP == W:                                                       # no column mask: wider stores
            ok = tt < T
        else:
            ok = (tt < T) & (col < W)
        tl.store(X1 + boff + offs_c.to(tl.int64)[None, :] * T * W + (tt * W + col)[:, None],
                 x1.to(X1.dtype.element_ty), mask=ok[:, None] & cmask[None, :])

    @triton.jit
    def _conv2_out_kernel(X1, W2, B2, W3, B3, G1, E1, OUT, T, eps_out,
                          H: tl.constexpr, W: tl.constexpr, WP: tl.constexpr, CP: tl.constexpr,
                          HP: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr, EMU: tl.constexpr):
        """out[b, :, t] = norm_out(x4 repeat(conv3(relu(conv2(x1) + b2)))) for the BM / WP rows of this program."""
        C: tl.constexpr = 2 * H
        K: tl.constexpr = 4 * W
        R: tl.constexpr = BM // WP
        t0 = tl.program_id(0) * R
        b = tl.program_id(1)
        offs_m = tl.arange(0, BM)
        offs_c = tl.arange(0, CP)
        cmask = offs_c < C
        offs_h = tl.arange(0, HP)
        hmask = offs_h < H
        acc = _conv_taps(X1 + b.to(tl.int64) * C * T * W, W2, t0, T, offs_m, offs_c, cmask,
                         C, W, WP, BM, CP, PREC, EMU)
        x2 = tl.maximum(acc + tl.load(B2 + offs_c, mask=cmask, other=0.0)[None, :], 0.0)      # [BM, CP]
        w3 = tl.load(W3 + offs_h[None, :] * C + offs_c[:, None],
                     mask=cmask[:, None] & hmask[None, :], other=0.0)     # [CP c, HP h] = conv3_w[h, c]
        y = _mm(x2, w3, PREC, EMU) + tl.load(B3 + offs_h, mask=hmask, other=0.0)[None, :]         # [BM, HP]
        y = tl.reshape(y, (R, WP, HP))                                    # [rows, columns, heads]
        offs_x = tl.arange(0, WP)
        xm3 = (offs_x < W)[None, :, None]
        mean = tl.sum(tl.where(xm3, y, 0.0), axis=1) / W                  # [R, HP]
        diff = tl.where(xm3, y - mean[:, None, :], 0.0)
        var = tl.sum(diff * diff, axis=1) / W
        yn = diff * (1.0 / tl.sqrt(var + eps_out))[:, None, :]           # [R, WP, HP]
        offs_r4 = tl.arange(0, 4)
        kidx = 4 * offs_x[:, None] + offs_r4[None, :]                     # [WP, 4] output column 4i + r
        kmask = kidx < K
        g1 = tl.load(G1 + kidx, mask=kmask, other=0.0)
        e1 = tl.load(E1 + kidx, mask=kmask, other=0.0)
        o = yn[:, :, :, None] * g1[None, :, None, :] + e1[None, :, None, :]   # [R, WP, HP, 4]
        o = tl.reshape(tl.permute(o, (2, 0, 1, 3)), (HP, R * WP * 4))    # [HP, R*WP*4]: (row, 4i + r) per head
        q = tl.arange(0, R * WP * 4)
        tq = t0 + q // (WP * 4)                                           # time row of a flat index
        kq = q % (WP * 4)                                                 # its output column 4i + r
        optr = (OUT + (b.to(tl.int64) * H + offs_h.to(tl.int64))[:, None] * T * K
                + (tq * K + kq)[None, :])
        if WP == W:                                                       # no column mask: wider stores
            qmask = tq < T
        else:
            qmask = (tq < T) & (kq < K)
        tl.store(optr, o, mask=hmask[:, None] & qmask[None, :])


def decoder_usable(device) -> bool:
    """True when the kernels can run on `device`: CUDA, or any device under TRITON_INTERPRET=1."""
    return triton_runs_on(device, triton is not None)


def _pow2(name: str, val: int, lo: int) -> None:
    if not isinstance(val, int) or val < lo or val & (val - 1):
        raise ValueError(f"sea decoder v2: {name}={val!r} must be a power of two >= {lo}")


def causal_decoder_forward(z, row_w, row_b, norm_in_w, norm_in_b, norm_in_eps, conv1_w, conv1_b, conv2_w,
                           conv2_b, conv3_w, conv3_b, norm_out_w, norm_out_b, norm_out_eps, K, *, precision=None):
    """z [B, H, T, 2d] fp32 -> CausalDecoder.forward(z) [B, H, T, K] fp32; see the module docstring.

    Arguments as kernels.sea_decoder.causal_decoder_forward: row_w [2w, 2d], row_b [2w] (w = K/4); norm_in_w,
    norm_in_b [w], norm_in_eps; conv1_w, conv2_w [2H, 2H, 3, 3] (raw or time-masked: kernel row 2 is never
    read), conv1_b, conv2_b [2H]; conv3_w [H, 2H, 1, 1], conv3_b [H]; norm_out_w, norm_out_b [K], norm_out_eps.
    precision: "tf32x3", "ieee", "tf32" or "bf16" (None: the module's PRECISION). Forward only."""
    named = dict(row_w=row_w, row_b=row_b, norm_in_w=norm_in_w, norm_in_b=norm_in_b, conv1_w=conv1_w,
                 conv1_b=conv1_b, conv2_w=conv2_w, conv2_b=conv2_b, conv3_w=conv3_w, conv3_b=conv3_b,
                 norm_out_w=norm_out_w, norm_out_b=norm_out_b)
    B, H, T, D2, prec = check_call("sea decoder v2", z, named, K, precision, PRECISION, _PRECISIONS,
                                   decoder_usable)
    _pow2("BLOCK_T", BLOCK_T, 16)
    _pow2("BLOCK_F", BLOCK_F, 16)
    _pow2("BLOCK_M", BLOCK_M, 16)
    out = fresh((B, H, T, K), torch.float32, z.device, poison=POISON_OUTPUTS)
    if B * T == 0:
        return out
    w, C = K // 4, 2 * H
    wp = pow2_block(w, floor=1)
    bm = max(BLOCK_M, wp)                                                 # positions per conv program
    rows = bm // wp                                                       # time rows per conv program
    mid = torch.bfloat16 if prec == "bf16" else torch.float32             # x0 / x1 storage
    if POISON_OUTPUTS:
        x0 = fresh((B, C, T, w), mid, z.device, poison=True)
    else:                                                                 # C*w = H*K/2: x0 fits in out's buffer,
        x0 = out.view(-1).view(mid)[:B * C * T * w].view(B, C, T, w)      # and kernel 3 overwrites all of it
    x1 = fresh((B, C, T, w), mid, z.device, poison=POISON_OUTPUTS)
    c = lambda t: t.contiguous()  # noqa: E731
    _rowlin_kernel[(triton.cdiv(T, BLOCK_T), B * H)](
        c(z), c(row_w), c(row_b), c(norm_in_w), c(norm_in_b), x0, T, float(norm_in_eps),
        H=H, D2=D2, W=w, WL=pow2_block(w), BT=BLOCK_T, BF=min(BLOCK_F, pow2_block(D2)),
        PREC="tf32x3" if prec == "bf16" else prec, num_warps=NUM_WARPS_ROW, num_stages=NUM_STAGES_ROW)
    cp, hp = pow2_block(C), pow2_block(H)
    emu = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")       # emulate bf16 dots (see _mm)
    grid = (triton.cdiv(T, rows), B)
    conv = dict(W=w, WP=wp, CP=cp, BM=bm, PREC=prec, EMU=emu, num_warps=NUM_WARPS_CONV, num_stages=NUM_STAGES_CONV)
    _conv1_kernel[grid](x0, c(conv1_w), c(conv1_b), x1, T, C=C, **conv)
    _conv2_out_kernel[grid](x1, c(conv2_w), c(conv2_b), c(conv3_w), c(conv3_b), c(norm_out_w), c(norm_out_b),
                            out, T, float(norm_out_eps), H=H, HP=hp, **conv)
    return out


def decoder_forward(z, dec, *, precision=None):
    """z [B, H, T, 2d] fp32 -> dec(z) [B, H, T, K] for a CausalDecoder `dec` (its weights, forward only): the same
    geometry check and arguments as kernels/sea_decoder.py (module_args)."""
    return causal_decoder_forward(z, *module_args(dec), precision=precision)
