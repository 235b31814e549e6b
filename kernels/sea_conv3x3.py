"""A 3x3 convolution over channels-last 16-bit activations as one Triton implicit GEMM (bias and ReLU fused): the
bidirectional SEA decoder's convolutions without cuDNN's per-call extras.

What: for x [B, C, T, W] (bf16 or fp16, channels-last memory [B, T, W, C]), weights w [N, C, 3, 3] and bias [N] (any
float dtype), a time stride s in {1, 2} and zero padding 1 on both axes,

    out[b, n, i, j] = act(bias[n] + sum_{dy, dx, c} x[b, c, s i + dy - 1, j + dx - 1] w[n, c, dy, dx])

for i < T_out = (T - 1) // s + 1, j < W, act = ReLU or identity, one rounding to x's dtype at the end (fp32 sums):
`F.conv2d(x, w, bias, stride=(s, 1), padding=1)` (then ReLU), as cuDNN's fused convolution + bias + ReLU computes it
(methods/sea/estimator.py, conv_relu). The output is [B, N, T_out, W] in channels-last memory.

Why: at T = 8k (B=1, H=16: 64 channels, 64 columns) on an H200 the decoder's three cuDNN convolutions ran 46-48 us
each, and each came with a memset and two weight-cast kernels of its own (~1-2 us each plus the gaps between them
inside the replayed graph: results/nvidia-h200/sea-graph-call/call1/trace-graph-8192.json), ~8 us a convolution.
Here the weights are packed once for the call (`pack_weight`: [9, C, N] in x's dtype) and the convolution is one
launch.

How: grid (ceil(T_out / BLOCK_R), B). A program owns BLOCK_R output rows of one batch, all W columns and all N
output channels: an [M = BLOCK_R x BLOCK_W, BLOCK_N] fp32 accumulator. It walks the nine taps (dy, dx): for each,
the [M, C] input tile x[b, s i + dy - 1, j + dx - 1, :] (each row a contiguous run of C values, consecutive columns
adjacent in memory; rows and columns outside the image masked to zero) times the tap's packed [C, N] weights, one
tl.dot. Then bias, ReLU, one rounding, and the [M, N] tile stored as it lies in channels-last memory.

Precision: products of 16-bit values summed in fp32 (tensor cores on the GPU; under the Triton interpreter fp32 dots
of the same values), in another order than cuDNN's: the result may differ from cuDNN's by one 16-bit step where the
fp32 sum lies near a rounding boundary. Forward only.
"""
from __future__ import annotations

import torch

from kernels._buffers import fresh, pow2_block, triton_runs_on

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: conv_usable() is False
    triton = None
    tl = None

POISON_OUTPUTS = False           # tests: fresh outputs filled with NaN so a skipped write fails
BLOCK_R = 2                      # output rows per program (times the padded width: the tile's M)
NUM_WARPS = 4
NUM_STAGES = 3
DTYPES = (torch.bfloat16, torch.float16)
MAX_C = 128                      # one tap's input channels are one dot step
MAX_N = 128


if triton is not None:
    from kernels._tl_math import round_bf16

    @triton.jit
    def _conv_kernel(X, WP, BIAS, O, T, T_out, W, C, N, sxb, sxt, sxw,
                     STRIDE: tl.constexpr, RELU: tl.constexpr, HAS_BIAS: tl.constexpr, OUT_BF16: tl.constexpr,
                     EMU: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_N: tl.constexpr):
        rb = tl.program_id(0).to(tl.int64)
        b = tl.program_id(1).to(tl.int64)
        M: tl.constexpr = BLOCK_R * BLOCK_W
        m = tl.arange(0, M)
        i = rb * BLOCK_R + m // BLOCK_W                                   # output rows (i, j) of the tile, j fastest
        j = m % BLOCK_W
        rmask = (i < T_out) & (j < W)
        offs_c = tl.arange(0, BLOCK_C)
        cmask = offs_c < C
        offs_n = tl.arange(0, BLOCK_N)
        nmask = offs_n < N
        xb = X + b * sxb
        acc = tl.zeros([M, BLOCK_N], dtype=tl.float32)
        for tap in range(9):
            dy = tap // 3
            dx = tap % 3
            ti = i * STRIDE + dy - 1                                      # input row and column of this tap
            tj = j + dx - 1
            ok = rmask & (ti >= 0) & (ti < T) & (tj >= 0) & (tj < W)
            a = tl.load(xb + ti[:, None] * sxt + tj[:, None] * sxw + offs_c[None, :],
                        mask=ok[:, None] & cmask[None, :], other=0.0)
            wt = tl.load(WP + (tap * C + offs_c[:, None]) * N + offs_n[None, :],
                         mask=cmask[:, None] & nmask[None, :], other=0.0)
            if EMU:                                                       # exact products of the 16-bit values
                acc += tl.dot(a.to(tl.float32), wt.to(tl.float32), input_precision="ieee")
            else:
                acc += tl.dot(a, wt)
        if HAS_BIAS:
            acc += tl.load(BIAS + offs_n, mask=nmask, other=0.0)[None, :]
        if RELU:
            acc = tl.maximum(acc, 0.0)
        if OUT_BF16:
            out = round_bf16(acc, EMU).to(tl.bfloat16)                    # the interpreter's cast truncates
        else:
            out = acc.to(tl.float16)
        dst = O + ((b * T_out + i[:, None]) * W + j[:, None]) * N + offs_n[None, :]
        tl.store(dst, out, mask=rmask[:, None] & nmask[None, :])


def conv_usable(device) -> bool:
    """True when the kernel can run on `device` (CUDA, or any device under TRITON_INTERPRET=1)."""
    return triton_runs_on(device, triton is not None)


def pack_weight(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """w [N, C, 3, 3] -> [9, C, N] in `dtype` (tap dy * 3 + dx, then input channel), contiguous: conv3x3's layout.
    Differentiable torch ops (a permute and a cast), so a compiled caller fuses them into one small kernel."""
    if not isinstance(w, torch.Tensor) or w.dim() != 4 or tuple(w.shape[2:]) != (3, 3):
        raise ValueError(f"conv3x3 pack_weight: w must be [N, C, 3, 3], got "
                         f"{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}")
    N, C = w.shape[0], w.shape[1]
    return w.permute(2, 3, 1, 0).reshape(9, C, N).to(dtype).contiguous()


def conv3x3(x: torch.Tensor, wp: torch.Tensor, bias: torch.Tensor | None = None, *, stride: int = 1,
            relu: bool = False) -> torch.Tensor:
    """x [B, C, T, W] bf16 / fp16 (channels-last memory; other layouts are copied), wp = pack_weight(w, x.dtype)
    [9, C, N], bias [N] (any float dtype) or None -> act(conv2d(x, w, bias, stride=(stride, 1), padding=1)) as a
    channels-last [B, N, T_out, W] tensor of x's dtype (module docstring)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.dtype not in DTYPES:
        raise ValueError("conv3x3: x must be a bfloat16 or float16 [B, C, T, W] tensor")
    if not conv_usable(x.device):
        raise RuntimeError(f"conv3x3 needs triton on CUDA (or TRITON_INTERPRET=1); got {x.device}")
    B, C, T, W = x.shape
    if not isinstance(wp, torch.Tensor) or wp.dim() != 3 or wp.shape[0] != 9 or wp.shape[1] != C:
        raise ValueError(f"conv3x3: wp must be pack_weight(w) = [9, C={C}, N], got "
                         f"{tuple(wp.shape) if isinstance(wp, torch.Tensor) else type(wp).__name__}")
    N = wp.shape[2]
    if wp.dtype != x.dtype or wp.device != x.device:
        raise ValueError(f"conv3x3: wp must be {x.dtype} on {x.device} (pack_weight(w, x.dtype)), got {wp.dtype} "
                         f"on {wp.device}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (N,)
                             or not bias.is_floating_point() or bias.device != x.device):
        raise ValueError(f"conv3x3: bias must be a floating [{N}] tensor on {x.device} or None")
    if stride not in (1, 2):
        raise ValueError(f"conv3x3: stride={stride} (the time stride) must be 1 or 2")
    if not 1 <= C <= MAX_C or not 1 <= N <= MAX_N:
        raise ValueError(f"conv3x3: {C} input and {N} output channels; each must be 1 .. {MAX_C}")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, wp, bias)):
        raise RuntimeError("conv3x3 is forward-only: an input requires grad while grad is enabled")
    if not x.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    wp = wp.contiguous()
    T_out = (T - 1) // stride + 1 if T else 0
    out = fresh((B, T_out, W, N), x.dtype, x.device, poison=POISON_OUTPUTS)
    if B * T_out * W:
        bias_f = None if bias is None else bias.float().contiguous()
        bw = pow2_block(W, 1)
        br = max(BLOCK_R, pow2_block(-(-16 // bw), 1))                    # tl.dot needs >= 16 rows
        _conv_kernel[(triton.cdiv(T_out, br), B)](
            x, wp, wp if bias_f is None else bias_f, out, T, T_out, W, C, N,
            x.stride(0), x.stride(2), x.stride(3),
            STRIDE=stride, RELU=relu, HAS_BIAS=bias_f is not None, OUT_BF16=x.dtype == torch.bfloat16,
            EMU=not x.is_cuda, BLOCK_R=br, BLOCK_W=bw, BLOCK_C=pow2_block(C),
            BLOCK_N=pow2_block(N), num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    return out.permute(0, 3, 1, 2)
