"""SEA's attention-mask estimator: FAVOR+ context -> MLP encoder -> CNN decoder -> compressed logits.

Input q, k, v [B, H, T, d]; output logits [B, H, T, K] (softmax over K gives A_hat) and two scalers
(s_prob, s_mix) [B, H, T, 1]. Runs in float32 whatever the input dtype. Weights are shared across heads
except the decoder convolutions, whose channels are heads (so the module needs H).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from methods.sea.favor import (favor_attention, favor_causal_carry, needs_grad, orthogonal_random_features,
                               performer_backend)
from methods.sea import precision as sea_precision
from methods.sea.precision import tf32_linear, torch_precision


DEC_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_MODES = ("none", "estimator")
# estimator_precision -> the tl.dot precision of the estimator's Triton kernels (None: each kernel's default, tf32x3)
PRECISIONS = {"fp32": None, "tf32": "tf32"}
COMPILE_BACKEND = "inductor"     # torch.compile backend of compile="estimator" (tests may use "aot_eager")
# compile="estimator" with gradients: the decoder in a compiled graph of its own (see Estimator._finish) when True
DECODER_OWN_GRAPH = True
# the fused causal front computes the decoder's row-wise head (row projection, norm_in) in its epilogue when the
# decoder runs under autocast as PyTorch modules (kernels/sea_favor_encoder.py, head=); False: it writes z
FUSED_HEAD = True
# The encoder kernel (kernels/sea_encoder.py) writes z in the decoder's autocast dtype when the PyTorch decoder runs
# under 16-bit autocast (estimator_dtype bf16 / fp16), whose first Linear casts z to that dtype anyway (the same
# rounding, half the bytes, no cast kernel); fp32 z when False. A switch for same-run A/B measurements.
ENCODER_Z_16BIT = True
# The bidirectional decoder holds its convolutions' activations channels-last (NHWC memory: the row projection's
# output rearranged once into that layout, the x2 time repeat done in it) when True; the default layout (NCHW, which
# cuDNN's NHWC kernels receive through permuting copies) when False; "auto": channels-last for CUDA tensors. Same
# values up to the convolutions' summation order (so on CPU, where the query-block decoder windows
# (methods/sea/bidir_blocks.py: decode_window) sum in the NCHW order, auto keeps NCHW). H200, bf16, SEA fast + shared
# keys, bidirectional 64k: kernels 7.18 -> 6.85 ms, CUDA-event wall 7.38 -> 7.03 ms (profiles in one call:
# results/nvidia-h200/sea-bidir-mix/call7/).
BIDIR_CHANNELS_LAST = "auto"
# The bidirectional decoder's last convolution (3x3 after a nearest x2 time upsampling) as one 3x3 convolution at half
# resolution with 2H outputs, the upsampling folded into its weights (BidirectionalDecoder.parity_weight): no
# upsampled [B, 4H, T, K/2] tensor. The same function; under 16-bit autocast the folded weights w1 + w2 / w0 + w1
# round to bf16 once rather than each term (a change of one bf16 rounding of those weights). False: the old form.
PARITY_CONV3 = True
# Bidirectional calls with pooled block scores (pool=R) take them from kernels/sea_bidir_tail.py (the row softmax and
# the block sums read straight from the parity-form last convolution, one launch): True, False, or "auto" (on CUDA).
BIDIR_TAIL = "auto"
# ... its parity-form input without conv3's bias (a constant per head and row: the softmax does not see it), so that
# inductor does not add it in a pass of its own: True; False adds it (the A/B switch).
TAIL_BIAS_FREE = True
# The bidirectional encoder, scaler head and decoder row projection in one kernel (kernels/sea_bidir_head.py, all heads
# of a block of rows per program, writing the first convolution's channels-last input) in place of the encoder kernel,
# the row projection's GEMM and the permuting copy: True, False, or "auto" (on CUDA). Where it serves: the Triton
# encoder, a bf16 decoder holding channels-last activations, no gradient (Estimator.uses_bidir_head). On an H200 at
# 8k the same time as the three launches (0.146 against 0.143 ms) and 256 MiB less peak memory at 64k
# (results/nvidia-h200/sea-decoder-ends/). (The sixteenth session's front, one head per program with the Performer's
# query pass in front, took 1.62 ms for ~0.24 ms of launches: its scattered stores; removed in the eighteenth.)
BIDIR_HEAD = "auto"
# The bidirectional Performer's values [identity ; v] built in bf16 when its products take bf16 operands (the
# products round them to bf16 anyway; half the bytes written and read): True; False keeps them fp32 (the A/B switch).
# Only the feat_eps term's sum of the values sees the rounding (1e-4 times a bf16 rounding).
VALS_BF16 = True
# performer_dash=fp16 with identity_values=kernel: refused (an unsupported cell in the harness) until isolated;
# REFUSE_FP16_DASH_WITH_IDENTITY=False lets a diagnosis run it (scripts/profile_sea.py --set ...).
REFUSE_FP16_DASH_WITH_IDENTITY = True
FP16_DASH_WITH_IDENTITY = (
    "performer_dash=fp16 with identity_values=kernel: the fused Performer with both (and encoder_operands=bf16) hit "
    "an illegal memory access at T=65536 on an H200, where each option alone ran "
    "(results/nvidia-h200/sea-bf16-encoder/call7/); refused until isolated: take one of the two")
# Rows on each side of a block of query rows that Estimator._forward_rows computes and drops. The bidirectional
# decoder's convolutions (conv1 3x3 stride 2 over time, conv2 and the parity-form conv3 3x3 at half resolution, all
# with zero padding 1) see a window's edge as padding where the sequence goes on: at its start conv1's first half
# row reads a padding row, so conv2's first two and conv3's first three half rows differ from the whole call's (6
# rows); at its end (an even number of rows) conv1 reads no padding, conv2's last half row and conv3's last two do
# (4 rows). Even, so that the window's half rows are the whole call's.
ROW_HALO = 6
# cuDNN's convolutions index a tensor with 32-bit offsets: a bidirectional decoder input of more elements (B x 4H x T x
# K/2: T > 512k at H = 16, K = 128) hit an illegal memory access on an H200 (results/nvidia-h200/sea-rows/call3/),
# so the decoder refuses such an input in words and _forward_rows keeps its blocks below it.
CONV_MAX_ELEMENTS = 2 ** 31 - 1
RECOMPILE_LIMIT = 64             # each estimator instance and shape is one more compiled entry of forward()


def compiled(fn):
    """torch.compile(fn) for compile="estimator": static shapes (each T compiles once), and a recompile limit
    raised so that a sweep building many layers keeps compiling instead of running uncompiled past the default
    limit of 8 entries; past RECOMPILE_LIMIT dynamo raises (fail_on_recompile_limit_hit) rather than fall back to
    eager silently."""
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)
    dynamo_config.fail_on_recompile_limit_hit = True
    # Donated buffers let a compiled backward free its saved tensors early, but then the graph cannot be walked
    # twice (retain_graph=True, as SEA's backward stage profile does): off, at a small memory cost in training.
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
    return torch.compile(fn, backend=COMPILE_BACKEND, dynamic=False)


def identity_values(valid: torch.Tensor | None, B: int, T: int, d: int, device) -> torch.Tensor:
    """eye(d) bilinearly interpolated to T rows over the valid tokens: [B, T, d].

    Valid token of rank j (0..L-1) sits at y = j (d-1)/(L-1) in eye's row axis, so its row is
    relu(1 - |y - c|) for column c. Padded rows are zero."""
    if valid is None:
        valid = torch.ones(B, T, dtype=torch.bool, device=device)
    vf = valid.float()
    rank = vf.cumsum(-1) - 1                                            # [B, T]
    L = vf.sum(-1, keepdim=True)                                        # [B, 1]
    y = rank / (L - 1).clamp(min=1) * (d - 1)                           # [B, T]
    return _identity_hat(y, d) * vf[..., None]                          # [B, T, d]


def _identity_hat(y: torch.Tensor, d: int) -> torch.Tensor:
    """relu(1 - |y - c|) for the d columns c: rows at eye-row positions y [...] -> [..., d] float32."""
    cols = torch.arange(d, device=y.device, dtype=torch.float32)
    return torch.relu(1 - (y[..., None] - cols).abs())


def identity_rows(T: int, d: int, device, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Rows start .. stop - 1 (default all T) of identity_values(None, ., T, d): [stop - start, d], the same float32
    formula with every token valid (rank = t, L = T), as pointwise operations of two aranges: under compile="estimator"
    the forward makes them inside its graph, where they fuse into the values' concatenation (no launches of their
    own; identity_values' cumsum, sums and ~13 other launches ran eagerly before every bidirectional call)."""
    stop = T if stop is None else stop
    rank = torch.arange(start, stop, device=device, dtype=torch.float32)
    return _identity_hat(rank / max(T - 1, 1) * (d - 1), d)              # [stop - start, d]


class CausalConv2d(nn.Conv2d):
    """Conv over (time, width) whose kernel rows that would read future time steps are zeroed."""

    def __init__(self, cin, cout, kernel, dilation=1):
        pad = (dilation * (kernel - 1) // 2,) * 2
        super().__init__(cin, cout, kernel, padding=pad, dilation=dilation)
        mask = torch.ones(1, 1, kernel, kernel)
        mask[:, :, kernel // 2 + 1:, :] = 0                             # rows reading t + offset > t
        self.register_buffer("time_mask", mask, persistent=False)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.time_mask, self.bias, self.stride, self.padding, self.dilation)


def nearest_resize(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """F.interpolate(x, size=(rows, cols), mode="nearest") on [B, C, R, S] by index selection: the same source
    index floor(dst * (in / out)) in float32, without the CUDA upsampling kernel's limit on tensor size (which
    refused T = 256k)."""
    def take(x, dim, out):
        n = x.shape[dim]
        if n == out:
            return x
        if out % n == 0:
            return x.repeat_interleave(out // n, dim=dim)
        scale = torch.tensor(n / out, dtype=torch.float32)
        src = (torch.arange(out, dtype=torch.float32) * scale).floor().long().clamp_(max=n - 1)
        return x.index_select(dim, src.to(x.device))

    return take(take(x, 2, rows), 3, cols)


# The bidirectional decoder's first two convolutions and their ReLU as cuDNN's fused convolution + bias + ReLU
# (torch.cudnn_convolution_relu, one kernel each) when the activations are 16-bit channels-last CUDA tensors and no
# gradient is needed: True / False / "auto" (the same: the op is CUDA-only). On an H200 at SEA's widths (bf16, 64
# channels, 64 columns) 0.053 against 0.115 ms for conv1 + ReLU at T = 8k and 0.37 against 0.47 ms (compiled) at 64k
# (results/nvidia-h200/sea-decoder-ends/call3/). Its output rounds once after bias and ReLU, so values may differ from
# the separate ops' by one bf16 step.
CONV_RELU = "auto"
# Tried (twenty-fourth session, results/nvidia-h200/sea-conv3x3/; the code at commit a776a1b): the three
# convolutions as a Triton implicit GEMM (bias and ReLU fused, packed weights) took 68 / 69 / 51 us for conv1 / conv2 /
# conv3 at 8k on an H200 against cuDNN's 54 / 53 / 54 with its memset and weight casts (SEA's 8k kernels 0.605 ->
# 0.635 ms); the last convolution fused with kernels/sea_bidir_tail.py's softmax and block sums, the same time at 8k
# (0.602 -> 0.603 ms), 3.887 -> 3.870 at 64k. Both removed: cuDNN and the separate tail kernel stay.


@torch.library.custom_op("sea::conv_relu", mutates_args=(),
                         schema="(Tensor x, Tensor w, Tensor b, int[] stride, int[] padding) -> Tensor")
def conv_relu(x, w, b, stride, padding):
    """relu(conv2d(x, w, b, stride, padding)) by cuDNN's fused kernel (a custom op, so torch.compile keeps it in
    the estimator's graph as an external call, its output layout given by the fake implementation below)."""
    return torch.cudnn_convolution_relu(x, w, b, stride, padding, [1, 1], 1)


@conv_relu.register_fake
def _conv_relu_fake(x, w, b, stride, padding):
    B, _, Hx, Wx = x.shape
    kh, kw = w.shape[2], w.shape[3]
    shape = (B, w.shape[0], (Hx + 2 * padding[0] - kh) // stride[0] + 1, (Wx + 2 * padding[1] - kw) // stride[1] + 1)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def uses_conv_relu(x: torch.Tensor, *modules: nn.Module) -> bool:
    """Does the bidirectional decoder take conv_relu for x (CONV_RELU)?"""
    if CONV_RELU is False or not x.is_cuda or x.dtype not in (torch.bfloat16, torch.float16):
        return False
    return x.is_contiguous(memory_format=torch.channels_last) and not needs_grad(x, *(p for m in modules
                                                                                         for p in m.parameters()))


def interleave_parity(y: torch.Tensor, H: int) -> torch.Tensor:
    """The parity-form convolution output [B, 2H, n, W] (channel p H + h = row 2i + p of head h; see
    BidirectionalDecoder.parity_weight) as rows [B, H, 2n, W]."""
    B, _, n, W = y.shape
    return y.view(B, 2, H, n, W).permute(0, 2, 3, 1, 4).reshape(B, H, 2 * n, W)


def channels_last(x: torch.Tensor) -> bool:
    """Does the bidirectional decoder hold its activations channels-last for this tensor (BIDIR_CHANNELS_LAST)?"""
    return BIDIR_CHANNELS_LAST is True or (BIDIR_CHANNELS_LAST == "auto" and x.is_cuda)


class BidirectionalDecoder(nn.Module):
    def __init__(self, d: int, H: int, K: int):
        super().__init__()
        self.H, self.K = H, K
        self.row = nn.Linear(2 * d, (K // 2) * 4)
        c = 4 * H
        self.conv1 = nn.Conv2d(c, c, 3, stride=(2, 1), padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.conv3 = nn.Conv2d(c, H, 3, padding=1)

    def forward(self, z, *, parity: bool = False):                      # z [B, H, T, 2d]
        return self.body(self.head(z), parity=parity)

    def head(self, z):
        """The row-wise part: z [B, H, T, 2d] -> the first convolution's input [B, 4H, T, K/2] (channel h * 4 + i;
        channels-last memory where channels_last says; kernels/sea_bidir_head.py writes it in that layout)."""
        B, H, T, _ = z.shape
        x = self.row(z).view(B, H, T, 4, self.K // 2)                   # [B, H, T, 4, K/2]
        if channels_last(z):                                             # channel h * 4 + i, stored last
            return x.permute(0, 2, 4, 1, 3).reshape(B, T, self.K // 2, 4 * H).permute(0, 3, 1, 2)
        return x.permute(0, 1, 3, 2, 4).reshape(B, 4 * H, T, self.K // 2)  # [B, 4H, T, K/2]

    def parity_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """conv3 after the nearest x2 time upsampling, as one 3x3 convolution at half resolution with 2H outputs:
        output row 2i of the upsampled convolution reads upsampled rows 2i-1, 2i, 2i+1 = half rows i-1, i, i, so its
        kernel rows are (w0, w1 + w2, 0); row 2i+1 reads half rows i, i, i+1: (0, w0 + w1, w2). Channel p * H + h
        holds row 2i + p of head h; the zero padding of both forms lines up (half row -1 / ceil(T/2) is the
        upsampled row -1 / 2 ceil(T/2))."""
        w, b = self.conv3.weight, self.conv3.bias                        # [H, C, 3, 3], [H]
        zero = torch.zeros_like(w[:, :, 0])
        even = torch.stack([w[:, :, 0], w[:, :, 1] + w[:, :, 2], zero], dim=2)
        odd = torch.stack([zero, w[:, :, 0] + w[:, :, 1], w[:, :, 2]], dim=2)
        return torch.cat([even, odd], dim=0), torch.cat([b, b])

    def body_weights(self, x: torch.Tensor) -> dict:
        """The convolutions' weights as body(x) applies them to tensors like x (x's dtype, which under autocast is
        the dtype autocast would cast them to; channels-last where conv_relu takes them; conv3 in its parity form
        under PARITY_CONV3), made once for a caller that runs body on many blocks of rows (body(weights=...)): the
        same values as body's own casts, without their launches in every block."""
        dt = x.dtype
        fmt = torch.channels_last if uses_conv_relu(x, self.conv1, self.conv2) else torch.contiguous_format
        out = {name: (conv.weight.to(dt, memory_format=fmt), conv.bias.to(dt))
               for name, conv in (("conv1", self.conv1), ("conv2", self.conv2))}
        w, b = self.parity_weight() if PARITY_CONV3 else (self.conv3.weight, self.conv3.bias)
        # in x's layout: cuDNN copies a weight of the other layout on every call (once a block of rows)
        last = x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
        out["conv3"] = (w.to(dt, memory_format=torch.channels_last if last else torch.contiguous_format), b.to(dt))
        return out

    def body(self, x, *, parity: bool = False, weights: dict | None = None):   # x [B, 4H, T, K/2]
        """The convolutions -> logits [B, H, T, K]; parity=True (needs PARITY_CONV3): the last convolution's output
        in its parity form [B, 2H, ceil(T/2), K/2] (see parity_weight), before the interleave and width resize, and
        without its bias (TAIL_BIAS_FREE): one constant per head, the same for a row's K logits, which their softmax
        does not see (what parity=True serves: kernels/sea_bidir_tail.py). Under inductor the bias would be a
        separate pass over the output (0.012 ms at 8k on an H200)."""
        T = x.shape[2]
        if x.is_cuda and x.numel() > CONV_MAX_ELEMENTS:
            raise ValueError(f"sea bidirectional decoder: its input has {x.numel()} elements, more than cuDNN's "
                             f"32-bit offsets reach ({CONV_MAX_ELEMENTS}); with shared_keys, query_blocks runs the "
                             "estimator in blocks of rows")
        last = channels_last(x)
        # weights: as cast for x by body_weights (made once by a caller running many blocks of rows, or here for
        # cuDNN's fused ReLU); None: the modules themselves (their hooks run), autocast casting their weights
        fused = uses_conv_relu(x, self.conv1, self.conv2)
        wts = self.body_weights(x) if weights is None and fused else weights
        if wts is None:
            x = F.relu(self.conv1(x))                                   # [B, 4H, ceil(T/2), K/2]
            x = F.relu(self.conv2(x))
            w3, b3 = self.parity_weight() if PARITY_CONV3 else (None, None)
        else:
            (w1, b1), (w2, b2), (w3, b3) = wts["conv1"], wts["conv2"], wts["conv3"]
            if fused:                                                    # 16-bit, channels-last: fused ReLU
                x = conv_relu(conv_relu(x, w1, b1, [2, 1], [1, 1]), w2, b2, [1, 1], [1, 1])
            else:
                x = F.relu(F.conv2d(F.relu(F.conv2d(x, w1, b1, stride=(2, 1), padding=1)), w2, b2, padding=1))
        if PARITY_CONV3:                                                 # no upsampled [B, 4H, T, K/2] tensor
            if parity:                                                   # softmax-invariant bias left out
                return F.conv2d(x, w3, None if TAIL_BIAS_FREE else b3, padding=1)   # [B, 2H, ceil(T/2), K/2]
            y = interleave_parity(F.conv2d(x, w3, b3, padding=1), self.H)  # [B, H, 2 ceil(T/2), K/2]
            return nearest_resize(y, T, self.K)                          # [B, H, T, K]
        if parity:
            raise ValueError("BidirectionalDecoder.body(parity=True) needs PARITY_CONV3")
        if last:                                                         # nearest x2 in the NHWC memory
            x = x.permute(0, 2, 3, 1).repeat_interleave(2, dim=1).permute(0, 3, 1, 2)
        else:
            x = x.repeat_interleave(2, dim=2)                           # [B, 4H, 2ceil(T/2), K/2]: nearest x2
        x = self.conv3(x) if wts is None else F.conv2d(x, w3, b3, padding=1)   # [B, H, ., K/2]
        return nearest_resize(x, T, self.K)                             # [B, H, T, K]


class CausalDecoder(nn.Module):
    def __init__(self, d: int, H: int, K: int):
        super().__init__()
        self.H, self.K = H, K
        w = K // 4
        self.row = nn.Linear(2 * d, w * 2)
        self.norm_in = nn.LayerNorm(w)
        self.conv1 = CausalConv2d(2 * H, 2 * H, 3, dilation=2)
        self.conv2 = CausalConv2d(2 * H, 2 * H, 3, dilation=2)
        self.conv3 = CausalConv2d(2 * H, H, 1)
        self.norm_out = nn.LayerNorm(K)

    def forward(self, z):                                               # z [B, H, T, 2d]
        return self.body(self.head(z))

    def head(self, z):
        """The row-wise part: z [B, H, T, 2d] -> the first convolution's input [B, 2H, T, K/4] (the fused causal
        front can compute it in its epilogue: kernels/sea_favor_encoder.py, head=)."""
        B, H, T, _ = z.shape
        w = self.K // 4
        x = self.row(z).view(B, H, T, 2, w)                             # [B, H, T, 2, K/4]
        x = x.permute(0, 1, 3, 2, 4).reshape(B, 2 * H, T, w)            # [B, 2H, T, K/4]
        return self.norm_in(x)

    def body(self, x):                                                  # x [B, 2H, T, K/4]
        T = x.shape[2]
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        # conv3 is 1 x 1 (a map over channels at each position), so it commutes with the nearest x4 widening:
        # applied before it, on a quarter of the positions (the same products and sums per output value)
        x = self.conv3(x).repeat_interleave(4, dim=3)                   # [B, H, T, K]
        if x.shape[-1] != self.K:
            x = nearest_resize(x, T, self.K)
        return self.norm_out(x)


class Estimator(nn.Module):
    def __init__(self, *, d: int, H: int, K: int, causal: bool, nbf: float, max_len: int, seed: int,
                 dec_dtype: str = "fp32", performer_backend: str = "auto", performer_dtype: str = "fp32",
                 scaler_input: str = "shared", encoder_backend: str = "auto", compile: str = "none",
                 decoder_backend: str = "auto", precision: str = "fp32", encoder_operands: str = "fp32",
                 performer_dash: str = "auto", identity_values: str = "concat"):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"estimator precision {precision!r}: expected one of {tuple(PRECISIONS)}")
        self.precision = precision
        if encoder_operands not in ("fp32", "bf16"):
            raise ValueError(f"encoder operands {encoder_operands!r}: expected fp32 or bf16")
        if encoder_operands == "bf16" and causal:
            raise ValueError("encoder_operands=bf16 is the bidirectional estimator's (its Performer output and "
                             "encoder products in bf16); the causal fused front never writes that output")
        self.encoder_operands = encoder_operands
        if performer_dash not in ("auto", "fp16") or identity_values not in ("concat", "kernel"):
            raise ValueError(f"performer_dash={performer_dash!r} (auto or fp16), identity_values={identity_values!r} "
                             "(concat or kernel)")
        if causal and (performer_dash != "auto" or identity_values != "concat"):
            raise ValueError("performer_dash and identity_values are the bidirectional fused Performer kernel's "
                             "options (kernels/favor_dense.py); causal estimators take their defaults")
        if performer_dash == "fp16" and precision != "tf32":
            raise ValueError("performer_dash=fp16 rounds the projections' operands as one-pass TF32 does: it needs "
                             "estimator_precision=tf32")
        if performer_dash == "fp16" and identity_values == "kernel" and REFUSE_FP16_DASH_WITH_IDENTITY:
            raise ValueError(FP16_DASH_WITH_IDENTITY)
        self.performer_dash, self.identity_values = performer_dash, identity_values
        self.last_dash = self.last_identity = "not-run"
        self.d, self.H, self.K, self.causal = d, H, K, causal
        if dec_dtype not in DEC_DTYPES:
            raise ValueError(f"estimator dtype {dec_dtype!r}: expected one of {tuple(DEC_DTYPES)}")
        self.dec_dtype, self.performer_backend = dec_dtype, performer_backend
        self.performer_dtype = performer_dtype
        if scaler_input not in ("shared", "detached"):
            raise ValueError(f"scaler input {scaler_input!r}: expected shared or detached")
        self.scaler_input = scaler_input
        if encoder_backend not in ("auto", "torch", "triton"):
            raise ValueError(f"encoder backend {encoder_backend!r}: expected auto, torch or triton")
        self.encoder_backend = encoder_backend
        if decoder_backend not in ("auto", "torch", "triton", "split"):
            raise ValueError(f"decoder backend {decoder_backend!r}: expected auto, torch, triton or split")
        if decoder_backend in ("triton", "split") and (not causal or dec_dtype != "fp32"):
            raise ValueError(f"decoder_backend={decoder_backend} is a causal decoder kernel in fp32 "
                             f"(kernels/sea_decoder*.py); got causal={causal}, estimator dtype {dec_dtype}")
        self.decoder_backend = decoder_backend
        if performer_backend == "fused" and not causal:
            raise ValueError("performer_backend=fused is the causal Performer + encoder kernel "
                             "(kernels/sea_favor_encoder.py); this estimator is bidirectional")
        self.last_encoder = self.last_decoder = "not-run"
        if compile not in COMPILE_MODES:
            raise ValueError(f"estimator compile {compile!r}: expected one of {COMPILE_MODES}")
        self.compile = compile
        self._compiled = None                                            # built on first use (not in state_dict)
        self.last_performer = "not-run"
        self.last_rows = "off"                                           # forward's rows: what ran (impl)
        self.kernel = "relu" if causal else "softmax"
        m = max(1, int(d * math.log(d) / nbf)) if d > 1 else 1
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", orthogonal_random_features(m, d, gen))      # [m, d]
        if causal:
            self.v_id = nn.Parameter(torch.rand(max_len, d, generator=gen))       # learned V_I
        else:
            self.v_id = None
        with torch.random.fork_rng(devices=[]):                          # layer init deterministic in seed
            torch.manual_seed(seed + 1)
            self.enc = nn.Sequential(nn.Linear(3 * d, 2 * d), nn.LayerNorm(2 * d), nn.GELU())
            self.dec = CausalDecoder(d, H, K) if causal else BidirectionalDecoder(d, H, K)
            self.scaler = nn.Linear(2 * d, 2)

    def decode(self, z: torch.Tensor, *, headed: bool = False, parity: bool = False,
               weights: dict | None = None) -> torch.Tensor:
        """The CNN decoder, z [B, H, T, 2d] fp32 -> logits [B, H, T, K] fp32. dec_dtype bf16/fp16 runs it under
        autocast (convs and the row projection in that dtype, fp32 weights kept; LayerNorm as autocast
        decides); cache_enabled=False so the weight casts are redone per call, which CUDA-graph capture needs.
        headed: z is already the decoder head's output (causal: [B, 2H, T, K/4], the fused front's head=, see
        front_head; bidirectional: [B, 4H, T, K/2], kernels/sea_bidir_head.py): only the decoder's body runs.
        parity (bidirectional, PARITY_CONV3): the last convolution's parity-form output [B, 2H, ceil(T/2), K/2] in
        the decoder's dtype, without its softmax-invariant bias (BidirectionalDecoder.body), in place of the logits.
        weights (headed, bidirectional): the body's weights made once (BidirectionalDecoder.body_weights)."""
        if parity and self.causal:
            raise ValueError("decode(parity=True) is the bidirectional decoder's form")
        if headed:
            self.last_decoder = "head-fused"
            return self._autocast(self.dec.body, z, parity=parity, **({} if weights is None else {"weights": weights}))
        self.last_decoder = self.decoder_path(z)
        if parity:
            return self.dec(z, parity=True) if self.dec_dtype == "fp32" else self._autocast(self.dec, z, parity=True)
        if self.last_decoder in ("triton", "split"):                     # forward-only kernels
            if self.last_decoder == "triton":                            # one fused kernel
                from kernels.sea_decoder import decoder_forward
            else:                                                        # three plain kernels
                from kernels.sea_decoder_v2 import decoder_forward

            if needs_grad(z, *self.dec.parameters()):
                raise RuntimeError(f"sea decoder_backend={self.last_decoder} is forward-only and this call needs "
                                   "gradients (training, or forward+backward): use decoder_backend=torch")
            # estimator_precision leaves the decoder at its tf32x3 dots: one-pass TF32 made it slower on an H200
            # (2.11 against 1.89 ms at T=65536, same run: results/nvidia-h200/sea-tune/tune-64k.txt)
            return torch.compiler.disable(decoder_forward)(z, self.dec)
        if self.dec_dtype == "fp32":
            return self.dec(z)
        return self._autocast(self.dec, z)

    def _autocast(self, module, x: torch.Tensor, *, parity: bool = False, **kw) -> torch.Tensor:
        """module(x, **kw) under autocast to the estimator's 16-bit dtype, returned in fp32 (see decode); parity:
        the parity-form output of module(x, parity=True, **kw) as autocast left it."""
        with torch.autocast(device_type=x.device.type, dtype=DEC_DTYPES[self.dec_dtype], cache_enabled=False):
            return module(x, parity=True, **kw) if parity else module(x, **kw).float()

    def decoder_path(self, z: torch.Tensor) -> str:
        """'triton' (kernels/sea_decoder.py) or 'torch'. auto: the kernel for causal fp32 decoders on CUDA tensors
        when no gradient is needed (measured faster on an H200 at T = 64k, eager and compiled alike:
        results/nvidia-h200/sea-compile/); the modules otherwise."""
        if self.decoder_backend != "auto":
            return self.decoder_backend
        ok = self.causal and self.dec_dtype == "fp32" and z.is_cuda and not needs_grad(z, *self.dec.parameters())
        return "triton" if ok else "torch"

    def encoder_path(self, c_perf: torch.Tensor, v: torch.Tensor) -> str:
        """'triton' (kernels/sea_encoder.py: encoder and scaler head in one kernel) or 'torch'. auto: the kernel on
        CUDA tensors when no gradient is needed (measured faster on an H200 at T = 16k and 64k:
        results/nvidia-h200/sea-compile/); the modules otherwise."""
        if self.encoder_backend != "auto":
            return self.encoder_backend
        weights = (*self.enc.parameters(), *self.scaler.parameters())
        return "triton" if c_perf.is_cuda and not needs_grad(c_perf, v, *weights) else "torch"

    def identity_in_kernel(self, q, k, v, carry) -> bool:
        """identity_values=kernel: does this bidirectional call without a padding mask let the fused Performer kernel
        make the identity values (favor_softmax_dense identity_cols) instead of concatenating them in front of v?
        (H200, SEA's 8k profile: the narrow accumulator, favor_dense.KEY_ID_SPARSE, -0.010 ms of kernels against the
        concatenation, results/nvidia-h200/sea-bf16-encoder/call1/; the dense [keys, 2d] value tile slower, as in the
        sixteenth session, results/nvidia-h200/sea-fewer-launches/call2/.)"""
        if self.identity_values != "kernel" or self.causal or carry is not None:
            return False
        from kernels import favor_dense

        return (favor_dense.KEY_FORM == "per_feature" and performer_backend(
            q, False, self.performer_backend, needs_grad(q, k, v), padded=False) == "triton-dense")

    def dash_of(self, performer: str) -> str | None:
        """favor_attention's dash for a call on Performer path `performer`: "fp16" where performer_dash=fp16 reaches
        the fused bidirectional kernel (triton-dense), else None (the kernel's defaults; other paths refuse it)."""
        return "fp16" if self.performer_dash == "fp16" and performer == "triton-dense" else None

    def encoder_operands_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, weight) of the encoder's Linear for the PyTorch path: x [.., 3d] and lin.weight, both rounded to
        bf16 and computed in fp32 under encoder_operands=bf16 (the head kernel's products restated), else as given."""
        w = self.enc[0].weight
        if self.encoder_operands == "bf16":
            return x.to(torch.bfloat16).float(), w.to(torch.bfloat16).float()
        return x, w

    @property
    def c_dtype(self) -> torch.dtype:
        """The dtype the Performer's output is stored in: bf16 under encoder_operands=bf16 (half the bytes written
        by the query pass and read by the encoder), else fp32."""
        return torch.bfloat16 if self.encoder_operands == "bf16" else torch.float32

    @property
    def nb_features(self) -> int:
        return self.proj.shape[0]

    @torch.no_grad()
    def stage_profile(self, q, k, v, *, timer) -> dict:
        """{part: ms} of one no-padding forward (q, k, v [B, H, T, d], k/v already repeated to H heads):
        inputs (fp32 casts, V_I / identity values), performer (FAVOR+ features + prefix sums), encoder,
        decoder (the CNN, in dec_dtype), scaler. Each part runs on the previous parts' outputs. With
        performer_backend=fused, 'performer' is the one kernel that also does the casts, the encoder and the scaler.
        Under this estimator's torch_precision scope, as forward."""
        with torch_precision(self.precision):
            return self._stage_profile(q, k, v, timer=timer)

    def _stage_profile(self, q, k, v, *, timer) -> dict:
        B, H, T, d = q.shape

        def inputs():
            qf, kf, vf = q.float(), k.float(), v.float()
            vi = (self.v_id[:T].expand(B, H, T, d) if self.causal
                  else identity_rows(T, d, q.device)[None, None].expand(B, H, T, d))
            return qf, kf, vf, torch.cat([vi, vf], dim=-1)               # vals [B, H, T, 2d]

        if self.uses_fused_front(q, k, v, None):                         # Performer + encoder: one kernel
            head = self.front_head()
            front = lambda: self.fused_front(q, k, v, valid=None, vid_rows=self.v_id[:T],  # noqa: E731
                                             state=None, want_state=False, head=head)
            z, _, _ = front()
            return dict(inputs=0.0, performer=timer(front), encoder=0.0,
                        decoder=timer(lambda: self.decode(z, headed=head is not None)), scaler=0.0)
        qf, kf, vf, vals = inputs()                                      # (identity_values=kernel: timed as concat)
        self.last_performer = performer_backend(q, self.causal, self.performer_backend, needs_grad(qf, kf, vals))
        perf = lambda: favor_attention(qf, kf, vals, self.proj, kernel=self.kernel, causal=self.causal,  # noqa: E731
                                       backend=self.performer_backend, operands=self.performer_dtype,
                                       precision=PRECISIONS[self.precision], out_dtype=self.c_dtype,
                                       dash=self.dash_of(self.last_performer))
        c_perf = perf()
        triton_enc = self.encoder_path(c_perf, vf) == "triton"
        if self.encoder_operands == "bf16" and triton_enc and self.uses_bidir_head(c_perf, v):   # as _encode
            enc = lambda: self.bidir_head(c_perf, v)                     # noqa: E731
            x, _ = enc()
            return dict(inputs=timer(inputs), performer=timer(perf), encoder=timer(enc),
                        decoder=timer(lambda: self.decode(x, headed=True)), scaler=0.0)
        if self.encoder_operands == "fp32" and triton_enc:               # encoder and scaler in one kernel
            enc = lambda: self.fused_encoder(c_perf, vf)                 # noqa: E731
            z, _ = enc()
            return dict(inputs=timer(inputs), performer=timer(perf), encoder=timer(enc),
                        decoder=timer(lambda: self.decode(z)), scaler=0.0)
        enc = lambda: self.enc[2](self.enc[1](F.linear(  # noqa: E731  (bf16 operands restated where asked)
            *self.encoder_operands_of(torch.cat([c_perf.float(), vf], dim=-1)), self.enc[0].bias)))
        z = enc()
        return dict(inputs=timer(inputs), performer=timer(perf), encoder=timer(enc),
                    decoder=timer(lambda: self.decode(z)), scaler=timer(lambda: torch.sigmoid(self.scaler(z))))

    def uses_fused_front(self, q, k, v, valid) -> bool:
        """Does this call take the fused front (kernels/sea_favor_encoder.py)? performer_backend=fused: always (it
        refuses in words where it cannot serve); auto: for causal CUDA calls without a padding mask or a gradient
        when estimator_precision=tf32 (measured faster than the split path at 16k, 64k and 256k on an H200 with
        tf32 products, but not at 64k with three-pass products: results/nvidia-h200/sea-precision/)."""
        if self.performer_backend == "fused":
            return True
        if self.performer_backend != "auto" or not self.causal or self.precision != "tf32" or valid is not None:
            return False
        lin, ln = self.enc[0], self.enc[1]
        weights = (self.v_id, self.proj, lin.weight, lin.bias, ln.weight, ln.bias, self.scaler.weight,
                   self.scaler.bias)
        return q.is_cuda and not needs_grad(q, k, v, *weights)

    def uses_bidir_head(self, c_perf: torch.Tensor, v: torch.Tensor) -> bool:
        """Does this bidirectional call take kernels/sea_bidir_head.py (BIDIR_HEAD) after the Triton encoder was
        chosen? Where the launches it replaces would run: a bf16 PyTorch decoder holding channels-last activations,
        no gradient."""
        if BIDIR_HEAD is False or (BIDIR_HEAD == "auto" and not c_perf.is_cuda) or self.causal:
            return False
        from kernels.sea_bidir_head import head_usable

        weights = (*self.enc.parameters(), *self.scaler.parameters(), *self.dec.row.parameters())
        return (self.dec_dtype == "bf16" and self.decoder_backend in ("auto", "torch") and channels_last(c_perf)
                and c_perf.dtype in (torch.float32, torch.bfloat16) and head_usable(c_perf.device)
                and not needs_grad(c_perf, v, *weights))

    def bidir_head(self, c_perf: torch.Tensor, v: torch.Tensor, cache: dict | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """kernels/sea_bidir_head.py: (the decoder's first convolution input [B, 4H, T, K/2] bf16, channels-last;
        scales [B, H, T, 2]) from the Performer's output (see uses_bidir_head). cache: a dict kept by a caller
        running many blocks of rows; the kernel's cast weights are made in the first call and reused."""
        from kernels import sea_encoder
        from kernels.sea_bidir_head import V_DTYPES, cast_weights, encoder_head

        lin, ln = self.enc[0], self.enc[1]
        self.last_encoder = "triton-head"
        if v.dtype not in V_DTYPES:                                      # the kernel reads these exactly
            v = v.float()
        precision = "bf16" if self.encoder_operands == "bf16" else PRECISIONS[self.precision] or sea_encoder.PRECISION
        cast = None
        if cache is not None:
            if "head" not in cache:
                cache["head"] = cast_weights(lin.weight, self.dec.row.weight, precision)
            cast = cache["head"]
        return torch.compiler.disable(encoder_head)(
            c_perf, v, lin.weight, lin.bias, ln.weight, ln.bias, ln.eps, self.scaler.weight, self.scaler.bias,
            self.dec.row.weight, self.dec.row.bias, K=self.K, precision=precision, cast=cast)

    def uses_bidir_tail(self, z: torch.Tensor) -> bool:
        """Do this call's pooled block scores come from kernels/sea_bidir_tail.py (BIDIR_TAIL, PARITY_CONV3)?"""
        if not PARITY_CONV3 or BIDIR_TAIL is False or (BIDIR_TAIL == "auto" and not z.is_cuda) or self.causal:
            return False
        from kernels.sea_bidir_tail import tail_usable

        return tail_usable(z.device) and not needs_grad(z, *self.dec.parameters())

    def fused_encoder(self, c_perf: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """encoder_backend=triton: z [B, H, T, 2d] and sigmoid scales [B, H, T, 2] by kernels/sea_encoder.py (one
        forward-only kernel, no [T, 3d] concatenation); refused in words when a gradient is needed."""
        from kernels.sea_encoder import V_DTYPES, encoder_forward

        lin, ln = self.enc[0], self.enc[1]
        weights = (lin.weight, lin.bias, ln.weight, ln.bias, self.scaler.weight, self.scaler.bias)
        if needs_grad(c_perf, v, *weights):
            raise RuntimeError("sea encoder_backend=triton is a forward-only kernel and this call needs gradients "
                               "(training, or forward+backward): use encoder_backend=torch")
        kernel_call = torch.compiler.disable(encoder_forward)            # compile="estimator": not traced
        if v.dtype not in V_DTYPES:                                      # the kernel reads these exactly
            v = v.float()
        z16 = ENCODER_Z_16BIT and self.dec_dtype != "fp32" and self.decoder_backend in ("auto", "torch")
        return kernel_call(c_perf, v, lin.weight, lin.bias, ln.weight, ln.bias, ln.eps, self.scaler.weight,
                           self.scaler.bias, precision=PRECISIONS[self.precision],
                           z_dtype=DEC_DTYPES[self.dec_dtype] if z16 else torch.float32)

    def front_head(self):
        """The causal decoder's head as the fused front's head= argument (kernels/sea_favor_encoder.py), or None
        where the front writes z: unless FUSED_HEAD and a 16-bit estimator dtype (the PyTorch decoder under
        autocast; the fp32 decoder kernels take z)."""
        if not (FUSED_HEAD and self.causal and self.dec_dtype in ("bf16", "fp16")):
            return None
        dec = self.dec
        return (dec.row.weight, dec.row.bias, dec.norm_in.weight, dec.norm_in.bias, dec.norm_in.eps,
                DEC_DTYPES[self.dec_dtype])

    def fused_front(self, q, k, v, *, valid, vid_rows: torch.Tensor, state, want_state: bool, head=None):
        """performer_backend=fused (causal): z [B, H, T, 2d], scales [B, H, T, 2] and (when want_state) the Performer
        state after the last row (vid_rows [T, d]: the call's V_I rows), from kernels/sea_favor_encoder.py (relu
        features, causal linear attention over [V_I ; v], encoder and scaler head in one forward-only pass). head
        (front_head): z replaced by the decoder head's output [B, 2H, T, K/4]. Refused in words where it cannot
        serve."""
        from kernels.sea_favor_encoder import favor_encoder_forward

        if not self.causal:
            raise RuntimeError("sea performer_backend=fused is the causal Performer + encoder kernel; this estimator "
                               "is bidirectional")
        if valid is not None:
            raise RuntimeError("sea performer_backend=fused has no padding mask: use performer_backend=auto or torch")
        lin, ln = self.enc[0], self.enc[1]
        weights = (self.v_id, self.proj, lin.weight, lin.bias, ln.weight, ln.bias, self.scaler.weight, self.scaler.bias)
        if needs_grad(q, k, v, *weights, *(() if head is None else head[:4])):
            raise RuntimeError("sea performer_backend=fused is a forward-only kernel and this call needs gradients "
                               "(training, or forward+backward): use performer_backend=auto or torch")
        self.last_performer = self.last_encoder = "fused"
        kernel_call = torch.compiler.disable(favor_encoder_forward)      # compile="estimator": not traced
        out = kernel_call(q, k, v, vid_rows, self.proj, lin.weight, lin.bias, ln.weight, ln.bias, ln.eps,
                          self.scaler.weight, self.scaler.bias, row0=0, state=state,
                          operands=self.performer_dtype, return_state=want_state,
                          precision=PRECISIONS[self.precision], head=head)
        return (out[0], out[1], out[2]) if want_state else (out[0], out[1], None)

    def forward(self, q, k, v, *, valid: torch.Tensor | None, probs: bool = False, pool: int = 0, rows: int = 0):
        """q, k, v [B, H, T, d] (any float dtype) -> logits [B, H, T, K], s_prob, s_mix [B, H, T, 1] (fp32).
        probs: (logits, softmax(logits) over K, s_prob, s_mix), the softmax computed with the decoder (under
        compile="estimator" inside its compiled graph, where it fuses with the decoder's last LayerNorm).
        pool = R > 0 (with probs, R dividing T): (None, the softmax summed over each block of R rows, fp32
        [B, H, T / R, K], s_prob, s_mix) in place of logits and A_hat, so that neither [B, H, T, K] tensor is
        written (compile="estimator": the sums are in the compiled graph with the softmax; inductor makes them two
        kernels that recompute it, results/nvidia-h200/sea-fewer-launches/): what a shared selection ranks.
        compile="estimator": the tensor operations (casts, features, encoder, decoder, scaler) run through
        torch.compile; the Triton kernels (Performer, fused encoder) are called as they are, between the compiled
        pieces (kernels/ calls are wrapped in torch.compiler.disable in favor.py / fused_encoder).
        rows > 0 (with pool): the block sums computed in blocks of `rows` query rows where rows_refusal allows
        (_forward_rows: nothing of size [T, .] beyond the sums and scalers is held); last_rows says what ran."""
        B, H, T, d = q.shape
        if rows:
            why = self.rows_refusal(q, k, v, valid=valid, pool=pool, rows=rows)
            self.last_rows = f"whole ({why})"
            if why is None:
                with torch_precision(self.precision):
                    return self._forward_rows(q, k, v, pool=pool, rows=rows)
        else:
            self.last_rows = "off"
        if self.causal:
            if T > self.v_id.shape[0]:
                raise ValueError(f"sequence length {T} exceeds sea max_len={self.v_id.shape[0]}")
            vi = self.v_id[:T].expand(B, H, T, d)                        # [B, H, T, d]
        elif valid is None:
            vi = None                                                    # identity_rows, made inside _forward
        else:
            vi = identity_values(valid, B, T, d, q.device)[:, None].expand(B, H, T, d)
        if pool and (not probs or pool < 0 or T % pool):
            raise ValueError(f"estimator pool={pool}: block sums need probs=True and a block size dividing T={T}")
        logits, a_hat, s_prob, s_mix, _ = self._run(q, k, v, vi, valid, None, probs, pool)
        return (logits, a_hat, s_prob, s_mix) if probs else (logits, s_prob, s_mix)

    def rows_refusal(self, q, k, v, *, valid, pool: int, rows: int) -> str | None:
        """Why forward(pool=R, rows=n) runs over the whole sequence rather than in blocks of n query rows (None: in
        blocks). The blocks serve the bidirectional estimate's block sums (what a shared selection ranks) without
        a padding mask or a gradient, on the fused Performer kernel, whose key summary is made once for all
        blocks (methods/sea/favor.py favor_rows)."""
        T = q.shape[2]
        if self.causal:
            return "causal estimator"
        if not pool:
            return "no block sums"
        if valid is not None:
            return "padding mask"
        if needs_grad(q, k, v, *self.parameters()):
            return "gradient needed"
        if rows < 1 or rows % pool or rows % 2:
            raise ValueError(f"estimator rows={rows}: a positive multiple of the block size {pool} (and even)")
        if rows >= T:
            return f"one block: {rows} rows >= T={T}"
        path = performer_backend(q, False, self.performer_backend, False, padded=False)
        if path != "triton-dense":
            return f"Performer path {path} (blocks need the fused kernel's key summary)"
        return None

    def _forward_rows(self, q, k, v, *, pool: int, rows: int):
        """forward(probs=True, pool=R) of a bidirectional call without a padding mask, in blocks of `rows` query
        rows (see rows_refusal): the Performer's key pass once (favor_rows), then per block its query pass, the
        encoder and scaler head, the decoder and the block sums on the block's rows plus ROW_HALO rows on each
        side inside the sequence, whose convolution outputs are dropped (ROW_HALO: why they suffice); the sums go
        into a [B, H, T / R, K] tensor made up front (the tail kernel writes them in place), the blocks' scalers are
        joined into [B, H, T, 2] at the end. The same values as the whole call
        up to the convolutions' summation order on blocks of another length (cuDNN may pick another algorithm).
        Memory beyond q, k, v: the values [identity ; v] of the Performer where identity_values=concat makes them
        ([B, H, T, 2d]; identity_values=kernel makes none), and O(rows) for the rest. Runs eagerly under
        compile="estimator" (the blocks' work is kernels: the Triton passes and cuDNN's convolutions)."""
        from kernels.sea_bidir_tail import pooled_scores
        from methods.sea.favor import favor_rows

        block_sums = torch.compiler.disable(pooled_scores)               # the tail kernel (uses_bidir_tail)
        B, H, T, d = q.shape
        # the decoder's input for a block and its halo within cuDNN's 32-bit offsets
        cap = (CONV_MAX_ELEMENTS // (B * 4 * H * (self.K // 2)) - 2 * ROW_HALO) // pool * pool
        if cap < pool:
            raise ValueError(f"sea estimator: B={B}, H={H}, K={self.K} leave no block of {pool} rows within cuDNN's "
                             "32-bit offsets")
        rows = min(rows, cap)
        self.last_rows = f"{-(-T // rows)} x {rows} rows"
        ident = d if self.identity_in_kernel(q, k, v, None) else 0
        vi = None if ident else identity_rows(T, d, q.device)[None, None].expand(B, H, T, d)
        self.last_performer = "triton-dense"
        vals = self._performer_values(v, vi, ident)
        dash = self.dash_of(self.last_performer)
        self.last_dash, self.last_identity = dash or "default", "kernel" if ident else "concat"
        rows_of = favor_rows(q, k, vals, self.proj, kernel=self.kernel, backend=self.performer_backend,
                             operands=self.performer_dtype, precision=PRECISIONS[self.precision],
                             out_dtype=self.c_dtype, identity_cols=ident, dash=dash)
        del vals
        sums = torch.empty(B, H, T // pool, self.K, dtype=torch.float32, device=q.device)
        scales = []                                                      # each block's, joined once at the end
        weights = None                                                   # the decoder body's, made once
        head_cache: dict = {}                                            # the head kernel's cast weights, once
        for a in range(0, T, rows):
            b = min(a + rows, T)
            lo, hi = max(a - ROW_HALO, 0), min(b + ROW_HALO, T)
            i0, i1 = a - lo, b - lo                                      # the block's rows in the window
            c = rows_of(lo, hi)                                          # [B, H, hi - lo, 2d]
            x, sc, headed = self._encoded(c, v[:, :, lo:hi], cache=head_cache)
            del c
            if headed and weights is None:
                weights = self.dec.body_weights(x)
            tail = self.uses_bidir_tail(x)
            y = self.decode(x, headed=headed, parity=tail, weights=weights if headed else None)
            if tail:                                                     # parity rows: i0, i1 are even; in place
                block_sums(y[:, :, i0 // 2:i1 // 2], heads=H, rows=pool, out=sums[:, :, a // pool:b // pool])
            else:
                y = torch.softmax(y[:, :, i0:i1], dim=-1)                # [B, H, b - a, K]
                sums[:, :, a // pool:b // pool] = y.reshape(B, H, (b - a) // pool, pool, self.K).sum(
                    3, dtype=torch.float32)
            # (written in place by the head kernel instead, its scales' extra row arguments took it from 125 to
            # 130 registers, one program an SM: 64k 3.59 -> 3.97 ms, results/nvidia-h200/sea-presets/call1/)
            scales.append(sc[:, :, i0:i1])
            del x, sc, y
        scales = torch.cat(scales, dim=2)                                # one launch, not one a block
        return None, sums, scales[..., 0:1], scales[..., 1:2]

    def forward_block(self, q, k, v, *, row0: int, carry: dict | None, probs: bool = False):
        """Causal, no padding, no gradient: the estimate for query rows row0 .. row0 + Tc - 1 of a longer sequence,
        q, k, v [B, H, Tc, d] being those rows, given `carry` from the block before (None for the first block).
        Returns (logits [B, H, Tc, K], s_prob, s_mix, carry for the next block); probs: (logits, A_hat, s_prob,
        s_mix, carry), A_hat as in forward. Block by block this computes what
        forward() computes over the whole sequence: the Performer's prefix state (sum phi_k^T [V_I ; v], sum
        phi_k) is carried, and the last `decoder_halo` rows of the encoder output are carried and put before the
        block's rows for the causal decoder (whose convolutions look that many rows back), then dropped."""
        if not self.causal:
            raise ValueError("forward_block is the causal estimator's block form; bidirectional calls see all keys")
        B, H, Tc, d = q.shape
        if row0 + Tc > self.v_id.shape[0]:
            raise ValueError(f"sequence length {row0 + Tc} exceeds sea max_len={self.v_id.shape[0]}")
        vi = self.v_id[row0:row0 + Tc].expand(B, H, Tc, d)               # [B, H, Tc, d]
        logits, a_hat, s_prob, s_mix, nxt = self._run(q, k, v, vi, None, {} if carry is None else carry, probs)
        return (logits, a_hat, s_prob, s_mix, nxt) if probs else (logits, s_prob, s_mix, nxt)

    @property
    def decoder_halo(self) -> int:
        """Rows before t that the causal decoder's output at t depends on (time reach of its convolutions)."""
        return sum(c.dilation[0] * (c.kernel_size[0] // 2) for c in (self.dec.conv1, self.dec.conv2, self.dec.conv3))

    def _run(self, q, k, v, vi, valid, carry, probs: bool, pool: int = 0):
        with torch_precision(self.precision):
            if self.compile == "none":
                return self._forward(q, k, v, vi, valid=valid, carry=carry, probs=probs, pool=pool)
            if self._compiled is None:
                self._compiled = compiled(self._forward)
            return self._compiled(q, k, v, vi, valid=valid, carry=carry, probs=probs, pool=pool)

    def _forward(self, q, k, v, vi, *, valid: torch.Tensor | None, carry: dict | None, probs: bool, pool: int = 0):
        """vi: the V_I rows (causal) or identity values (bidirectional) [B, H, T, d], or None for the identity values
        without a padding mask (identity_rows, made here: inside the compiled graph under compile="estimator"). carry:
        None for a whole sequence; a dict (or {} for a first block) in the block form (forward_block). probs: also
        A_hat. pool: see forward. Returns (logits, A_hat or None, s_prob, s_mix, next carry or None); with pool
        (None, the block sums, s_prob, s_mix, None)."""
        ident = 0                                                        # identity columns made by the kernel
        if vi is None:
            B, H, T, d = q.shape
            if self.identity_in_kernel(q, k, v, carry):
                ident = d
            else:
                vi = identity_rows(T, d, q.device)[None, None].expand(B, H, T, d)
        if self.uses_fused_front(q, k, v, valid):                        # Performer + encoder in one kernel
            # the V_I rows of this call as a [T, d] view of v_id (vi is that view expanded): the block's first row
            # is not passed as an int, which would make compile="estimator" recompile for every query block
            head = self.front_head()
            z, scales, state = self.fused_front(q, k, v, valid=valid, vid_rows=vi[0, 0],
                                                state=None if carry is None else carry.get("state"),
                                                want_state=carry is not None, head=head)
            return self._finish(z, scales, carry, state, headed=head is not None, probs=probs, pool=pool)
        # favor_attention reads q, k in any dtype (fp32 inside): no fp32 copies of q, k (nor of v, cast inside the
        # cat; the encoder kernel reads it in its dtype). H200, bidirectional 64k, SEA fast: kernels 11.30 -> 10.96
        # ms, peak memory 2456 -> 1944 MiB, MiniLM fidelity +1.6e-5 relative (results/nvidia-h200/sea-graph-replay/)
        if carry is not None:
            q, k = q.float(), k.float()
        if valid is not None:
            v = v * valid[:, None, :, None]
        self.last_performer = performer_backend(q, self.causal, self.performer_backend,
                                                needs_grad(q, k, v, *(() if vi is None else (vi,))),
                                                padded=valid is not None)
        # [B, H, T, 2d] fp32; with ident, v alone (the kernel makes the identity columns in front of it)
        vals = self._performer_values(v, vi, ident)
        if carry is None:                                                # [B, H, T, 2d] fp32 (bf16) out
            dash = self.dash_of(self.last_performer)
            self.last_dash, self.last_identity = dash or "default", "kernel" if ident else "concat"
            c_perf = favor_attention(q, k, vals, self.proj, kernel=self.kernel, causal=self.causal, valid=valid,
                                     backend=self.performer_backend, operands=self.performer_dtype,
                                     precision=PRECISIONS[self.precision], out_dtype=self.c_dtype,
                                     identity_cols=ident, dash=dash)
        else:
            c_perf, state = favor_causal_carry(q, k, vals, self.proj, carry.get("state"),
                                               backend=self.performer_backend, operands=self.performer_dtype)
        return self._encode(c_perf, v, carry, None if carry is None else state, probs, pool)

    def _performer_values(self, v, vi, ident: int) -> torch.Tensor:
        """The Performer's values: v alone where the kernel makes the ident identity columns, else [vi ; v] (in
        bf16 under VALS_BF16 for a bidirectional bf16 Performer without a gradient)."""
        vals = v if ident else torch.cat([vi, v.float()], dim=-1)
        if VALS_BF16 and not self.causal and self.performer_dtype == "bf16" and not needs_grad(vals):
            vals = vals.to(torch.bfloat16)                                   # one fused cast under compile
        return vals

    def _encode(self, c_perf, v, carry, state, probs: bool, pool: int):
        """The encoder and scaler head on the Performer's output, then _finish."""
        z, scales, headed = self._encoded(c_perf, v, carry)
        return self._finish(z, scales, carry, state, headed=headed, probs=probs, pool=pool)

    def _encoded(self, c_perf, v, carry=None, cache: dict | None = None):
        """The encoder and scaler head on the Performer's output: (z [B, H, T, 2d] or, headed, the decoder head's
        output [B, 4H, T, K/2] (kernels/sea_bidir_head.py), scales [B, H, T, 2], headed). cache: bidir_head's."""
        self.last_encoder = self.encoder_path(c_perf, v)
        if self.last_encoder == "triton" and carry is None and self.uses_bidir_head(c_perf, v):
            x, scales = self.bidir_head(c_perf, v, cache)                # [B, 4H, T, K/2] bf16, [B, H, T, 2]
            return x, scales, True
        if self.last_encoder == "triton" and self.encoder_operands == "fp32":
            z, scales = self.fused_encoder(c_perf, v)                    # [B, H, T, 2d], [B, H, T, 2]
        else:
            self.last_encoder = "torch"
            x = torch.cat([c_perf.float(), v.float()], dim=-1)           # [B, H, T, 3d]
            # with a gradient under estimator_precision=tf32 the encoder's and the scaler's products keep TF32 in
            # the backward too (methods/sea/precision.py); the modules' own F.linear otherwise
            tf32 = self.precision == "tf32" and sea_precision.TF32_BACKWARD and needs_grad(x, *self.enc.parameters())
            linear = tf32_linear if tf32 else F.linear
            lin, norm, act = self.enc
            z = act(norm(linear(*self.encoder_operands_of(x), lin.bias)))   # [B, H, T, 2d]
            # "detached": gradients reaching s_prob / s_mix (the layer output, hidden states, logits) train the
            # scaler head only; the encoder and decoder then learn from the estimate's own terms
            zin = z.detach() if self.scaler_input == "detached" else z
            scales = torch.sigmoid(linear(zin, self.scaler.weight, self.scaler.bias))   # [B, H, T, 2]
        return z, scales, False

    def _finish(self, z, scales, carry, state, *, headed: bool = False, probs: bool = False, pool: int = 0):
        """The decoder on the encoder output z [B, H, T, 2d] (headed: on the decoder head's output, see decode):
        (logits, softmax(logits) when probs else None, s_prob, s_mix, next carry or None); in the block form the
        carried tail rows (of z, or of the head's output: both are row-wise) go before the block's rows and the new
        tail and Performer state are carried."""
        if self.compile != "none" and torch.is_grad_enabled() and DECODER_OWN_GRAPH:
            # compile="estimator" with gradients: the decoder in a compiled graph of its own. In one graph with the
            # encoder and scaler, AOT autograd runs the decoder's backward on zero gradients whenever the loss
            # does not reach the logits (the causal layer output reaches only the scalers: the selection is not
            # differentiable), 2.0 ms of convolution backward in SEA's 32k causal step on an H200.
            torch._dynamo.graph_break()
        if pool and carry is None and self.uses_bidir_tail(z):           # the block sums in one kernel
            from kernels.sea_bidir_tail import pooled_scores

            y = self.decode(z, headed=headed, parity=True)               # [B, 2H, T/2, K/2]
            sums = torch.compiler.disable(pooled_scores)(y, heads=self.H, rows=pool)
            return None, sums, scales[..., 0:1], scales[..., 1:2], None
        if carry is None:
            logits, nxt = self.decode(z, headed=headed), None            # [B, H, T, K]
        else:
            tail = carry.get("tail")                                     # [B, ., <= halo, .] rows before the block
            zz = z if tail is None else torch.cat([tail, z], dim=2)
            logits = self.decode(zz, headed=headed)[:, :, zz.shape[2] - z.shape[2]:]   # [B, H, Tc, K]
            halo = self.decoder_halo
            nxt = dict(state=state, tail=zz[:, :, -halo:].clone() if halo else None)   # a copy: zz is freed
        a_hat = torch.softmax(logits, dim=-1) if probs else None
        if pool:                                                         # the block sums only (see forward)
            B, H, T, K = a_hat.shape
            a_hat, logits = a_hat.reshape(B, H, T // pool, pool, K).sum(3, dtype=torch.float32), None
        return logits, a_hat, scales[..., 0:1], scales[..., 1:2], nxt
