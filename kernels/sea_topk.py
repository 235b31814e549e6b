"""SEA's grouped top-k for the per-row budget modes as one Triton kernel: one program per group (a query row's
H x K cells for causal_per_batch, its K cells for per_query), sorting the group's scores once in registers.

Inputs: the estimate a [B, H, T, K] (only the order matters), the cell widths for the rows' time steps
(width [T, K]; a cell of width 0 covers no key and is never selected) and the budget of each time step
(n [T]; the same for every batch element: no padding mask here). Output: bool [B, H, T, K], the n_t highest
eligible cells of each group (all eligible cells when fewer). Ties at the threshold go to the lowest flat index
in the group, (head, cell) order; torch.topk breaks ties in an unspecified order, so the two agree whenever the
threshold value is unique, which is the case for real-valued estimates.

`select_rows_ref` is the plain restatement used by the tests.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _group_topk_kernel(A, WIDTH, N, OUT, T, H, K: tl.constexpr, HG: tl.constexpr, GP: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    t = pid % T
    rest = pid // T
    groups = H // HG
    h0 = (rest % groups) * HG
    b = rest // groups
    i = tl.arange(0, GP)
    h = h0 + i // K
    c = i % K
    inside = i < HG * K
    off = ((b * H + h) * T + t) * K + c                                   # [GP] flat [B, H, T, K] positions
    w = tl.load(WIDTH + t * K + c, mask=inside, other=0)
    x = tl.load(A + off, mask=inside, other=0.0).to(tl.float32)
    ok = inside & (w > 0)
    x = tl.where(ok, x, float("-inf"))
    n = tl.load(N + t)
    s = tl.sort(x, descending=True)
    thr = tl.sum(tl.where(i == n - 1, s, 0.0), axis=0)                  # the n-th highest score
    finite = x > float("-inf")
    gt = (x > thr) & finite
    eq = (x == thr) & finite
    need = n - tl.sum(gt.to(tl.int32), axis=0)
    before = tl.cumsum(eq.to(tl.int32), 0) - eq.to(tl.int32)            # equal scores at lower indices
    sel = gt | (eq & (before < need))
    tl.store(OUT + off, sel.to(tl.int8), mask=inside)


def select_rows(a: torch.Tensor, width: torch.Tensor, n: torch.Tensor, *, heads_per_group: int) -> torch.Tensor:
    """bool [B, H, T, K]: per group of `heads_per_group` heads (H: causal_per_batch, 1: per_query) and time step
    t, the n[t] highest cells of a among those with width[t, c] > 0."""
    B, H, T, K = a.shape
    if H % heads_per_group or width.shape != (T, K) or n.shape != (T,):
        raise ValueError(f"select_rows: a {tuple(a.shape)}, width {tuple(width.shape)}, n {tuple(n.shape)}, "
                         f"heads_per_group {heads_per_group}")
    out = torch.empty(B, H, T, K, dtype=torch.int8, device=a.device)
    grid = (B * (H // heads_per_group) * T,)
    if grid[0]:
        _group_topk_kernel[grid](a.contiguous(), width.to(torch.int32).contiguous(),
                                 n.to(torch.int32).contiguous(), out, T, H, K=K, HG=heads_per_group,
                                 GP=triton.next_power_of_2(heads_per_group * K))
    return out.view(torch.bool)


def select_rows_ref(a: torch.Tensor, width: torch.Tensor, n: torch.Tensor, *, heads_per_group: int) -> torch.Tensor:
    """The same selection with a stable sort per group (tests only)."""
    B, H, T, K = a.shape
    g = heads_per_group
    x = a.float().masked_fill(~(width > 0)[None, None], float("-inf"))  # [B, H, T, K]
    x = x.view(B, H // g, g, T, K).permute(0, 1, 3, 2, 4).reshape(B, H // g, T, g * K)   # [B, H/g, T, gK]
    order = torch.sort(x, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(g * K).expand_as(order).contiguous())
    sel = (rank < n.view(1, 1, T, 1)) & torch.isfinite(x)
    return sel.view(B, H // g, T, g, K).permute(0, 1, 3, 2, 4).reshape(B, H, T, K)
