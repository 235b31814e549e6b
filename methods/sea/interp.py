"""Compressed mask [B, H, T, K] -> per-query key index lists, without a T x T tensor.

Geometry: row t has L_t keys (see row_lengths); compressed cell b covers key ranks
[round(b s), round((b+1) s)) with s = L_t / K (round half up, exact integer arithmetic). A selected cell
contributes min(width, k) keys uniformly spaced in it: rank lo + floor(j * width / n), j < n.
Ranks are positions among the valid tokens (bidirectional) or absolute positions (causal: cells cover
[0, t], then padded keys are dropped), so the causal mask holds by construction.

Mask format (the kernel's input): fixed-width padded index lists
  idx [B, H, T, W] int32, ascending, -1 after the row's `count` [B, H, T] entries,
with W the largest row count. Why: one Triton program per query row loops over ceil(count / BLOCK)
blocks of its own list - no row-pointer indirection, the same layout serves forward and backward,
and memory is B H T W (W ~ k on average for per_query / causal_per_batch; per_batch can give uneven
rows and then W is the widest row).
"""
from __future__ import annotations

import torch


def row_lengths(B: int, T: int, *, causal: bool, valid: torch.Tensor | None, device) -> torch.Tensor:
    """[B, T] int64: number of keys the row spans (causal: t + 1 positions; bidirectional: valid tokens)."""
    if causal:
        return (torch.arange(T, device=device) + 1).expand(B, T).clone()
    if valid is None:
        return torch.full((B, T), T, dtype=torch.long, device=device)
    return valid.long().sum(-1, keepdim=True).expand(B, T).clone()


def cell_bounds(L: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """L [B, T] -> lo, hi [B, T, K]: cell b spans [round(b L / K), round((b+1) L / K))."""
    b = torch.arange(K + 1, device=L.device)
    edges = torch.div(2 * b * L[..., None] + K, 2 * K, rounding_mode="floor")   # [B, T, K+1]
    return edges[..., :-1], edges[..., 1:]


def valid_positions(valid: torch.Tensor) -> torch.Tensor:
    """bool [B, T] -> [B, T] int64: position of the valid token of each rank (ranks >= L map to T-1)."""
    B, T = valid.shape
    order = torch.argsort((~valid).long(), dim=-1, stable=True)          # valid positions first, in order
    return order


def mask_to_indices(mask: torch.Tensor, *, k: int, causal: bool, valid: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """mask bool [B, H, T, K] -> (idx int32 [B, H, T, W], count int32 [B, H, T])."""
    B, H, T, K = mask.shape
    dev = mask.device
    L = row_lengths(B, T, causal=causal, valid=valid, device=dev)        # [B, T]
    lo, hi = cell_bounds(L, K)                                           # [B, T, K]
    per_cell = (hi - lo).clamp(max=k)[:, None].expand(B, H, T, K)        # [B, H, T, K]
    per_cell = torch.where(mask, per_cell, torch.zeros_like(per_cell))
    ends = per_cell.cumsum(-1)                                           # [B, H, T, K] inclusive
    total = ends[..., -1]                                                # [B, H, T]
    W = max(int(total.max().item()) if total.numel() else 0, 1)
    j = torch.arange(W, device=dev).expand(B, H, T, W).contiguous()      # [B, H, T, W]
    cell = torch.searchsorted(ends.contiguous(), j, right=True).clamp(max=K - 1)   # cell of entry j
    start = ends.gather(-1, cell) - per_cell.gather(-1, cell)            # first entry of that cell
    off = j - start                                                      # [B, H, T, W]
    lo_c = lo[:, None].expand(B, H, T, K).gather(-1, cell)
    width = (hi - lo)[:, None].expand(B, H, T, K).gather(-1, cell)
    n = per_cell.gather(-1, cell).clamp(min=1)
    rank = lo_c + torch.div(off * width, n, rounding_mode="floor")       # [B, H, T, W]
    live = j < total[..., None]
    if valid is not None:
        if causal:
            live = live & valid.gather(1, rank.clamp(0, T - 1).view(B, -1)).view(B, H, T, W)
            pos = rank
        else:
            pos_of_rank = valid_positions(valid)                         # [B, T]
            pos = pos_of_rank.gather(1, rank.clamp(0, T - 1).view(B, -1)).view(B, H, T, W)
    else:
        pos = rank
    idx = torch.where(live, pos, torch.full_like(pos, -1))
    if valid is not None and causal:                                     # dropped padded keys: compact
        idx, _ = torch.sort(torch.where(live, idx, torch.full_like(idx, T)), dim=-1)
        idx = torch.where(idx >= T, torch.full_like(idx, -1), idx)
        live = idx >= 0
    count = live.sum(-1)
    return idx.to(torch.int32).contiguous(), count.to(torch.int32).contiguous()


def indices_to_dense(idx: torch.Tensor, T: int) -> torch.Tensor:
    """[B, H, T, W] index lists -> bool [B, H, T, T] (tests and small-T diagnostics only)."""
    B, H, Tq, W = idx.shape
    dense = torch.zeros(B, H, Tq, T + 1, dtype=torch.bool, device=idx.device)
    dense.scatter_(-1, torch.where(idx >= 0, idx, T).long(), True)
    return dense[..., :T]


def expand_columns(x: torch.Tensor, *, causal: bool, valid: torch.Tensor | None, T: int) -> torch.Tensor:
    """Per-row compressed values x [B, H, R, K] for query rows 0..R-1 -> per-key values [B, H, R, T]
    (nearest: key of rank r in row t takes cell b with lo_b <= r < hi_b; zero outside the row). O(R T)."""
    B, H, R, K = x.shape
    L = row_lengths(B, T, causal=causal, valid=valid, device=x.device)[:, :R]   # [B, R]
    lo, hi = cell_bounds(L, K)                                           # [B, R, K]
    if valid is not None and not causal:
        rank_of_pos = (valid.long().cumsum(-1) - 1).clamp(min=0)         # [B, T]
        rank = rank_of_pos[:, None, :].expand(B, R, T)
        ok = valid[:, None, :].expand(B, R, T)
    else:
        rank = torch.arange(T, device=x.device).expand(B, R, T)
        ok = rank < L[..., None]
        if valid is not None:
            ok = ok & valid[:, None, :]
    cell = torch.searchsorted(hi.contiguous(), rank.contiguous(), right=True).clamp(max=K - 1)   # [B, R, T]
    out = x.gather(-1, cell[:, None].expand(B, H, R, T))
    return out * ok[:, None].to(out.dtype)
