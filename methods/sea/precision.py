"""Float32 matmul precision of SEA's estimator in PyTorch: the TF32 scope of one call (`torch_precision`) and a linear
map whose forward and backward both run with TF32 allowed (`tf32_linear`), for estimator_precision=tf32."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

# estimator_precision=tf32 with a gradient to compute: the estimator's encoder, scaler and feature projections go
# through tf32_linear (TF32 in their backward too) when True; plain modules / matmuls (backward under the caller's
# flags) when False. A switch for same-run A/B measurements (scripts/profile_sea.py --set). Measured on an H200 (SEA
# fast + compile, 32k causal fwd+bwd, on / off / on): kernels 21.40 / 21.88 / 21.43 ms, peak memory +255 MiB (+9 %),
# results/nvidia-h200/sea-train/call6/.
TF32_BACKWARD = True


@contextlib.contextmanager
def torch_precision(precision: str):
    """The float32 matmul and cuDNN convolution precision of the estimator's PyTorch operations for one call:
    estimator_precision=tf32 allows one-pass TF32 for both (torch.backends.cuda.matmul / cudnn .allow_tf32), the
    same products the Triton kernels take under it; fp32 leaves the caller's settings as they are (the harness
    turns both off for every command, harness.measure.exact_fp32, so there they are true fp32). The flags are
    restored on exit, also on an error. They are read when the operations run (eager, and inductor's calls of
    aten.mm / aten.convolution), so the scope is put around the whole (compiled or eager) call. On an H200 at
    T = 65536, bidirectional, SEA fast took 34.7 ms with the decoder's convolutions and row projection in true fp32
    and 19.8 ms with TF32 (results/nvidia-h200/sea-round19/)."""
    if precision != "tf32":
        yield
        return
    mm, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    old = (mm.allow_tf32, cudnn.allow_tf32)
    mm.allow_tf32 = cudnn.allow_tf32 = True
    try:
        yield
    finally:
        mm.allow_tf32, cudnn.allow_tf32 = old


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b (the backward's products; tests patch it to see the flags they run under)."""
    return a @ b


class _TF32Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        with torch_precision("tf32"):
            return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = gw = gb = None
        with torch_precision("tf32"):
            if ctx.needs_input_grad[0]:
                gx = _mm(g, w.to(g.dtype))                               # [..., in]
            g2 = g.reshape(-1, g.shape[-1])                              # [N, out]
            if ctx.needs_input_grad[1]:
                gw = _mm(g2.T, x.reshape(-1, x.shape[-1]).to(g.dtype)).to(w.dtype)   # [out, in]
            if ctx.has_bias and ctx.needs_input_grad[2]:
                gb = g2.sum(0)
        return gx, gw, gb


@torch.compiler.disable
def tf32_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, w, b) with TF32 allowed for its float32 products in the forward and in the backward. Why: the
    TF32 scope of torch_precision covers the forward call only; the backward runs later, under the caller's flags
    (the harness turns TF32 off), so the estimator's backward products ran as fp32 FFMA GEMMs: ~1.8 ms of SEA's 32k
    causal forward+backward on an H200 (results/nvidia-h200/sea-train/). Runs eagerly (not traced by
    compile="estimator": its backward's scope would not be kept in a compiled graph)."""
    return _TF32Linear.apply(x, w, b)
