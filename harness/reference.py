"""Exact softmax attention as the yardstick for the correctness gate and the error metrics.

Small problems: float64 on the CPU. Large ones: float32 on the cell's device, over query chunks (each
chunk checkpointed so the backward needs only one chunk's scores at a time), with TF32 off.
This is measurement infrastructure, not a method: the `exact` method is tested against it.
"""
from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

# float64 CPU reference up to this many multiply-adds (2 * B * H * T^2 * D); beyond it, float32 on device.
FP64_BUDGET = 4e9
# Beyond this many multiply-adds the forward error is measured on SAMPLED_ROWS query rows, not all of them,
# and the gradient reference (which needs every row) is skipped; the row's `ref` and `gate` say so.
FULL_BUDGET = 2.5e12
SAMPLED_ROWS = 1024

# Relative L2 error an exact method may show against the reference, by input dtype.
EXACT_TOL = {"fp64": 1e-10, "fp32": 1e-4, "fp16": 4e-3, "bf16": 2.5e-2}
EXACT_GRAD_TOL = {"fp64": 1e-8, "fp32": 5e-4, "fp16": 1e-2, "bf16": 5e-2}


def _chunk_attention(q, k, v, pos: torch.Tensor, causal: bool, scale: float):
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale                 # [B, H, C, T]
    if causal:
        cols = torch.arange(k.shape[2], device=q.device)
        scores = scores.masked_fill(cols[None, :] > pos[:, None], float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)                 # [B, H, C, D]


def reference_attention(q, k, v, *, causal: bool, scale: float | None = None, chunk: int | None = None,
                        rows: torch.Tensor | None = None):
    """softmax(q k^T * scale [causal]) v in the dtype of q; GQA by repeating k/v.

    With `rows`, only those query positions are computed: [B, H, len(rows), D]."""
    H = q.shape[1]
    if k.shape[1] != H:
        k = k.repeat_interleave(H // k.shape[1], dim=1)
        v = v.repeat_interleave(H // v.shape[1], dim=1)
    positions = torch.arange(q.shape[2], device=q.device) if rows is None else rows.to(q.device)
    if rows is not None:
        q = q[:, :, positions]
    B, _, T, D = q.shape
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    if chunk is None:
        # keep one chunk's scores near 1 GiB
        chunk = max(16, min(T, (1 << 28) // max(1, B * H * k.shape[2])))
    outs = []
    for start in range(0, T, chunk):
        qc = q[:, :, start:start + chunk]
        pc = positions[start:start + chunk]
        if qc.requires_grad or k.requires_grad:
            outs.append(checkpoint(_chunk_attention, qc, k, v, pc, causal, scale, use_reentrant=False))
        else:
            outs.append(_chunk_attention(qc, k, v, pc, causal, scale))
    return torch.cat(outs, dim=2)


def reference_plan(batch: int, heads: int, seq_len: int, head_dim: int, device: str) -> tuple[str, torch.dtype]:
    """(device, dtype) for the reference of a problem."""
    macs = 2 * batch * heads * seq_len * seq_len * head_dim
    if device == "cpu" or macs <= FP64_BUDGET:
        return ("cpu", torch.float64) if macs <= FP64_BUDGET else ("cpu", torch.float32)
    return device, torch.float32


def reference_probs(q, k, *, causal: bool, rows: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Exact attention probabilities [B, H, R, T] for query rows `rows` (float of q's dtype)."""
    H = q.shape[1]
    if k.shape[1] != H:
        k = k.repeat_interleave(H // k.shape[1], dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q[:, :, rows], k.transpose(-1, -2)) * scale
    if causal:
        cols = torch.arange(k.shape[2], device=q.device)
        scores = scores.masked_fill(cols[None, :] > rows.to(q.device)[:, None], float("-inf"))
    return torch.softmax(scores, dim=-1)


def rel_l2(x: torch.Tensor, ref: torch.Tensor) -> float:
    x = x.to(ref.dtype)
    denom = ref.norm().item()
    return (x - ref).norm().item() / denom if denom > 0 else (x - ref).norm().item()


def max_abs(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.to(ref.dtype) - ref).abs().max().item()


def attention_kl(p_ref: torch.Tensor, p: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean over rows of KL(p_ref || p), in nats."""
    p_ref = p_ref.double()
    p = p.double()
    kl = (p_ref * (torch.log(p_ref + eps) - torch.log(p + eps))).sum(-1)
    return kl.mean().item()


def topk_recall(p_ref: torch.Tensor, p: torch.Tensor, k: int) -> float:
    """Share of the reference's top-k keys per row that are among the method's top-k keys."""
    k = min(k, p_ref.shape[-1])
    ref_idx = p_ref.topk(k, dim=-1).indices
    got_idx = p.topk(k, dim=-1).indices
    hit = (ref_idx[..., :, None] == got_idx[..., None, :]).any(-1).float()
    return hit.mean().item()
