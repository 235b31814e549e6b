"""`flex`: FlexAttention (torch.compile'd) with a BlockMask built from block indices.

The causal BlockMask is built directly from per-row block indices (`BlockMask.from_kv_blocks`), so it
costs O((T/128)^2) integers instead of evaluating a T x T mask function. Masks are built once per
shape and reused: their cost stays outside the timed region.
"""
from __future__ import annotations

import functools

import torch

from methods.base import AttentionModule, Method, Option, check_inputs, register


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    import torch._dynamo

    from torch.nn.attention.flex_attention import flex_attention

    # One compiled graph per shape; a sweep visits many shapes in one process, and past dynamo's default
    # recompile limit (8) the call would silently fall back to eager FlexAttention.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 1024))
    return torch.compile(flex_attention, dynamic=False)


def _causal_mod(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def causal_block_mask(T: int, block: int, device) -> "object":
    """Causal BlockMask for a [T, T] problem from indices: blocks left of the diagonal are full,
    the diagonal block is partial (masked by the mask function)."""
    from torch.nn.attention.flex_attention import BlockMask

    n = (T + block - 1) // block
    rows = torch.arange(n, device=device, dtype=torch.int32)
    cols = torch.arange(n, device=device, dtype=torch.int32)
    # Partial: the diagonal block only. Full: blocks 0 .. i-1.
    kv_num = torch.ones(1, 1, n, dtype=torch.int32, device=device)
    kv_idx = rows.view(1, 1, n, 1).expand(1, 1, n, n).contiguous()
    kv_idx = torch.where(cols.view(1, 1, 1, n) == 0, kv_idx, torch.zeros_like(kv_idx))
    full_num = rows.view(1, 1, n).clone()
    full_idx = cols.view(1, 1, 1, n).expand(1, 1, n, n).contiguous()
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=_causal_mod,
                                    seq_lengths=(T, T))


class FlexAttention(AttentionModule):
    def __init__(self, block: int, compiled: bool):
        super().__init__()
        self.block = block
        self.compiled = compiled
        self.impl = f"flex_attention[{'compiled' if compiled else 'eager'}, block={block}]"
        self._masks: dict = {}

    def block_mask(self, B, T, causal, key_padding_mask, device):
        if key_padding_mask is None:
            if not causal:
                return None                       # dense: every block full
            key = (T, causal, str(device))
            if key not in self._masks:
                self._masks[key] = causal_block_mask(T, self.block, device)
            return self._masks[key]
        key = (T, causal, str(device), key_padding_mask.data_ptr(), key_padding_mask._version)
        if key not in self._masks:
            from torch.nn.attention.flex_attention import create_block_mask

            kpm = key_padding_mask

            def mod(b, h, q_idx, kv_idx):
                keep = kpm[b, kv_idx]
                return keep & (q_idx >= kv_idx) if causal else keep

            self._masks = {key: create_block_mask(mod, B, None, T, T, device=device, BLOCK_SIZE=self.block)}
        return self._masks[key]

    def forward(self, q, k, v, *, causal: bool, key_padding_mask=None, scale=None):
        check_inputs(q, k, v)
        from torch.nn.attention.flex_attention import flex_attention

        B, H, T, D = q.shape
        mask = self.block_mask(B, T, causal, key_padding_mask, q.device)
        fn = _compiled_flex() if self.compiled else flex_attention
        out = fn(q, k, v, block_mask=mask, scale=scale, enable_gqa=k.shape[1] != H)
        if key_padding_mask is not None:      # rows whose keys are all padding: zeros, not garbage
            out = out.masked_fill(~key_padding_mask.any(-1)[:, None, None, None], 0.0)
        return out


@register
class Flex(Method):
    name = "flex"
    summary = "torch FlexAttention, compiled, with a BlockMask built from block indices"
    exact = True
    complexity = "O(T^2 D) time over the blocks the mask keeps, O(T) memory"
    options = (
        Option("block", 128, "BlockMask block size (tokens)"),
        Option("compile", True, "torch.compile the kernel (eager flex is a slow reference)"),
    )

    @classmethod
    def validate_config(cls, cfg):
        from methods.base import MethodConfigError

        if cfg["block"] <= 0 or cfg["block"] % 16:
            raise MethodConfigError(f"flex.block={cfg['block']}: must be a positive multiple of 16")

    @classmethod
    def extra_reasons(cls, problem, cfg):
        reasons = []
        if problem.device == "cpu" and problem.backward:
            reasons.append("FlexAttention backward does not run on CPU")
        if problem.device == "cpu" and problem.dtype == "fp16":
            reasons.append("FlexAttention on CPU supports fp32 and bf16, not fp16")
        if problem.head_dim < 16 or problem.head_dim & (problem.head_dim - 1):
            reasons.append(f"head_dim={problem.head_dim} (FlexAttention needs a power of two >= 16)")
        return reasons

    @classmethod
    def build(cls, cfg, problem, *, layer=0, seed=0):
        return FlexAttention(cfg["block"], cfg["compile"])
