"""`xformers`: xformers.ops.memory_efficient_attention, where the package imports and its kernels run.

Whether it *works* on a device is probed once with a tiny call (the wheel's compiled part targets one
torch/CUDA pair; elsewhere it raises). A failed probe makes the method `unsupported` with the message.
The row's `impl` names the operator xformers dispatched to.
"""
from __future__ import annotations

import functools

import torch

from methods.base import AttentionModule, Method, check_inputs, register


@functools.lru_cache(maxsize=None)
def probe(device: str, dtype_name: str) -> str | None:
    """None if memory_efficient_attention runs on (device, dtype); else the error in words."""
    from methods.base import DTYPES

    try:
        import xformers.ops as xops

        x = torch.randn(1, 16, 2, 64, device=device, dtype=DTYPES[dtype_name])
        xops.memory_efficient_attention(x, x, x)
    except Exception as exc:  # noqa: BLE001 - the message is the refusal reason
        # xformers lists each operator and why it refused, one reason per line; keep them, joined.
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        text = " / ".join(lines)[:900]
        return f"xformers memory_efficient_attention fails on {device}/{dtype_name}: {type(exc).__name__}: {text}"
    return None


def _op_name(q, k, v, bias) -> str:
    try:
        from xformers.ops import fmha

        inp = fmha.Inputs(query=q, key=k, value=v, attn_bias=bias)
        return fmha._dispatch._dispatch_fw(inp, False).NAME
    except Exception:  # noqa: BLE001 - the op name is informational; say we could not tell
        return "unknown-op"


class XformersAttention(AttentionModule):
    impl = "xformers"

    def forward(self, q, k, v, *, causal: bool, key_padding_mask=None, scale=None):
        check_inputs(q, k, v)
        import xformers.ops as xops

        if key_padding_mask is not None:
            raise NotImplementedError("xformers path takes no key padding mask here")
        H, Hkv = q.shape[1], k.shape[1]
        # xformers layout is [B, T, H, D]; GQA as [B, T, G, H/G, D] with k/v expanded (a view, no copy).
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        if Hkv != H:
            B, T, _, D = qt.shape
            qt = qt.reshape(B, T, Hkv, H // Hkv, D)
            kt = kt[:, :, :, None].expand(B, kt.shape[1], Hkv, H // Hkv, D)
            vt = vt[:, :, :, None].expand(B, vt.shape[1], Hkv, H // Hkv, D)
        bias = xops.LowerTriangularMask() if causal else None
        if not self.impl.startswith("xformers["):
            self.impl = f"xformers[{_op_name(qt, kt, vt, bias)}]"
        out = xops.memory_efficient_attention(qt, kt, vt, attn_bias=bias, scale=scale)
        return out.reshape(q.shape[0], q.shape[2], H, q.shape[3]).transpose(1, 2)   # [B, H, T, D]


@register
class Xformers(Method):
    name = "xformers"
    summary = "xformers memory_efficient_attention (dispatches to its own or PyTorch's kernels)"
    exact = True
    packages = ("xformers",)
    padding_ok = False
    complexity = "O(T^2 D) time, O(T) memory"

    @classmethod
    def extra_reasons(cls, problem, cfg):
        if cls.missing_packages():
            return []
        failure = probe(problem.device, problem.dtype)
        return [failure] if failure else []

    @classmethod
    def build(cls, cfg, problem, *, layer=0, seed=0):
        return XformersAttention()
