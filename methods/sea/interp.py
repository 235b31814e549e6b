"""Compressed mask [B, H, T, K] -> per-query key lists in CSR form, without a T x T tensor.

Geometry: row t has L_t keys (see row_lengths); compressed cell b covers key ranks
[round(b s), round((b+1) s)) with s = L_t / K (round half up, exact integer arithmetic). A selected cell
contributes min(width, k) keys uniformly spaced in it: rank lo + floor(j * width / n), j < n.
Ranks are positions among the valid tokens (bidirectional) or absolute positions (causal: cells cover
[0, t], then padded keys are dropped), so the causal mask holds by construction.

Mask format (the kernel's input): CSR over the flattened query rows r = (b * H + h) * T + t
  row_ptr int64 [B*H*T + 1], col int32 [nnz] (keys ascending inside a row).
Why CSR and not fixed-width padded lists: the grouped top-k modes that share a budget across heads or
rows (causal_per_batch, per_batch) give uneven rows, and a padded layout costs B H T x (widest row),
which at long T can be several times the nnz (and O(T^2) in the worst case); CSR costs exactly nnz + rows.
One kernel program per query row reads its [row_ptr[r], row_ptr[r+1]) slice, so the layout serves the
forward and the backward (dk/dv by atomics) with one indirection. It is built from the selected
(row, cell) pairs with repeat_interleave: O(nnz + B H T K) memory.
"""
from __future__ import annotations

import functools

import torch


def row_lengths(B: int, T: int, *, causal: bool, valid: torch.Tensor | None, device, row0: int = 0) -> torch.Tensor:
    """[B, T] int64: number of keys the row spans (causal: t + 1 positions; bidirectional: valid tokens).
    row0 (causal, no padding): the rows are positions row0 .. row0 + T - 1 of a longer sequence (a query block)."""
    if causal:
        return (torch.arange(row0, row0 + T, device=device) + 1).expand(B, T).clone()
    if row0:
        raise ValueError("row0 (query blocks) is for causal rows only")
    if valid is None:
        return torch.full((B, T), T, dtype=torch.long, device=device)
    return valid.long().sum(-1, keepdim=True).expand(B, T).clone()


def cell_bounds(L: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """L [B, T] -> lo, hi [B, T, K]: cell b spans [round(b L / K), round((b+1) L / K))."""
    b = torch.arange(K + 1, device=L.device)
    edges = torch.div(2 * b * L[..., None] + K, 2 * K, rounding_mode="floor")   # [B, T, K+1]
    return edges[..., :-1], edges[..., 1:]


def nomask_cell_widths(T: int, K: int, device) -> torch.Tensor:
    """float32 [K]: the keys in each of a bidirectional row's K cells without a padding mask (L = T), at least 1:
    (hi - lo).clamp(min=1) of cell_bounds, a function of T and K alone, made once per (T, K, device) (it was ~8
    small launches a forward). While a CUDA graph is being captured it is computed, not cached: a tensor made during
    capture holds its values only once the graph replays."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return _cell_widths(T, K, dev)
    return _cached_cell_widths(T, K, str(dev))


def _cell_widths(T: int, K: int, device: torch.device) -> torch.Tensor:
    lo, hi = cell_bounds(torch.full((1, 1), T, dtype=torch.long, device=device), K)   # [1, 1, K]
    return (hi - lo).clamp(min=1)[0, 0].float()


@functools.lru_cache(maxsize=256)       # K floats an entry
def _cached_cell_widths(T: int, K: int, device: str) -> torch.Tensor:
    return _cell_widths(T, K, torch.device(device))


def valid_positions(valid: torch.Tensor) -> torch.Tensor:
    """bool [B, T] -> [B, T] int64: position of the valid token of each rank (ranks >= L: padded ones)."""
    return torch.argsort((~valid).long(), dim=-1, stable=True)          # valid positions first, in order


def mask_to_csr(mask: torch.Tensor, *, k: int, causal: bool, valid: torch.Tensor | None = None,
                caps: tuple[int, ...] | None = None, backend: str = "torch", row0: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """mask bool [B, H, T, K] -> (row_ptr int64 [B*H*T + 1], col int32 [nnz]).

    caps = (selected cells at most, keys at most, ...) known on the host (topk.selection_caps) and no
    padding mask: the lists are built without a device sync, and col has the capacity length (entries
    past row_ptr[-1] are filler that no row points at). backend "triton" (that case only): the row pointers
    and columns come from two kernels reading the mask bytes (kernels/sea_interp.py: row_key_counts +
    csr_columns_cells) instead of the pair/search ops; the lists are identical."""
    if backend not in ("torch", "triton"):
        raise ValueError(f"interpolation backend {backend!r}: expected torch or triton")
    if caps is not None and valid is None:
        return _mask_to_csr_nosync(mask, k=k, causal=causal, cells_cap=int(caps[0]), keys_cap=int(caps[1]),
                                   backend=backend, row0=row0)
    if row0:
        raise ValueError("mask_to_csr: query blocks (row0 > 0) need the host-side caps and no padding mask")
    B, H, T, K = mask.shape
    dev = mask.device
    L = row_lengths(B, T, causal=causal, valid=valid, device=dev)        # [B, T]
    lo, hi = cell_bounds(L, K)                                           # [B, T, K]
    width = hi - lo                                                      # [B, T, K]
    n_cell = width.clamp(max=k)[:, None].expand(B, H, T, K)              # keys per cell [B, H, T, K]
    pair = torch.nonzero((mask & (n_cell > 0)).reshape(-1)).squeeze(1)   # selected (b, h, t, c), flat
    b_p = pair // (H * T * K)
    t_p = (pair // K) % T
    c_p = pair % K
    bt = (b_p * T + t_p) * K + c_p                                       # index into [B, T, K]
    n_p = n_cell.reshape(-1)[pair]                                       # [P]
    lo_p, w_p = lo.reshape(-1)[bt], width.reshape(-1)[bt]
    e_pair = torch.repeat_interleave(torch.arange(pair.numel(), device=dev), n_p)   # pair of each entry [nnz]
    first = torch.cumsum(n_p, 0) - n_p                                   # first entry of each pair
    off = torch.arange(e_pair.numel(), device=dev) - first[e_pair]
    rank = lo_p[e_pair] + torch.div(off * w_p[e_pair], n_p[e_pair], rounding_mode="floor")   # [nnz]
    row = pair[e_pair] // K                                              # flat query row (b, h, t)
    b_e = b_p[e_pair]
    if valid is not None:
        if causal:
            keep = valid[b_e, rank]                                      # drop padded keys
            rank, row, b_e = rank[keep], row[keep], b_e[keep]
            col = rank
        else:
            col = valid_positions(valid)[b_e, rank]                      # rank among valid -> position
    else:
        col = rank
    counts = torch.bincount(row, minlength=B * H * T)
    row_ptr = torch.zeros(B * H * T + 1, dtype=torch.int64, device=dev)
    row_ptr[1:] = torch.cumsum(counts, 0)
    return row_ptr, col.to(torch.int32).contiguous()


def _mask_to_csr_nosync(mask: torch.Tensor, *, k: int, causal: bool, cells_cap: int, keys_cap: int,
                        backend: str = "torch", row0: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Same lists as mask_to_csr (no padding mask) with static sizes: the selected (row, cell) pairs by
    nonzero_static (flat order = rows ascending, cells ascending), each key entry finds its pair by a
    binary search over the pairs' cumulative key counts. Row counts come from the dense mask. backend
    "triton": a row-count kernel + cumsum and the columns kernel, no tensor temporaries (identical lists)."""
    if backend == "triton":
        # Two kernels straight from the mask bytes (any strides; a selected cell of width 0 adds no key, so
        # no `mask & (width > 0)` copy), cell edges computed in-kernel from t: no [T, K] or [B, H, T, K]
        # temporaries. Same lists as below (tests/test_sea_interp_counts.py).
        from kernels.sea_interp import csr_columns_cells, row_key_counts

        row_ptr = row_key_counts(mask, k, causal=causal, row0=row0, row_ptr=True)   # [B*H*T + 1]
        return row_ptr, csr_columns_cells(mask, row_ptr, k, max(keys_cap, 1), causal=causal, row0=row0)
    B, H, T, K = mask.shape
    dev = mask.device
    L = row_lengths(1, T, causal=causal, valid=None, device=dev, row0=row0)   # [1, T]
    lo, hi = cell_bounds(L, K)                                           # [1, T, K]
    width = (hi - lo)[0]                                                 # [T, K]
    n_cell = width.clamp(max=k)                                          # keys per cell [T, K]
    sel = mask & (n_cell > 0)                                            # [B, H, T, K]
    counts = _row_key_counts(sel, n_cell, k).reshape(-1)                # keys per row [B*H*T]
    row_ptr = torch.zeros(B * H * T + 1, dtype=torch.int64, device=dev)
    torch.cumsum(counts, 0, out=row_ptr[1:])
    cells_cap = max(cells_cap, 1)
    pair = torch.nonzero_static(sel.reshape(-1), size=cells_cap, fill_value=0).squeeze(1)   # [cells_cap]
    n_sel = sel.sum()                                                    # device scalar: real pairs
    tk = pair % (T * K)                                                  # (t, c) of each pair
    real = torch.arange(cells_cap, device=dev) < n_sel
    n_p = torch.where(real, n_cell.reshape(-1)[tk], 0)                   # keys of each pair (filler: 0)
    end = torch.cumsum(n_p, 0)                                           # [cells_cap]
    e = torch.arange(max(keys_cap, 1), device=dev)                       # key entries (beyond nnz: filler)
    p = torch.searchsorted(end, e, right=True).clamp(max=cells_cap - 1)  # pair of each entry
    off = e - (end[p] - n_p[p])                                          # index inside the pair's cell
    w_p, n_pp = width.reshape(-1)[tk[p]], n_p[p].clamp(min=1)
    col = lo.reshape(-1)[tk[p]] + torch.div(off * w_p, n_pp, rounding_mode="floor")   # key rank = position
    col = torch.where(e < row_ptr[-1], col, 0)                           # filler entries -> key 0
    return row_ptr, col.to(torch.int32).contiguous()


def csr_counts(row_ptr: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Keys per query row [B, H, T]."""
    return (row_ptr[1:] - row_ptr[:-1]).view(shape)


def csr_to_dense(row_ptr: torch.Tensor, col: torch.Tensor, shape: tuple[int, int, int], T_k: int,
                 rows: torch.Tensor | None = None) -> torch.Tensor:
    """bool [B, H, R, T_k] selection for query rows `rows` (all if None). O(R T_k): diagnostics and tests."""
    B, H, T = shape
    col = col[:int(row_ptr[-1])]                                         # capacity layouts carry filler
    counts = row_ptr[1:] - row_ptr[:-1]
    row_of = torch.repeat_interleave(torch.arange(B * H * T, device=col.device), counts)   # [nnz]
    t_of = row_of % T
    if rows is None:
        rows = torch.arange(T, device=col.device)
    slot = torch.full((T,), -1, dtype=torch.long, device=col.device)
    slot[rows] = torch.arange(len(rows), device=col.device)
    s = slot[t_of]
    keep = s >= 0
    bh = row_of[keep] // T
    dense = torch.zeros(B * H, len(rows), T_k, dtype=torch.bool, device=col.device)
    dense[bh, s[keep], col[keep].long()] = True
    return dense.view(B, H, len(rows), T_k)


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


def selected_counts(mask: torch.Tensor, *, k: int, causal: bool) -> torch.Tensor:
    """Keys per query row [B, H, T] without building the lists (no padding mask): sum of min(width, k)
    over the selected cells."""
    B, H, T, K = mask.shape
    L = row_lengths(1, T, causal=causal, valid=None, device=mask.device)   # [1, T]
    lo, hi = cell_bounds(L, K)                                           # [1, T, K]
    n_cell = (hi - lo).clamp(max=k)[0]                                   # [T, K]
    return _row_key_counts(mask, n_cell, k)                              # [B, H, T]


def _row_key_counts(mask: torch.Tensor, n_cell: torch.Tensor, k: int) -> torch.Tensor:
    """sum_c mask[b, h, t, c] n_cell[t, c] -> int64 [B, H, T], with a 1-byte product when k < 256 (the
    [B, H, T, K] temporary is the big one)."""
    small = torch.uint8 if k < 256 else torch.int32
    return (mask.to(small) * n_cell.to(small)).sum(-1, dtype=torch.int64)


def active_tiles(mask: torch.Tensor, *, causal: bool, block_m: int, block_n: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Key tiles a block of `block_m` query rows must visit (no padding mask), without a host sync.

    A tile [j block_n, (j+1) block_n) is active for query block i (of one (b, h)) when some row of the block
    selected a cell overlapping it. Cells only move right as t grows (L_t = t + 1), so a cell's span over the
    block is [lo(first row), hi(last row)): a superset, which is enough since the kernel tests membership
    key by key. Returns tiles int32 [B*H*nQB, nKB] (active tile ids first, ascending) and ntiles int32
    [B*H*nQB]."""
    B, H, T, K = mask.shape
    dev = mask.device
    nqb, nkb = -(-T // block_m), -(-T // block_n)
    pad = nqb * block_m - T
    m = torch.nn.functional.pad(mask, (0, 0, 0, pad)) if pad else mask   # [B, H, nqb*bm, K]
    blk = m.view(B, H, nqb, block_m, K).any(3)                           # [B, H, nqb, K]
    first = torch.arange(nqb, device=dev) * block_m                      # first row of each block
    last = (first + block_m).clamp(max=T) - 1
    if causal:
        lo, _ = cell_bounds((first + 1)[None], K)                        # [1, nqb, K]
        _, hi = cell_bounds((last + 1)[None], K)
    else:
        lo, hi = cell_bounds(torch.full((1, nqb), T, device=dev), K)
    live = blk & (hi > lo)[:, None]                                      # [B, H, nqb, K]
    start = (lo // block_n).expand_as(live)                              # [B, H, nqb, K]
    stop = ((hi - 1).clamp(min=0) // block_n + 1).expand_as(live)
    diff = torch.zeros(B, H, nqb, nkb + 1, dtype=torch.int32, device=dev)
    one = live.to(torch.int32)
    diff.scatter_add_(-1, start, one).scatter_add_(-1, stop, -one)
    active = diff.cumsum(-1)[..., :nkb] > 0                              # [B, H, nqb, nkb]
    pos = active.to(torch.int32).cumsum(-1) - 1                          # slot of each active tile
    slot = torch.where(active, pos.long(), nkb)                          # inactive -> a spare slot
    tiles = torch.zeros(B, H, nqb, nkb + 1, dtype=torch.int32, device=dev)
    ids = torch.arange(nkb, dtype=torch.int32, device=dev).expand(B, H, nqb, nkb)
    tiles.scatter_(-1, slot, ids)                                        # spare slot: overwritten, dropped
    ntiles = active.sum(-1, dtype=torch.int32)                           # [B, H, nqb]
    return tiles[..., :nkb].reshape(B * H * nqb, nkb).contiguous(), ntiles.reshape(-1).contiguous()
