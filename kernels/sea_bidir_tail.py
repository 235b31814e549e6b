"""The bidirectional SEA estimator's tail in one Triton pass: the row softmax of the decoder's output and its sums
over blocks of R query rows, read straight from the last convolution's output at half the time resolution.

What: the bidirectional decoder (methods/sea/estimator.py, BidirectionalDecoder) ends in a nearest x2 time
upsampling, a 3x3 convolution to H channels and a nearest x2 width resize to K columns. With PARITY_CONV3 its last
convolution runs at half resolution with 2H output channels, channel p H + h holding output row 2i + p of head h
(the upsampling folded into the weights: BidirectionalDecoder.parity_weight; its bias, one constant per head and row,
left out: the softmax below does not see it). From that tensor y [B, 2H, T/2, W]
(W = K/2, any strides: channels-last from cuDNN, or contiguous) this kernel computes

    s[b, h, n, 2w + j] = sum over rows r = 2i + p of block n of  exp(y[b, pH+h, i, w]) / (2 sum_w' exp(y[..., w']))

for j = 0, 1: the softmax over the K = 2W columns of a row whose columns come in equal pairs (a column w of the
W-wide row appears twice after the width resize), summed over the block's rows. That is
`softmax(nearest_resize(logits, T, K)).reshape(B, H, T/R, R, K).sum(3)`, the estimator's pooled block scores
(Estimator.forward's pool=R), in fp32 [B, H, T/R, K].

Why: under torch.compile the same sums ran as two inductor kernels (a softmax pass and a reduction that recomputes it,
writing the resized fp32 logits in between): 0.062 ms at T = 8k on an H200 for 16.7 MB of bf16 input, a 0.005 ms read.

How: one program per (b, block n, group of heads; HEAD_GROUPS): it walks the block's R/2 half-rows in chunks of
CHUNK, loading a [CHUNK, W, 2 x heads] tile (the channels-last memory's order), takes the maximum and the sum of
exponentials over W for each (half-row, channel), adds the normalised row to a [W, 2 x heads] accumulator, and at the
end folds the two parities, halves the value (the column pair) and stores each head's K values as a contiguous row.
Padded W or head lanes are masked out.

Precision: y read in its dtype and converted exactly to fp32; exp, sums and the division in fp32 (as the torch path
on fp32 logits), summed in another order. Forward only.
"""
from __future__ import annotations

import torch

from kernels._buffers import fresh, pow2_block, triton_runs_on

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: tail_usable() is False
    triton = None
    tl = None

POISON_OUTPUTS = False           # tests: fresh outputs filled with NaN so a skipped write fails
CHUNK = 4                        # half-rows per load step (H200, 8k in 8 blocks of rows, one program a head: one
                                 # step of 32 half-rows took 0.090 ms for the 8 calls against 0.077 in steps of 4,
                                 # results/nvidia-h200/sea-presets/call3/)
NUM_WARPS = 4
HEAD_GROUPS = 4                  # programs per block of rows, each summing H / HEAD_GROUPS heads (both parities)
# ... raised (up to one head a program) where the blocks are too few to give this many programs: the estimator in
# blocks of 1024 rows (query_blocks) calls it on 16 blocks at a time, 64 programs for 132 SMs at 4 groups (H200,
# 8k in 8 blocks: 10.5 us a call against 17 us for all 128 blocks at once; with one head a program the 8 calls
# 0.083 -> 0.077 ms, results/nvidia-h200/sea-presets/call2/)
MIN_PROGRAMS = 256


if triton is not None:

    @triton.jit
    def _tail_kernel(Y, S, syb, syc, syt, syw, ssb, ssh, ssn, H, T2, W,
                     RH: tl.constexpr, CHUNK: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_H: tl.constexpr):
        n = tl.program_id(0).to(tl.int64)
        b = tl.program_id(1).to(tl.int64)
        h0 = tl.program_id(2) * BLOCK_H                                  # this program's heads h0 .. h0 + BLOCK_H - 1
        offs_i = tl.arange(0, CHUNK)
        offs_w = tl.arange(0, BLOCK_W)
        offs_c = tl.arange(0, BLOCK_C)                                   # channel p * BLOCK_H + h (padded order)
        p = offs_c // BLOCK_H
        h = h0 + offs_c % BLOCK_H
        cmask = h < H
        chan = p * H + h                                                  # the tensor's channel
        wmask = offs_w < W
        base = Y + b * syb
        acc = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        for i0 in range(0, RH, CHUNK):
            i = n * RH + i0 + offs_i                                      # half-rows of this block
            imask = (i0 + offs_i < RH) & (i < T2)
            ptr = base + i[:, None, None] * syt + offs_w[None, :, None] * syw + chan[None, None, :] * syc
            m3 = imask[:, None, None] & wmask[None, :, None] & cmask[None, None, :]
            y = tl.load(ptr, mask=m3, other=float("-inf")).to(tl.float32)
            y = tl.where(imask[:, None, None] & cmask[None, None, :], y, 0.0)   # padded rows / channels: finite
            mx = tl.max(y, axis=1)                                        # [CHUNK, BLOCK_C]
            e = tl.exp(y - mx[:, None, :])                                # padded W lanes: exp(-inf) = 0
            den = tl.sum(e, axis=1)
            prob = e / den[:, None, :]
            prob = tl.where(imask[:, None, None], prob, 0.0)
            acc += tl.sum(prob, axis=0)                                   # [BLOCK_W, BLOCK_C]
        acc = tl.sum(tl.reshape(acc, [BLOCK_W, 2, BLOCK_H]), axis=1) * 0.5   # both parities; a column pair
        accT = tl.trans(acc)                                              # [BLOCK_H, BLOCK_W]
        pair = tl.reshape(tl.join(accT, accT), [BLOCK_H, 2 * BLOCK_W])   # column 2w + j
        offs_h = h0 + tl.arange(0, BLOCK_H)
        offs_k = tl.arange(0, 2 * BLOCK_W)
        dst = b * ssb + offs_h[:, None].to(tl.int64) * ssh + n * ssn + offs_k[None, :]
        tl.store(S + dst, pair, mask=(offs_h[:, None] < H) & (offs_k[None, :] < 2 * W))


def tail_usable(device) -> bool:
    """True when the kernel can run on `device` (CUDA, or any device under TRITON_INTERPRET=1)."""
    return triton_runs_on(device, triton is not None)


def pooled_scores(y: torch.Tensor, *, heads: int, rows: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """y [B, 2H, T/2, W] (the parity-form last convolution output, channel p H + h = output row 2i + p of head h;
    any float dtype and strides) -> fp32 [B, H, T/R, 2W]: the softmax over the 2W columns of each of the T rows
    (each column w of y standing for the pair 2w, 2w + 1) summed over blocks of R = `rows` rows. See the module
    docstring. out: an fp32 [B, H, T/R, 2W] tensor with a unit last stride (a slice of a longer one: a caller
    running the estimator in blocks of rows) written in place of a new one, and returned."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if not tail_usable(y.device):
        raise RuntimeError(f"sea bidirectional tail needs triton on CUDA (or TRITON_INTERPRET=1); got {y.device}")
    if not isinstance(y, torch.Tensor) or y.dim() != 4 or not y.is_floating_point():
        raise ValueError(f"sea bidirectional tail: y must be a floating [B, 2H, T/2, W] tensor, got "
                         f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    B, C, T2, W = y.shape
    H, R = int(heads), int(rows)
    if H < 1 or C != 2 * H:
        raise ValueError(f"sea bidirectional tail: y has {C} channels, expected 2H = {2 * H}")
    if R < 2 or R % 2 or W < 1 or T2 < 1 or (2 * T2) % R:
        raise ValueError(f"sea bidirectional tail: rows={R} must be even and divide T = 2 x {T2}; W={W}")
    if torch.is_grad_enabled() and y.requires_grad:
        raise RuntimeError("sea bidirectional tail is forward-only: y requires grad while grad is enabled")
    NB = 2 * T2 // R
    if out is None:
        out = fresh((B, H, NB, 2 * W), torch.float32, y.device, poison=POISON_OUTPUTS)
    elif (not isinstance(out, torch.Tensor) or out.dtype != torch.float32 or out.device != y.device
          or tuple(out.shape) != (B, H, NB, 2 * W) or out.stride(-1) != 1):
        raise ValueError(f"sea bidirectional tail: out must be a float32 [B, H, T/R, 2W] = {(B, H, NB, 2 * W)} "
                         f"tensor on {y.device} with a unit last stride")
    groups = max(1, HEAD_GROUPS)
    while groups < H and NB * B * groups < MIN_PROGRAMS:
        groups *= 2
    bh = pow2_block(-(-H // groups), 1)                                 # heads per program
    bw = pow2_block(W, 1)
    chunk = min(CHUNK, pow2_block(R // 2, 1))
    _tail_kernel[(NB, B, triton.cdiv(H, bh))](y, out, y.stride(0), y.stride(1), y.stride(2), y.stride(3),
                          out.stride(0), out.stride(1), out.stride(2), H, T2, W,
                          RH=R // 2, CHUNK=chunk, BLOCK_W=bw, BLOCK_C=2 * bh,
                          BLOCK_H=bh, num_warps=NUM_WARPS)
    return out


def pooled_scores_reference(y: torch.Tensor, *, heads: int, rows: int) -> torch.Tensor:
    """What pooled_scores computes, in PyTorch ops on the full-resolution logits (tests; float32)."""
    B, C, T2, W = y.shape
    logits = y.float().view(B, 2, heads, T2, W).permute(0, 2, 3, 1, 4).reshape(B, heads, 2 * T2, W)
    logits = logits.repeat_interleave(2, dim=3)                          # [B, H, T, 2W]: the width resize
    probs = torch.softmax(logits, dim=-1)
    return probs.reshape(B, heads, 2 * T2 // rows, rows, 2 * W).sum(3)
