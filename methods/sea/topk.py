"""Grouped top-k on the compressed attention estimate A_hat [B, H, T, K].

Row lengths L_t: causal -> t + 1 (positions 0..t; padded keys are dropped later, in interp);
bidirectional -> number of valid tokens of the batch element. Budgets (k = sea.k):
  per_query        n_t = clamp(round(k K / L_t), 1, K) cells of the row's K       (official: round, non-flattened)
  causal_per_batch n_t = clamp(round(H k K / L_t), 1, H K) cells of the H x K     (brief's formula; nothing crosses time)
  per_head         n   = L * clamp(floor(k K / L), 1, K) cells of T x K per (b, h) (official: floor, flattened 'head')
  per_batch        n   = H * L * clamp(floor(k K / L), 1, K) of H x T x K per b     (official: floor, flattened 'batch')
No value threshold. Padded query rows and empty cells (a cell that covers no key because L_t < K) are
never selected; per_head/per_batch rank across time, so they are bidirectional-only.
"""
from __future__ import annotations

import functools

import torch

from methods.sea.interp import cell_bounds, row_lengths

MODES = ("per_query", "per_head", "per_batch", "causal_per_batch")


def budgets(mode: str, L: torch.Tensor, *, k: int, K: int, H: int) -> torch.Tensor:
    """Budget per group. L [B, T] int64 row lengths. Returns [B, T] for per_query/causal_per_batch and
    [B] for per_head/per_batch."""
    Lf = L.clamp(min=1).double()
    if mode == "per_query":
        return torch.floor(k * K / Lf + 0.5).long().clamp(1, K)
    if mode == "causal_per_batch":
        return torch.floor(H * k * K / Lf + 0.5).long().clamp(1, H * K)
    Lb = L.amax(dim=1)                                                   # [B] (bidirectional: constant per row)
    per = torch.floor(k * K / Lb.clamp(min=1).double()).long().clamp(1, K)
    if mode == "per_head":
        return Lb * per
    if mode == "per_batch":
        return H * Lb * per
    raise ValueError(f"unknown top-k mode {mode!r}")


# Query blocks call this once per block (a distinct row0 each): room for many blocks of many shapes, so a sweep
# with 64 or more blocks per call does not recompute every entry on the host in every call (entries are 3 ints).
@functools.lru_cache(maxsize=4096)
def selection_caps(mode: str, *, B: int, H: int, T: int, K: int, k: int, causal: bool,
                   row0: int = 0) -> tuple[int, int, int]:
    """Host-side bounds for a call without a padding mask (computed on CPU from shapes alone, so no device
    sync): (selected cells at most, interpolated keys at most, largest group budget). Cells selected per
    group <= min(budget, eligible cells); keys per cell <= min(k, widest cell of the row); a causal row
    never has more than L_t keys. row0: the rows are positions row0 .. row0 + T - 1 (causal query block)."""
    L = row_lengths(1, T, causal=causal, valid=None, device="cpu", row0=row0)   # [1, T]
    lo, hi = cell_bounds(L, K)                                           # [1, T, K]
    elig = (hi > lo).sum(-1)[0]                                          # [T] non-empty cells per row
    per_cell = (hi - lo).amax(-1)[0].clamp(max=k)                        # [T] keys per cell at most
    n = budgets(mode, L, k=k, K=K, H=H)
    Lt = L[0]
    if mode == "per_query":
        cells = torch.minimum(n[0], elig)                                # per (b, h, t)
        keys = torch.minimum(cells * per_cell, Lt)
        return int(cells.sum()) * B * H, int(keys.sum()) * B * H, int(n.max())
    if mode == "causal_per_batch":
        cells = torch.minimum(n[0], H * elig)                            # per (b, t), all heads
        keys = torch.minimum(cells * per_cell, H * Lt)
        return int(cells.sum()) * B, int(keys.sum()) * B, int(n.max())
    groups, rows = (B * H, T) if mode == "per_head" else (B, H * T)     # bidirectional: L_t = T
    cells = min(int(n.max()), rows * int(elig.max()))
    keys = min(cells * int(per_cell.max()), rows * T)
    return groups * cells, groups * keys, int(n.max())


def _rank_select(scores: torch.Tensor, n: torch.Tensor, kmax: int | None = None) -> torch.Tensor:
    """scores [..., G] (-inf = ineligible), n [...] budgets -> bool [..., G]: the n highest eligible.
    kmax: n.max() when the caller knows it on the host (saves a device sync)."""
    G = scores.shape[-1]
    if kmax is None:
        kmax = int(n.max().item()) if n.numel() else 0
    kmax = int(min(G, kmax))
    sel = torch.zeros_like(scores, dtype=torch.bool)
    if kmax == 0:
        return sel
    vals, idx = torch.topk(scores, kmax, dim=-1, sorted=True)            # [..., kmax]
    rank = torch.arange(kmax, device=scores.device)
    keep = (rank < n[..., None]) & torch.isfinite(vals)
    sel.scatter_(-1, idx, keep)
    return sel


# Row ranges only from this length on: on an H200 they took the causal top-k from 5.4 to 3.1 ms at 64k and from
# 19.9 to 10.4 ms at 256k, but from 1.38 to 1.83 ms at 16k (more launches than savings);
# results/nvidia-h200/sea-levers/.
BUCKETS_FROM_T = 32768


@functools.lru_cache(maxsize=64)
def row_buckets(mode: str, *, H: int, T: int, K: int, k: int, causal: bool,
                min_rows: int = 1024) -> tuple[tuple[int, int, int], ...]:
    """For the per-row budget modes without padding: ((start, end, cap), ...) ranges of query rows whose
    budgets n_t are all <= cap, cap a power of two (or the group size), consecutive rows with the same cap
    together and ranges shorter than `min_rows` merged into their neighbour with the larger cap. Causal
    budgets fall like 1 / (t + 1), so most rows of a long sequence need a top-k of a few cells instead of a
    sort of all H K (causal_per_batch) or K (per_query) candidates. Computed on the host from shapes alone.
    The selection is the same as one ranking wherever the score at a row's threshold is unique; among cells
    tied at the threshold (SEA's causal decoder repeats each of its K/4 columns 4 times, so ties are common)
    torch.topk chooses in an unspecified order, with one cap or another alike."""
    G = H * K if mode == "causal_per_batch" else K
    L = row_lengths(1, T, causal=causal, valid=None, device="cpu")       # [1, T]
    n = budgets(mode, L, k=k, K=K, H=H)[0].tolist()                      # [T]
    caps = [min(G, 1 << max(0, int(x) - 1).bit_length()) for x in n]     # next power of two >= n_t
    out: list[list[int]] = []
    for t, c in enumerate(caps):
        if out and out[-1][2] == c:
            out[-1][1] = t + 1
        else:
            out.append([t, t + 1, c])
    merged: list[list[int]] = []
    for r in out:
        if merged and (r[1] - r[0] < min_rows or merged[-1][1] - merged[-1][0] < min_rows):
            merged[-1][1] = r[1]
            merged[-1][2] = max(merged[-1][2], r[2])
        else:
            merged.append(r)
    return tuple(tuple(r) for r in merged)


def _rank_select_rows(scores: torch.Tensor, n: torch.Tensor, buckets) -> torch.Tensor:
    """_rank_select over query-row ranges (axis -2 of scores [..., T, G], n [..., T]), each with its own cap."""
    if len(buckets) == 1:
        return _rank_select(scores, n, buckets[0][2])
    return torch.cat([_rank_select(scores[..., s:e, :], n[..., s:e], cap) for s, e, cap in buckets], dim=-2)


# auto picks the kernel for groups of at most this many candidates (H*K for causal_per_batch, K for per_query):
# the size it was measured at on an H200 (16 heads x 64 cells; 2.2-3.5x faster than the tensor ops at T=16k-256k,
# results/nvidia-h200/sea-kernels/). Larger groups sort more in registers per program: not measured, so not picked.
AUTO_KERNEL_MAX_GROUP = 1024


# auto picks kernels/sea_topk_global.py for per_head / per_batch on CUDA. Measured on an H200 (bf16, B=1, H=16, D=64,
# bidirectional SEA fast, per_batch): 64k 17.41 -> 16.28 ms, 256k 64.76 -> 59.57 ms, CUDA-graph replay 64k 16.24 ->
# 14.93 ms, same output (results/nvidia-h200/sea-round19/call3/); the selection alone on SEA's 64k estimate 2.0-2.2 ms
# against 3.4 ms for the torch.topk path (call4/probe-topk-global.txt).
AUTO_GLOBAL_KERNEL = True


def topk_path(mode: str, *, H: int, K: int, valid: torch.Tensor | None, backend: str, device) -> str:
    """Which path select_topk runs: 'triton' or 'torch' (tensor ops). The kernels serve calls without a padding
    mask: kernels/sea_topk.py the per-row budget modes (per_query, causal_per_batch), kernels/sea_topk_global.py
    the modes that rank across time (per_head, per_batch: a radix select over each group's T K or H T K cells).
    backend triton asks for them there; auto takes the per-row kernel on CUDA for groups up to
    AUTO_KERNEL_MAX_GROUP candidates and the global one on CUDA when AUTO_GLOBAL_KERNEL; torch never."""
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"top-k backend {backend!r}: expected auto, torch or triton")
    kernel_ok = valid is None and mode in MODES
    if backend == "triton":
        return "triton" if kernel_ok else "torch"
    if backend == "auto":
        cuda = torch.device(device).type == "cuda"
        if mode in ("per_head", "per_batch"):
            return "triton" if kernel_ok and cuda and AUTO_GLOBAL_KERNEL else "torch"
        group = H * K if mode == "causal_per_batch" else K
        return "triton" if kernel_ok and cuda and group <= AUTO_KERNEL_MAX_GROUP else "torch"
    return "torch"


def select_topk(probs: torch.Tensor, *, mode: str, k: int, causal: bool,
                valid: torch.Tensor | None = None, backend: str = "torch", row0: int = 0) -> torch.Tensor:
    """probs [B, H, T, K] (A_hat; only the order matters) -> bool compressed mask [B, H, T, K].
    backend: see topk_path (the kernel sorts each group once in registers; ties at the threshold go to the lowest
    index there, while torch.topk breaks them in an unspecified order). row0 (causal, no padding): the rows are
    positions row0 .. row0 + T - 1 of a longer sequence (a query block); per-row modes only."""
    B, H, T, K = probs.shape
    if row0 and (valid is not None or not causal or mode not in ("per_query", "causal_per_batch")):
        raise ValueError("top-k over a query block (row0 > 0) needs causal rows, a per-row mode and no padding mask")
    if causal and mode in ("per_head", "per_batch"):
        raise ValueError(f"top-k mode {mode} ranks across time and would leak the future; "
                         "causal attention needs per_query or causal_per_batch")
    kernel = topk_path(mode, H=H, K=K, valid=valid, backend=backend, device=probs.device) == "triton"
    if kernel and mode in ("per_head", "per_batch"):
        from kernels.sea_topk_global import select_global

        L1 = row_lengths(1, T, causal=False, valid=None, device=probs.device)   # [1, T]: every row spans T keys
        lo1, hi1 = cell_bounds(L1, K)                                     # [1, T, K], the same for every row
        n = budgets(mode, L1, k=k, K=K, H=H)                              # [1]
        G = B * H if mode == "per_head" else B
        sel = select_global(probs.detach().contiguous(), n.expand(G).contiguous(), (hi1 - lo1)[0, 0])   # [G, N]
        return sel.view(B, H, T, K)
    if kernel:
        from kernels.sea_topk import select_rows

        L1 = row_lengths(1, T, causal=causal, valid=None, device=probs.device, row0=row0)   # [1, T]
        lo1, hi1 = cell_bounds(L1, K)                                     # [1, T, K]
        n = budgets(mode, L1, k=k, K=K, H=H)[0]                           # [T]
        per_group = H if mode == "causal_per_batch" else 1
        return select_rows(probs.detach(), (hi1 - lo1)[0], n, heads_per_group=per_group)
    L = row_lengths(B, T, causal=causal, valid=valid, device=probs.device, row0=row0)   # [B, T]
    lo, hi = cell_bounds(L, K)                                           # [B, T, K]
    eligible = hi > lo                                                   # [B, T, K]
    if valid is not None:
        eligible = eligible & valid[:, :, None]
    scores = probs.detach().float().masked_fill(~eligible[:, None], float("-inf"))   # [B, H, T, K]
    n = budgets(mode, L, k=k, K=K, H=H)
    kmax = selection_caps(mode, B=B, H=H, T=T, K=K, k=k, causal=causal, row0=row0)[2] if valid is None else None
    ranged = valid is None and mode in ("per_query", "causal_per_batch") and T >= BUCKETS_FROM_T and row0 == 0
    buckets = row_buckets(mode, H=H, T=T, K=K, k=k, causal=causal) if ranged else ((0, T, kmax),)
    if mode == "per_query":
        return _rank_select_rows(scores, n[:, None, :].expand(B, H, T), buckets)
    if mode == "causal_per_batch":
        flat = scores.permute(0, 2, 1, 3).reshape(B, T, H * K)           # [B, T, H*K]
        sel = _rank_select_rows(flat, n, buckets)                        # [B, T, H*K]
        return sel.view(B, T, H, K).permute(0, 2, 1, 3)                  # [B, H, T, K]
    if mode == "per_head":
        sel = _rank_select(scores.reshape(B, H, T * K), n[:, None].expand(B, H), kmax)
        return sel.view(B, H, T, K)
    sel = _rank_select(scores.reshape(B, H * T * K), n, kmax)            # per_batch
    return sel.view(B, H, T, K)
