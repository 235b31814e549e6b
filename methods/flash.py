"""`flash`: FlashAttention. The flash-attn package (FA3 on Hopper, else FA2) when importable, otherwise
torch SDPA's flash backend (on CPU too). The row's `impl` records which one ran."""
from __future__ import annotations

import importlib.util

from methods.base import AttentionModule, Method, Option, check_inputs, register
from methods.sdpa import sdpa_call

IMPLS = ("auto", "flash_attn3", "flash_attn", "sdpa")


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def resolve_impl(requested: str, device: str) -> tuple[str | None, list[str]]:
    """The implementation `requested` maps to on `device`, or None and the reasons."""
    has_fa3 = _installed("flash_attn_interface")
    has_fa2 = _installed("flash_attn")
    if requested == "auto":
        if device == "cuda" and has_fa3 and _is_hopper():
            return "flash_attn3", []
        if device == "cuda" and has_fa2:
            return "flash_attn", []
        return "sdpa", []
    reasons = []
    if requested == "flash_attn3":
        if not has_fa3:
            reasons.append("package 'flash_attn_interface' (FlashAttention-3) is not installed")
        if device != "cuda":
            reasons.append("FlashAttention-3 runs on CUDA (Hopper) only")
    elif requested == "flash_attn":
        if not has_fa2:
            reasons.append("package 'flash_attn' is not installed")
        if device != "cuda":
            reasons.append("flash-attn runs on CUDA only")
    return (None, reasons) if reasons else (requested, [])


def _is_hopper() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


class FlashAttention(AttentionModule):
    def __init__(self, impl: str):
        super().__init__()
        self.impl_name = impl
        self.impl = {"sdpa": "torch.sdpa[flash]", "flash_attn": "flash_attn (FA2)",
                     "flash_attn3": "flash_attn_interface (FA3)"}[impl]

    def forward(self, q, k, v, *, causal: bool, key_padding_mask=None, scale=None):
        check_inputs(q, k, v)
        if self.impl_name == "sdpa":
            return sdpa_call(q, k, v, causal=causal, backend="flash", key_padding_mask=key_padding_mask,
                             scale=scale)
        if key_padding_mask is not None:
            raise NotImplementedError("flash-attn path here takes no padding mask (use flash.impl=sdpa)")
        if self.impl_name == "flash_attn3":
            from flash_attn_interface import flash_attn_func
        else:
            from flash_attn import flash_attn_func
        # flash-attn takes [B, T, H, D] and handles fewer k/v heads natively.
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale,
                              causal=causal)
        if isinstance(out, tuple):       # FA3 returns (out, lse)
            out = out[0]
        return out.transpose(1, 2)       # [B, H, T, D]


@register
class Flash(Method):
    name = "flash"
    summary = "FlashAttention: flash-attn FA3/FA2 when installed, else torch SDPA's flash backend"
    exact = True
    complexity = "O(T^2 D) time, O(T) memory"
    options = (Option("impl", "auto", "which FlashAttention: auto, flash_attn3, flash_attn, sdpa", choices=IMPLS),)

    @classmethod
    def extra_reasons(cls, problem, cfg):
        impl, reasons = resolve_impl(cfg["impl"], problem.device)
        if impl in ("flash_attn", "flash_attn3", "sdpa") and problem.device == "cuda" \
                and problem.dtype not in ("fp16", "bf16"):
            reasons.append(f"FlashAttention on CUDA needs fp16 or bf16 (got {problem.dtype})")
        if impl == "sdpa" and problem.device == "cuda" and problem.head_dim > 256:
            reasons.append(f"head_dim={problem.head_dim} (at most 256)")
        return reasons

    @classmethod
    def build(cls, cfg, problem, *, layer=0, seed=0):
        impl, reasons = resolve_impl(cfg["impl"], problem.device)
        if impl is None:
            raise RuntimeError("; ".join(reasons))
        return FlashAttention(impl)
