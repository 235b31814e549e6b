"""`exact`: plain softmax attention written out in PyTorch (the reference every method is measured against)."""
from __future__ import annotations

import math

import torch

from methods.base import AttentionModule, Method, Option, check_inputs, register, repeat_kv

_PRECISIONS = {"native": None, "fp32": torch.float32, "fp64": torch.float64}


def softmax_attention_probs(q, k, *, causal: bool, scale: float | None = None, key_padding_mask=None,
                            rows: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention probabilities [B, H, R, T] for query rows `rows` (all rows if None).

    Causal masking aligns the last query with the last key (queries are the trailing T_q positions).
    Rows with no visible key (all padding) come out as zeros, not NaN.
    """
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    pos = torch.arange(Tq, device=q.device) + (Tk - Tq)        # absolute position of each query
    if rows is not None:
        q = q[:, :, rows]
        pos = pos[rows]
    k = repeat_kv(k, H)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale       # [B, H, R, Tk]
    visible = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device)
    if causal:
        visible = torch.arange(Tk, device=q.device)[None, :] <= pos[:, None]   # [R, Tk]
    visible = visible[None, None]
    if key_padding_mask is not None:
        visible = visible & key_padding_mask[:, None, None, :]
    scores = scores.masked_fill(~visible, float("-inf"))
    half = scores.dtype in (torch.float16, torch.bfloat16)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32 if half else None)
    return torch.nan_to_num(probs, nan=0.0)


class ExactAttention(AttentionModule):
    def __init__(self, precision: str):
        super().__init__()
        self.precision = precision
        self.impl = f"eager[{precision}]"

    def forward(self, q, k, v, *, causal: bool, key_padding_mask=None, scale=None):
        check_inputs(q, k, v)
        out_dtype = q.dtype
        work = _PRECISIONS[self.precision]
        if work is None:   # half inputs still take the softmax in float32, as models' eager attention does
            work = q.dtype
        q, k, v = (t.to(work) for t in (q, k, v))
        probs = softmax_attention_probs(q, k, causal=causal, scale=scale, key_padding_mask=key_padding_mask)
        out = torch.matmul(probs.to(v.dtype), repeat_kv(v, q.shape[1]))   # [B, H, T, D]
        return out.to(out_dtype)

    def attention_probs(self, q, k, v, *, causal, rows, key_padding_mask=None, scale=None):
        work = _PRECISIONS[self.precision] or torch.float32
        return softmax_attention_probs(q.to(work), k.to(work), causal=causal, scale=scale,
                                       key_padding_mask=key_padding_mask, rows=rows)


@register
class Exact(Method):
    name = "exact"
    summary = "softmax(QK^T/sqrt(d))V written out in PyTorch; materialises the T x T scores"
    exact = True
    complexity = "O(T^2 D) time, O(T^2) memory"
    options = (
        Option("precision", "native", "arithmetic precision: native (input dtype), fp32 or fp64",
               choices=tuple(_PRECISIONS)),
    )

    @classmethod
    def build(cls, cfg, problem, *, layer=0, seed=0):
        return ExactAttention(cfg["precision"])
