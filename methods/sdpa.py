"""`sdpa`: torch.nn.functional.scaled_dot_product_attention with a chosen backend."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.base import AttentionModule, Method, Option, check_inputs, register

BACKENDS = ("auto", "math", "flash", "efficient", "cudnn")
_ENUM = {"math": "MATH", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
         "cudnn": "CUDNN_ATTENTION"}


def sdpa_call(q, k, v, *, causal: bool, backend: str, key_padding_mask=None, scale=None):
    """SDPA on [B, H, T, D] with GQA and an optional key padding mask, pinned to `backend`."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mask = None
    is_causal = causal
    if key_padding_mask is not None:
        mask = key_padding_mask[:, None, None, :]                      # [B, 1, 1, T] True = attend
        if causal:
            T = q.shape[2]
            tri = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
            mask = mask & tri
            is_causal = False
    gqa = k.shape[1] != q.shape[1]
    kwargs = dict(attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=gqa)
    if backend == "auto":
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    with sdpa_kernel([getattr(SDPBackend, _ENUM[backend])]):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)


class SDPAAttention(AttentionModule):
    def __init__(self, backend: str):
        super().__init__()
        self.backend = backend
        self.impl = f"torch.sdpa[{backend}]"

    def forward(self, q, k, v, *, causal: bool, key_padding_mask=None, scale=None):
        check_inputs(q, k, v)
        return sdpa_call(q, k, v, causal=causal, backend=self.backend, key_padding_mask=key_padding_mask,
                         scale=scale)


@register
class SDPA(Method):
    name = "sdpa"
    summary = "torch scaled_dot_product_attention (backend: auto, math, flash, efficient, cudnn)"
    exact = True
    complexity = "O(T^2 D) time; O(T) memory except the math backend (O(T^2))"
    options = (Option("backend", "auto", "SDPA backend to pin", choices=BACKENDS),)

    @classmethod
    def extra_reasons(cls, problem, cfg):
        backend = cfg["backend"]
        reasons = []
        if problem.device == "cpu" and backend in ("efficient", "cudnn"):
            reasons.append(f"backend={backend} runs on CUDA only (CPU has math and flash)")
        if problem.device == "cuda" and backend in ("flash", "cudnn") and problem.dtype not in ("fp16", "bf16"):
            reasons.append(f"backend={backend} on CUDA needs fp16 or bf16 (got {problem.dtype})")
        if problem.device == "cuda" and backend == "flash" and problem.head_dim > 256:
            reasons.append(f"backend=flash supports head_dim <= 256 (got {problem.head_dim})")
        return reasons

    @classmethod
    def build(cls, cfg, problem, *, layer=0, seed=0):
        return SDPAAttention(cfg["backend"])
