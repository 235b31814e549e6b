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
launch. Measured there (graphs of 20 calls, results/nvidia-h200/sea-conv3x3/): 68 / 69 / 51 us for conv1 / conv2 /
conv3 against cuDNN's 54 / 53 / 54 with its extras; plain L1-cached loads (NUM_STAGES=1) slower still. So SEA keeps
cuDNN (methods/sea/estimator.py CONV_BACKEND); the kernel serves A/B runs and conv_pooled_scores below (the last
convolution fused with the estimator's tail: the same time at 8k, CONV_TAIL).

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
# conv_pooled_scores: programs a block of R rows (its R/2 half-rows split in equal parts), half-rows a tile, warps,
# pipeline stages. H200, SEA's 8k forward (R = 64): the kernel 0.084 / 0.066 / 0.071 / 0.065 / 0.066 ms with 1 / 2 /
# 4 / 8 / 16 parts (results/nvidia-h200/sea-conv3x3/call3/)
TAIL_SPLIT = 2
TAIL_BLOCK_R = 2
TAIL_NUM_WARPS = 4
TAIL_NUM_STAGES = 3


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


    @triton.jit
    def _conv_tail_kernel(X, WP, S, PART, TICKET, T2, W, C, H, NB, sxb, sxt, sxw,
                          RH: tl.constexpr, SPLIT: tl.constexpr, EMU: tl.constexpr, ROUND_BF16: tl.constexpr,
                          BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
                          BLOCK_H: tl.constexpr):
        n = tl.program_id(0).to(tl.int64)                                 # block of R = 2 RH rows
        part = tl.program_id(1).to(tl.int64)                              # this program's RH / SPLIT half-rows
        b = tl.program_id(2).to(tl.int64)
        RHS: tl.constexpr = RH // SPLIT
        M: tl.constexpr = BLOCK_R * BLOCK_W
        BLOCK_N: tl.constexpr = 2 * BLOCK_H                               # channel p * BLOCK_H + h (padded order)
        m = tl.arange(0, M)
        r = m // BLOCK_W                                                  # tile rows (r, j), j fastest
        j = m % BLOCK_W
        offs_r = tl.arange(0, BLOCK_R)
        offs_w = tl.arange(0, BLOCK_W)
        offs_c = tl.arange(0, BLOCK_C)
        cmask = offs_c < C
        offs_o = tl.arange(0, BLOCK_N)
        h = offs_o % BLOCK_H
        omask = h < H
        chan = (offs_o // BLOCK_H) * H + h                                # the packed weights' column p H + h
        N2 = 2 * H
        xb = X + b * sxb
        first = n * RH + part * RHS                                       # this program's first half-row
        acc_s = tl.zeros([BLOCK_W, BLOCK_N], dtype=tl.float32)
        for r0 in range(0, RHS, BLOCK_R):
            i = first + r0 + r                                            # half-rows of the tile
            rmask = (r0 + r < RHS) & (i < T2) & (j < W)
            acc = tl.zeros([M, BLOCK_N], dtype=tl.float32)
            for tap in range(9):
                ti = i + tap // 3 - 1
                tj = j + tap % 3 - 1
                ok = rmask & (ti >= 0) & (ti < T2) & (tj >= 0) & (tj < W)
                a = tl.load(xb + ti[:, None] * sxt + tj[:, None] * sxw + offs_c[None, :],
                            mask=ok[:, None] & cmask[None, :], other=0.0)
                wt = tl.load(WP + (tap * C + offs_c[:, None]) * N2 + chan[None, :],
                             mask=cmask[:, None] & omask[None, :], other=0.0)
                if EMU:
                    acc += tl.dot(a.to(tl.float32), wt.to(tl.float32), input_precision="ieee")
                else:
                    acc += tl.dot(a, wt)
            if ROUND_BF16:                                                # the convolution's output as stored
                acc = round_bf16(acc, EMU)
            else:
                acc = acc.to(tl.float16).to(tl.float32)
            y = tl.reshape(acc, [BLOCK_R, BLOCK_W, BLOCK_N])
            y = tl.where((offs_w < W)[None, :, None], y, float("-inf"))   # padded columns: no mass
            mx = tl.max(y, axis=1)                                        # [BLOCK_R, BLOCK_N]
            e = tl.exp(y - mx[:, None, :])
            prob = e / tl.sum(e, axis=1)[:, None, :]
            live = (r0 + offs_r < RHS) & (first + r0 + offs_r < T2)
            acc_s += tl.sum(tl.where(live[:, None, None], prob, 0.0), axis=0)
        acc2 = tl.sum(tl.reshape(acc_s, [BLOCK_W, 2, BLOCK_H]), axis=1) * 0.5   # both parities; a column pair
        accT = tl.trans(acc2)                                             # [BLOCK_H, BLOCK_W]
        pair = tl.reshape(tl.join(accT, accT), [BLOCK_H, 2 * BLOCK_W])   # column 2w + j
        offs_h = tl.arange(0, BLOCK_H)
        offs_k = tl.arange(0, 2 * BLOCK_W)
        smask = (offs_h[:, None] < H) & (offs_k[None, :] < 2 * W)
        dst = ((b * H + offs_h[:, None]) * NB + n) * (2 * W) + offs_k[None, :]
        if SPLIT == 1:
            tl.store(S + dst, pair, mask=smask)
        else:                                                             # partial sums; the last program adds them
            blk = b * NB + n
            cell = offs_h[:, None] * (2 * W) + offs_k[None, :]
            tl.store(PART + (blk * SPLIT + part) * H * 2 * W + cell, pair, mask=smask)
            tl.debug_barrier()                                            # every thread's stores, then ...
            ticket = tl.atomic_add(TICKET + blk, 1, sem="acq_rel", scope="gpu")   # ... one release / acquire
            if ticket == SPLIT - 1:
                tl.debug_barrier()
                total = tl.zeros([BLOCK_H, 2 * BLOCK_W], dtype=tl.float32)
                for q in range(SPLIT):                                    # part order: deterministic
                    total += tl.load(PART + (blk * SPLIT + q) * H * 2 * W + cell, mask=smask, other=0.0,
                                     cache_modifier=".cg")
                tl.store(S + dst, total, mask=smask)
                tl.store(TICKET + blk, 0)


def conv_usable(device) -> bool:
    """True when the kernel can run on `device` (CUDA, or any device under TRITON_INTERPRET=1)."""
    return triton_runs_on(device, triton is not None)


def _check_input(what: str, x, dims: str) -> None:
    """The activations' checks both entry points share: triton present, a 4-d 16-bit tensor where it can run."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.dtype not in DTYPES:
        raise ValueError(f"{what}: x must be a bfloat16 or float16 {dims} tensor")
    if not conv_usable(x.device):
        raise RuntimeError(f"{what} needs triton on CUDA (or TRITON_INTERPRET=1); got {x.device}")


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
    _check_input("conv3x3", x, "[B, C, T, W]")
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


def conv_pooled_scores(x: torch.Tensor, wp: torch.Tensor, *, heads: int, rows: int) -> torch.Tensor:
    """The bidirectional decoder's last convolution in its parity form and kernels/sea_bidir_tail.py's pooled block
    scores in one launch: x [B, C, T/2, W] bf16 / fp16 (conv2's output, channels-last), wp = pack_weight(w, x.dtype)
    [9, C, 2H] of BidirectionalDecoder.parity_weight's w (no bias: the softmax does not see it) -> fp32
    [B, H, T/R, 2W], equal to pooled_scores(conv3x3(x, wp), heads=H, rows=R) up to the order of fp32 sums (the
    convolution's output rounded to x's dtype first, as conv3x3 stores it). Grid (T/R blocks, TAIL_SPLIT, B): each
    program convolves RH / TAIL_SPLIT of a block's RH = R/2 half-rows, BLOCK_R at a time, adds their row softmaxes
    over the W columns, and (TAIL_SPLIT > 1) stores its partial sums and draws a ticket; the block's last program adds
    the parts in order (deterministic) and stores the block's scores."""
    _check_input("conv_pooled_scores", x, "[B, C, T/2, W]")
    B, C, T2, W = x.shape
    H, R = int(heads), int(rows)
    if not isinstance(wp, torch.Tensor) or tuple(wp.shape) != (9, C, 2 * H) or wp.dtype != x.dtype \
            or wp.device != x.device:
        raise ValueError(f"conv_pooled_scores: wp must be pack_weight(w, {x.dtype}) = [9, {C}, 2H = {2 * H}] on "
                         f"{x.device}, got {tuple(wp.shape) if isinstance(wp, torch.Tensor) else type(wp).__name__}")
    if H < 1 or not 1 <= C <= MAX_C or 2 * H > MAX_N:
        raise ValueError(f"conv_pooled_scores: {C} input channels and {2 * H} outputs; each must be 1 .. {MAX_C}")
    if R < 2 or R % 2 or W < 1 or T2 < 1 or (2 * T2) % R:
        raise ValueError(f"conv_pooled_scores: rows={R} must be even and divide T = 2 x {T2}; W={W}")
    if torch.is_grad_enabled() and (x.requires_grad or wp.requires_grad):
        raise RuntimeError("conv_pooled_scores is forward-only: an input requires grad while grad is enabled")
    if not x.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    wp = wp.contiguous()
    RH = R // 2
    split = max(1, min(TAIL_SPLIT, RH))
    while RH % split:                                                    # parts of equal size
        split -= 1
    NB = 2 * T2 // R
    out = fresh((B, H, NB, 2 * W), torch.float32, x.device, poison=POISON_OUTPUTS)
    if split > 1:
        part = torch.empty(B * NB * split * H * 2 * W, dtype=torch.float32, device=x.device)
        ticket = torch.zeros(B * NB, dtype=torch.int32, device=x.device)
    else:
        part = ticket = out
    bw = pow2_block(W, 1)
    br = max(TAIL_BLOCK_R, pow2_block(-(-16 // bw), 1))                  # tl.dot needs >= 16 rows
    _conv_tail_kernel[(NB, split, B)](
        x, wp, out, part, ticket, T2, W, C, H, NB, x.stride(0), x.stride(2), x.stride(3),
        RH=RH, SPLIT=split, EMU=not x.is_cuda, ROUND_BF16=x.dtype == torch.bfloat16, BLOCK_R=br, BLOCK_W=bw,
        BLOCK_C=pow2_block(C), BLOCK_H=pow2_block(H, 8), num_warps=TAIL_NUM_WARPS, num_stages=TAIL_NUM_STAGES)
    return out
