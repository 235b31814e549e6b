"""Dense-masked reference for kernels/sea_sparse_attention.py (tests only; O(T^2) memory)."""
from __future__ import annotations

import torch


def dense_mask_from_csr(row_ptr: torch.Tensor, col: torch.Tensor, B: int, H: int, T: int) -> torch.Tensor:
    """CSR (row_ptr [B*H*T+1], col [nnz]) -> bool [B, H, T, T], by a plain loop over rows."""
    dense = torch.zeros(B * H * T, T, dtype=torch.bool)
    rp, cl = row_ptr.cpu().tolist(), col.cpu().long()
    for r in range(B * H * T):
        dense[r, cl[rp[r]:rp[r + 1]]] = True
    return dense.view(B, H, T, T).to(col.device)


def sparse_attention_ref(q, k, v, row_ptr, col, scale: float, dtype=torch.float64):
    """softmax(q k^T scale) restricted to the selected keys, renormalised; empty rows -> 0."""
    B, H, T, _ = q.shape
    k = k.repeat_interleave(H // k.shape[1], dim=1)
    v = v.repeat_interleave(H // v.shape[1], dim=1)
    mask = dense_mask_from_csr(row_ptr, col, B, H, T)                     # [B, H, T, T]
    s = torch.matmul(q.to(dtype), k.to(dtype).transpose(-1, -2)) * scale   # [B, H, T, T]
    empty = ~mask.any(-1, keepdim=True)                                   # rows with no key
    s = s.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)      # keeps gradients NaN-free
    p = torch.softmax(s, dim=-1).masked_fill(empty, 0.0)
    return torch.matmul(p, v.to(dtype))
