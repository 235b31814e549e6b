"""Dense-masked reference for kernels/sea_sparse_attention.py (tests only; O(T^2) memory)."""
from __future__ import annotations

import torch


def dense_mask_from_indices(idx: torch.Tensor, count: torch.Tensor, T: int) -> torch.Tensor:
    """idx [B, H, Tq, W], count [B, H, Tq] -> bool [B, H, Tq, T]."""
    W = idx.shape[-1]
    live = torch.arange(W, device=idx.device) < count[..., None]
    target = torch.where(live, idx.long(), torch.full_like(idx.long(), T))
    dense = torch.zeros(*idx.shape[:-1], T + 1, dtype=torch.bool, device=idx.device)
    dense.scatter_(-1, target, True)
    return dense[..., :T]


def sparse_attention_ref(q, k, v, idx, count, scale: float, dtype=torch.float64):
    """softmax(q k^T scale) restricted to the selected keys, renormalised; empty rows -> 0."""
    H = q.shape[1]
    k = k.repeat_interleave(H // k.shape[1], dim=1)
    v = v.repeat_interleave(H // v.shape[1], dim=1)
    mask = dense_mask_from_indices(idx, count, k.shape[2])                # [B, H, T, T]
    s = torch.matmul(q.to(dtype), k.to(dtype).transpose(-1, -2)) * scale   # [B, H, T, T]
    empty = ~mask.any(-1, keepdim=True)                                   # rows with no key
    s = s.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)      # keeps gradients NaN-free
    p = torch.softmax(s, dim=-1).masked_fill(empty, 0.0)
    return torch.matmul(p, v.to(dtype))
