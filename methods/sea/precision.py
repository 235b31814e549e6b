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


def _forward_product(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, w, b) with TF32 allowed (tests patch it to count the calls)."""
    with torch_precision("tf32"):
        return F.linear(x, w, b)


def _backward_products(g, x, w, need_x: bool, need_w: bool, need_b: bool):
    """(gx, gw, gb) of F.linear for the output gradient g, products with TF32 allowed; None where not needed."""
    gx = gw = gb = None
    with torch_precision("tf32"):
        if need_x:
            gx = _mm(g, w.to(g.dtype))                                   # [..., in]
        g2 = g.reshape(-1, g.shape[-1])                                  # [N, out]
        if need_w:
            gw = _mm(g2.T, x.reshape(-1, x.shape[-1]).to(g.dtype)).to(w.dtype)   # [out, in]
        if need_b:
            gb = g2.sum(0)
    return gx, gw, gb


@torch.library.custom_op("sea::tf32_linear", mutates_args=())
def _tf32_linear_op(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return _forward_product(x, w, b)


@_tf32_linear_op.register_fake
def _(x, w, b):
    return x.new_empty((*x.shape[:-1], w.shape[0]))


@torch.library.custom_op("sea::tf32_linear_backward", mutates_args=())
def _tf32_linear_backward_op(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, need_x: bool, need_w: bool,
                             need_b: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gx, gw, gb = _backward_products(g, x, w, need_x, need_w, need_b)
    empty = g.new_empty(0)                                               # an operator returns tensors, not None
    return (empty if gx is None else gx, empty.clone() if gw is None else gw, empty.clone() if gb is None else gb)


@_tf32_linear_backward_op.register_fake
def _(g, x, w, need_x, need_w, need_b):
    return (g.new_empty(x.shape) if need_x else g.new_empty(0), w.new_empty(w.shape) if need_w else g.new_empty(0),
            g.new_empty(g.shape[-1]) if need_b else g.new_empty(0))


def _op_setup(ctx, inputs, output):
    x, w, b = inputs
    ctx.save_for_backward(x, w)
    ctx.has_bias = b is not None


def _op_backward(ctx, g):
    x, w = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_b = ctx.has_bias and need[2]
    gx, gw, gb = _tf32_linear_backward_op(g, x, w, need[0], need[1], need_b)
    return gx if need[0] else None, gw if need[1] else None, gb if need_b else None


_tf32_linear_op.register_autograd(_op_backward, setup_context=_op_setup)


def tf32_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, w, b) with TF32 allowed for its float32 products in the forward and in the backward. Why: the
    TF32 scope of torch_precision covers the forward call only; the backward runs later, under the caller's flags
    (the harness turns TF32 off), so the estimator's backward products ran as fp32 FFMA GEMMs: ~1.8 ms of SEA's 32k
    causal forward+backward on an H200 (results/nvidia-h200/sea-train/). A registered custom operator
    (sea::tf32_linear, with a backward operator that keeps the TF32 scope): compile="estimator" traces it as one
    opaque node, where an autograd.Function hidden from torch.compile split the compiled estimator at each of its four
    calls (10 compiled graphs -> 4; the step's time within its spread, results/nvidia-h200/sea-train/call10/)."""
    return _tf32_linear_op(x, w, b)
