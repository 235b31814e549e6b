"""Shared-key selection (option `shared_keys`): blocks of query rows that attend one key set, chosen for the block.
(Causal first; bidirectional layers at the end.)

The paper's SEA picks cells per query row: each row t ranks the K cells of its own estimate row A_hat[t] (cell c of
row t spans keys [round(c L_t / K), round((c+1) L_t / K)), L_t = t + 1) and attends min(width, k) keys spread over
each selected cell (methods/sea/interp.py). Its sparse attention gathers every row's own keys (~38 a row at T = 16k,
few of them shared by neighbouring rows), which makes that kernel a gather of scattered rows, not a matrix product.

Here the rows of a block j = [j R, min(T, (j+1) R)) (R = shared_keys) share one selection:
  * geometry: the block's end, L_j = min(T, (j+1) R), for all its rows (cell c spans [round(c L_j / K),
    round((c+1) L_j / K))). A cell is eligible when it holds a key before the block's first row j R.
  * score of a block cell (SCORE_POOL): "rebin" (default) adds A_hat[t, c] of each row t of the block into the
    block cell that holds the middle key of row t's cell c (A_hat rows use their own geometry L_t = t + 1; at
    t << K R the two geometries differ by several cells); "sum" adds it into block cell c. On SmolLM2's real q/k/v
    with the oracle estimate (T = 2048, R = 64, budget 2) rebin gives a mean error of 0.186, sum 0.239
    (results/cpu/sea-shared-keys/).
  * budget: the per-row budget of topk.budgets at L_j times `budget` (float), rounded half up:
    causal_per_batch n_j = clamp(round(budget H k K / L_j), 1, H K) cells of the block's H x K (all heads),
    per_query n_j = clamp(round(budget k K / L_j), 1, K) of each head's K. Ties go to the lowest index (a stable
    sort; kernels/sea_topk.py's select_rows breaks them alike on CUDA).
  * keys: of a selected cell, interp.py's rule at L_j (min(width, k) keys at lo + floor(i width / n)) restricted to
    keys before j R; and the block's own keys j R .. t for row t (an R x R causal tile). The per-row selection
    always holds a row's latest cell (in causal language models the heaviest); a block's shared cells cannot hold
    every row's, so the block attends its own keys densely.
Every row attends at least itself. This is an approximation of its own, not an identity of SEA's: its fidelity is
measured (results/cpu/sea-shared-keys/), and the speed it buys (results/nvidia-h200/).

Bidirectional layers (causal=False; top-k modes per_batch / per_head): every row spans the T keys, so all blocks take
the geometry L = T and the block scores are plain sums over the block's rows; a group's block cells (per_batch: a batch
element's H x NB x K, per_head: a head's NB x K) are ranked together against budget times the per-row rule's count
for NB rows (bidirectional_budget; on CUDA kernels/sea_topk_global.py's radix select, over 1 / R of the per-row
selection's cells); a block attends the chosen cells' keys outside its own rows and all of its R own keys (a cell
that lies inside the block's rows adds nothing). With a padding mask the budget still counts T positions and padded
keys are dropped from the lists.

Layouts: kernels/sea_shared_attention.py reads the blocks' selection (bool [B, H, NB, K]) itself. `shared_row_csr`
expands the selection to interp.py's per-row CSR lists (the block's cell keys before it, then its own keys up to the
row): the path for calls with gradients, on CPU and for padding masks (padded keys dropped), and the exact
re-statement the kernel is tested against (besides `shared_dense_mask`, a plain loop).
"""
from __future__ import annotations

import functools

import torch

from methods.sea.interp import cell_bounds

SHARED_MODES = ("per_query", "causal_per_batch")
# The keys a selected cell brings (option shared_span): "strided", interp.py's min(width, k) keys spread over the cell
# (the paper's rule); "blocks", every key of the R-aligned key blocks holding the cell's keys (contiguous runs,
# FlexAttention's block-sparse format: methods/sea/flex_shared.py).
SPANS = ("strided", "blocks")
BIDIRECTIONAL_MODES = ("per_head", "per_batch")


def block_ends(T: int, R: int, device, causal: bool = True) -> torch.Tensor:
    """int64 [NB]: the geometry of each block of R query rows: L_j = min(T, (j + 1) R) causal, T bidirectional."""
    NB = -(-T // R)
    if not causal:
        return torch.full((NB,), T, dtype=torch.long, device=device)
    return ((torch.arange(NB, device=device) + 1) * R).clamp(max=T)


# How block_scores pools the block's rows: "sum" adds A_hat[t, c] into the block's cell c; "rebin" adds it into the
# block cell holding the middle key of row t's cell c (the row's geometry L_t = t + 1 moved to the block's L_j).
SCORE_POOL = "rebin"
POOLS = ("sum", "rebin")


def rebin_index(T: int, R: int, K: int, device) -> torch.Tensor:
    """int64 [T, K]: for row t's cell c (row geometry), the flat block cell j K + c' (block geometry L_j) holding the
    cell's middle key; a cell of width 0 maps to where its edge falls."""
    L = torch.arange(1, T + 1, device=device)[None]                      # [1, T]
    lo, hi = cell_bounds(L, K)                                           # [1, T, K]
    mid = torch.div(lo + torch.clamp(hi - 1, min=lo), 2, rounding_mode="floor")[0]   # [T, K]
    j = torch.arange(T, device=device) // R                              # [T]
    edges_lo, _ = cell_bounds(block_ends(T, R, device)[None], K)         # [1, NB, K]
    c = torch.searchsorted(edges_lo[0][j].contiguous(), mid.contiguous(), right=True) - 1   # [T, K]
    return j[:, None] * K + c.clamp(0, K - 1)


@functools.lru_cache(maxsize=16)
def rebin_tables(T: int, R: int, K: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What the rebin kernel reads, made once per shape: shift int16 [T, K] = c - c' (row t's cell c goes to block
    cell c' = rebin_index's), srange int32 [NB, 2] each block's smallest and largest shift."""
    idx = rebin_index(T, R, K, torch.device(device))                    # [T, K] flat j K + c'
    shift = torch.arange(K, device=idx.device)[None] - idx % K          # [T, K]
    NB = -(-T // R)
    sp = torch.nn.functional.pad(shift, (0, 0, 0, NB * R - T)).view(NB, R, K)   # padded rows: shift 0
    srange = torch.stack([sp.amin((1, 2)), sp.amax((1, 2))], 1)
    return shift.to(torch.int16).contiguous(), srange.to(torch.int32).contiguous()


def block_scores(a_hat: torch.Tensor, R: int, pool: str | None = None, backend: str = "torch", *,
                 T: int | None = None, row0: int = 0) -> torch.Tensor:
    """A_hat [B, H, Tc, K] -> float32 [B, H, NB, K]: each block's rows pooled per cell (SCORE_POOL, or `pool`).
    backend 'triton': rebin by kernels/sea_shared_attention.py's rebin_scores (same sums, another order).
    The rows may be rows row0 .. row0 + Tc - 1 of a sequence of T rows (default: all of them, T = Tc; row0 a multiple
    of R, ending a block or the sequence): blocks pool independently, so the result is rows row0 / R .. of the whole
    sequence's block scores (up to summation order), NB the blocks those rows make up."""
    pool = SCORE_POOL if pool is None else pool
    if pool not in POOLS:
        raise ValueError(f"block score pooling {pool!r}: expected one of {POOLS}")
    B, H, Tc, K = a_hat.shape
    T = Tc if T is None else T
    if row0 % R or row0 + Tc > T or (row0 + Tc < T and Tc % R):
        raise ValueError(f"block_scores: rows {row0} .. {row0 + Tc - 1} of {T} must start a block of {R} rows "
                         "and end one (or the sequence)")
    j0, NB = row0 // R, -(-(row0 + Tc) // R) - row0 // R
    if pool == "rebin" and backend == "triton":
        from kernels.sea_shared_attention import rebin_scores

        shift, srange = rebin_tables(T, R, K, str(a_hat.device))
        return rebin_scores(a_hat.detach(), R, shift[row0:row0 + Tc], srange[j0:j0 + NB])
    if pool == "sum" and NB * R == Tc:                                   # fp32 sums of A_hat's values, no copy
        return a_hat.detach().reshape(B, H, NB, R, K).sum(3, dtype=torch.float32)
    a = a_hat.detach().float()
    if pool == "rebin":                                                  # [Tc, K] flat cells of these blocks
        idx = (rebin_index(T, R, K, a.device)[row0:row0 + Tc] - j0 * K).reshape(1, 1, Tc * K).expand(B, H, Tc * K)
        out = torch.zeros(B, H, NB * K, dtype=torch.float32, device=a.device)
        return out.scatter_add_(-1, idx, a.reshape(B, H, Tc * K)).view(B, H, NB, K)
    if NB * R != Tc:                                                     # the last block is short: zero rows
        a = torch.nn.functional.pad(a, (0, 0, 0, NB * R - Tc))
    return a.view(B, H, NB, R, K).sum(3)


def block_budgets(mode: str, ends: torch.Tensor, *, k: int, K: int, H: int, budget: float) -> torch.Tensor:
    """int64 [NB] cells per block group (topk.budgets' per-row rule at L_j, times `budget`)."""
    L = ends.clamp(min=1).double()
    if mode == "per_query":
        return torch.floor(budget * k * K / L + 0.5).long().clamp(1, K)
    if mode == "causal_per_batch":
        return torch.floor(budget * H * k * K / L + 0.5).long().clamp(1, H * K)
    raise ValueError(f"shared_keys: top-k mode {mode!r} is not a per-row mode; expected one of {SHARED_MODES}")


def eligible_widths(T: int, R: int, K: int, device, causal: bool = True) -> torch.Tensor:
    """int64 [NB, K]: the width of each block cell (block geometry), 0 where the cell is empty or (causal) holds no
    key before the block's first row (those keys are the block's own, attended anyway): the cells a block may select.
    Bidirectional: every non-empty cell (one that lies inside the block's own rows adds no key: the block has them)."""
    ends = block_ends(T, R, device, causal)
    lo, hi = cell_bounds(ends[None], K)                                  # [1, NB, K]
    if not causal:
        return hi[0] - lo[0]
    starts = (torch.arange(ends.numel(), device=device) * R)[:, None]   # [NB, 1]
    return torch.where(lo[0] < starts, hi[0] - lo[0], 0)


def bidirectional_budget(mode: str, *, T: int, R: int, k: int, K: int, H: int, budget: float) -> int:
    """Cells ranked together per group (per_batch: a batch element's H x NB x K block cells, per_head: a head's
    NB x K): topk.budgets' per-row rule (floor(k K / T) cells a row, at least 1) for NB block rows, times `budget`."""
    if mode not in BIDIRECTIONAL_MODES:
        raise ValueError(f"shared_keys: bidirectional top-k mode {mode!r}; expected one of {BIDIRECTIONAL_MODES}")
    NB = -(-T // R)
    per = min(max(k * K // max(T, 1), 1), K)
    groups = H if mode == "per_batch" else 1
    return max(1, min(groups * NB * K, int(budget * groups * NB * per + 0.5)))


@functools.lru_cache(maxsize=64)
def selection_shape(mode: str, *, T: int, R: int, K: int, k: int, H: int, budget: float, device: str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(eligible widths [NB, K], budgets [NB]) of a call shape, made once (a CUDA-graph replay or a benchmark loop
    then launches only the score, top-k and attention kernels)."""
    dev = torch.device(device)
    ends = block_ends(T, R, dev)
    return eligible_widths(T, R, K, dev), block_budgets(mode, ends, k=k, K=K, H=H, budget=budget)


def select_blocks(a_hat: torch.Tensor | None, *, R: int, mode: str, k: int, budget: float, backend: str = "torch",
                  causal: bool = True, col_sums: dict | None = None, scores: torch.Tensor | None = None,
                  T: int | None = None) -> torch.Tensor:
    """bool [B, H, NB, K]: the cells each block of R query rows attends. backend 'triton': the top-k kernel of
    kernels/sea_topk.py on the block scores (CUDA; bidirectional: the radix select of kernels/sea_topk_global.py),
    'torch': a stable sort; same selection (lowest index first among ties). Bidirectional calls rank the block
    cells of a group together (per_batch / per_head, bidirectional_budget) on the plain sums of A_hat over the
    block's rows (one geometry for all rows); there, a dict col_sums gets A_hat's column sums (key 'sum', fp32
    [B, H, K]: the block sums summed, what the average context reads). scores (bidirectional only): those plain
    block sums [B, H, NB, K] fp32 already made (the estimator's pool=R, T = NB R); a_hat is then not read. Causal
    scores: block_scores' [B, H, NB, K] (made block by block: its row0) for a sequence of T rows."""
    if scores is not None and causal and T is None:
        raise ValueError("select_blocks: causal block scores need the sequence length T")
    if not causal:
        return _select_blocks_bidirectional(a_hat, R=R, mode=mode, k=k, budget=budget, backend=backend,
                                            col_sums=col_sums, scores=scores)
    if scores is None:
        B, H, T, K = a_hat.shape
        scores = block_scores(a_hat, R, backend=backend)                 # [B, H, NB, K]
    H, K = scores.shape[1], scores.shape[3]
    width, n = selection_shape(mode, T=T, R=R, K=K, k=k, H=H, budget=budget, device=str(scores.device))
    g = H if mode == "causal_per_batch" else 1
    from kernels.sea_topk import select_rows, select_rows_ref

    return (select_rows if backend == "triton" else select_rows_ref)(scores, width, n, heads_per_group=g)


@functools.lru_cache(maxsize=64)
def _bidirectional_shape(mode: str, *, B: int, T: int, R: int, K: int, k: int, H: int, budget: float, device: str
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(cell widths [K], the same for every block; budget per group [G]) of a bidirectional call shape, made once."""
    dev = torch.device(device)
    n = bidirectional_budget(mode, T=T, R=R, k=k, K=K, H=H, budget=budget)
    G = B if mode == "per_batch" else B * H
    return eligible_widths(T, R, K, dev, causal=False)[0], torch.full((G,), n, dtype=torch.long, device=dev)


def _select_blocks_bidirectional(a_hat, *, R: int, mode: str, k: int, budget: float, backend: str,
                                 col_sums: dict | None = None, scores: torch.Tensor | None = None) -> torch.Tensor:
    if scores is None:
        B, H, T, K = a_hat.shape
        scores = block_scores(a_hat, R, pool="sum")                      # [B, H, NB, K]: one geometry for all rows
    else:
        B, H, NB, K = scores.shape
        T = NB * R
    if col_sums is not None:
        col_sums["sum"] = scores.sum(2)                                  # [B, H, K]
    NB = scores.shape[2]
    width, nn = _bidirectional_shape(mode, B=B, T=T, R=R, K=K, k=k, H=H, budget=budget, device=str(scores.device))
    from kernels.sea_topk_global import select_global, select_global_ref

    pick = select_global if backend == "triton" else select_global_ref
    return pick(scores.contiguous(), nn, width).view(B, H, NB, K)


@functools.lru_cache(maxsize=32)
def cell_key_blocks(T: int, R: int, K: int, causal: bool, device: str
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For span 'blocks', per block cell (block geometry): (first key block, last key block, live) int64 / int64 /
    bool [NB, K], the R-aligned key blocks that hold the cell's keys (causal: its keys before the block's first row);
    live where there is such a key. Made once per shape."""
    dev = torch.device(device)
    ends = block_ends(T, R, dev, causal)
    lo, hi = cell_bounds(ends[None], K)                                  # [1, NB, K]
    lo, hi = lo[0], hi[0]
    if causal:
        hi = torch.minimum(hi, (torch.arange(ends.numel(), device=dev) * R)[:, None])   # keys before the block
    return lo // R, (hi - 1).clamp(min=0) // R, hi > lo


@functools.lru_cache(maxsize=32)
def cell_key_block_tables(T: int, R: int, K: int, causal: bool, device: str
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """What kernels/sea_block_lists.py reads, made once per shape: cell_key_blocks' first and last as int32, live,
    and the widest live cell's number of key blocks."""
    first, last, live = cell_key_blocks(T, R, K, causal, device)
    span = int(torch.where(live, last - first + 1, 0).max().item()) if live.numel() else 0
    return first.to(torch.int32).contiguous(), last.to(torch.int32).contiguous(), live.contiguous(), span


@functools.lru_cache(maxsize=32)
def key_block_width(T: int, R: int, K: int, causal: bool, mode: str, k: int, H: int, budget: float, device: str
                    ) -> int:
    """The most key blocks one (b, h, query block) can hold with span 'blocks' (causal: without its own; bidirectional:
    with it), made once per shape: a head selects at most min(K, its group's cells) cells of a block (causal:
    block_budgets; bidirectional: any of the K), each over at most the block's widest cell's key blocks, and a causal
    block only blocks before it. The width of the BlockMask's lists (FlexAttention reads a row's first `count`)."""
    first, last, live = cell_key_blocks(T, R, K, causal, device)
    span = torch.where(live, last - first + 1, 0).amax(1)               # [NB]
    NB = span.numel()
    if causal:
        n = block_budgets(mode, block_ends(T, R, span.device), k=k, K=K, H=H, budget=budget).clamp(max=K)
        bound = torch.minimum(n * span, torch.arange(NB, device=span.device))
        return max(1, int(bound.max().item()))
    return max(1, min(NB, int((K * span).max().item()) + 1))


def key_block_mask(sel: torch.Tensor, *, T: int, R: int, causal: bool = True) -> torch.Tensor:
    """Span 'blocks': bool [B, H, NB, NB], block j attends key block i: every R-aligned key block holding a key of
    one of its selected cells (causal: a key before the block, so i < j), and its own block i = j. Tensor ops, no
    host sync (a difference array over the key blocks, summed along them)."""
    B, H, NB, K = sel.shape
    first, last, live = cell_key_blocks(T, R, K, bool(causal), str(sel.device))
    w = (sel & live).to(torch.int32)                                     # [B, H, NB, K]
    diff = torch.zeros(B, H, NB, NB + 1, dtype=torch.int32, device=sel.device)
    diff.scatter_add_(3, first.expand(B, H, NB, K), w)
    diff.scatter_add_(3, (last + 1).expand(B, H, NB, K), -w)
    kb = diff.cumsum(3, dtype=torch.int32)[..., :NB] > 0
    return kb | torch.eye(NB, dtype=torch.bool, device=sel.device)


def key_block_rows_mask(sel: torch.Tensor, rows: torch.Tensor, *, T: int, R: int, causal: bool = True,
                        valid: torch.Tensor | None = None) -> torch.Tensor:
    """Span 'blocks', some query rows only: bool [B, H, len(rows), T], row t attends every key of its block's key
    blocks (key_block_mask; causal: the keys up to t), with a padding mask valid [B, T] only valid keys: the rows of
    shared_row_csr(span='blocks') as a dense mask, in O(B H NB^2 + B H len(rows) T) memory rather than the lists of
    every row (130 GiB at bidirectional T = 256k, H = 16: results/nvidia-h200/sea-vs-dense-5/)."""
    rows = rows.to(sel.device).long()
    kb = key_block_mask(sel, T=T, R=R, causal=causal)[:, :, rows // R]   # [B, H, Rr, NB]
    m = kb.repeat_interleave(R, dim=3)[..., :T]                          # [B, H, Rr, T]
    if causal:
        m = m & (torch.arange(T, device=sel.device)[None, :] <= rows[:, None])
    if valid is not None:
        m = m & valid[:, None, None, :]
    return m


def _span_block_key_lists(sel: torch.Tensor, *, T: int, R: int, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """block_key_lists for span 'blocks': every key of the block's key blocks other than its own."""
    B, H, NB, K = sel.shape
    dev = sel.device
    kb = key_block_mask(sel, T=T, R=R, causal=causal) & ~torch.eye(NB, dtype=torch.bool, device=dev)
    flat = torch.nonzero(kb.reshape(-1)).squeeze(1)                      # (b, h, j, i) ascending
    blk, i = flat // NB, flat % NB
    n = (T - i * R).clamp(max=R)                                         # keys in key block i (the last is short)
    e = torch.repeat_interleave(torch.arange(flat.numel(), device=dev), n)
    first = torch.cumsum(n, 0) - n
    keys = i[e] * R + torch.arange(e.numel(), device=dev) - first[e]
    ptr = torch.zeros(B * H * NB + 1, dtype=torch.int64, device=dev)
    ptr[1:] = torch.cumsum(torch.bincount(blk[e], minlength=B * H * NB), 0)
    return ptr, keys


def block_key_lists(sel: torch.Tensor, *, T: int, R: int, k: int, causal: bool = True, span: str = "strided"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys of each (b, h, block), ascending: (ptr int64 [B*H*NB + 1], keys int64 [nnz]). Host sync.
    span 'strided': interp.py's keys of each selected cell; 'blocks': every key of the key blocks (key_block_mask)."""
    if span not in SPANS:
        raise ValueError(f"shared key span {span!r}: expected one of {SPANS}")
    if span == "blocks":
        return _span_block_key_lists(sel, T=T, R=R, causal=causal)
    B, H, NB, K = sel.shape
    dev = sel.device
    ends = block_ends(T, R, dev, causal)
    lo, hi = cell_bounds(ends[None], K)                                  # [1, NB, K]
    width = (hi - lo)[0]                                                 # [NB, K]
    n_cell = width.clamp(max=k)
    pair = torch.nonzero((sel & (n_cell > 0)).reshape(-1)).squeeze(1)    # (b, h, j, c) flat: blocks, cells ascending
    jc = pair % (NB * K)
    n_p, lo_p, w_p = n_cell.reshape(-1)[jc], lo.reshape(-1)[jc], width.reshape(-1)[jc]
    e_pair = torch.repeat_interleave(torch.arange(pair.numel(), device=dev), n_p)
    first = torch.cumsum(n_p, 0) - n_p
    off = torch.arange(e_pair.numel(), device=dev) - first[e_pair]
    keys = lo_p[e_pair] + torch.div(off * w_p[e_pair], n_p[e_pair], rounding_mode="floor")
    blk = pair[e_pair] // K                                              # flat (b, h, j) of each key
    ptr = torch.zeros(B * H * NB + 1, dtype=torch.int64, device=dev)
    ptr[1:] = torch.cumsum(torch.bincount(blk, minlength=B * H * NB), 0)
    return ptr, keys


def shared_row_csr(sel: torch.Tensor, *, T: int, R: int, k: int, valid: torch.Tensor | None = None,
                   causal: bool = True, span: str = "strided") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row CSR lists (interp.py's format: row_ptr int64 [B*H*T + 1], col int32, keys ascending) of the shared
    selection: row t of block j gets its block's cell keys before j R, then the keys j R .. t (with a padding mask
    valid [B, T]: only valid keys). Bidirectional (causal=False): every row of block j gets the block's cell keys
    outside [j R, j R + R) and all of the block's own keys. span: the cells' keys (block_key_lists). Host syncs;
    O(entries) memory."""
    B, H, NB, K = sel.shape
    dev = sel.device
    ptr, keys = block_key_lists(sel, T=T, R=R, k=k, causal=causal, span=span)
    blk_of = torch.repeat_interleave(torch.arange(B * H * NB, device=dev), ptr[1:] - ptr[:-1])
    first = (blk_of % NB) * R
    early = (keys < first) if causal else ((keys < first) | (keys >= first + R))   # cell keys outside the block
    own = torch.arange(T, device=dev)                                    # the block's own keys: j R + i < T
    own_blk = torch.arange(B * H, device=dev)[:, None] * NB + (own // R)[None]   # [B*H, T]
    keys = torch.cat([keys[early], own.expand_as(own_blk).reshape(-1)])
    blk_of = torch.cat([blk_of[early], own_blk.reshape(-1)])
    if valid is not None:
        keep = valid.to(torch.bool)[blk_of // (H * NB), keys]
        keys, blk_of = keys[keep], blk_of[keep]
    order = torch.argsort(blk_of * T + keys)                             # blocks, then keys ascending
    keys, blk_of = keys[order], blk_of[order]
    ptr = torch.zeros(B * H * NB + 1, dtype=torch.int64, device=dev)
    ptr[1:] = torch.cumsum(torch.bincount(blk_of, minlength=B * H * NB), 0)
    glob = blk_of * T + keys
    t = torch.arange(T, device=dev)
    row_blk = torch.arange(B * H, device=dev)[:, None] * NB + (t // R)[None]   # [B*H, T] block of each row
    last = t[None] if causal else torch.full_like(t, T - 1)[None]        # a row's keys: <= t, or all of the block's
    upto = torch.searchsorted(glob, (row_blk * T + last).reshape(-1), right=True)   # entries <= (block, last)
    start = ptr[row_blk.reshape(-1)]
    counts = upto - start                                                # [B*H*T] keys of each row
    row_ptr = torch.zeros(B * H * T + 1, dtype=torch.int64, device=dev)
    row_ptr[1:] = torch.cumsum(counts, 0)
    e_row = torch.repeat_interleave(torch.arange(B * H * T, device=dev), counts)
    off = torch.arange(e_row.numel(), device=dev) - row_ptr[e_row]
    col = keys[start[e_row] + off]
    return row_ptr, col.to(torch.int32).contiguous()


def shared_dense_mask(sel: torch.Tensor, *, T: int, R: int, k: int, causal: bool = True, span: str = "strided"
                      ) -> torch.Tensor:
    """bool [B, H, T, T]: the same selection as a dense key mask, built the plain way (tests; O(T^2)). span
    'blocks': a selected cell brings every key of each R-aligned key block that holds one of its keys."""
    B, H, NB, K = sel.shape
    dense = torch.zeros(B, H, T, T, dtype=torch.bool, device=sel.device)
    ends = block_ends(T, R, sel.device, causal).tolist()
    for j, L in enumerate(ends):
        for c in range(K):
            lo, hi = (2 * c * L + K) // (2 * K), (2 * (c + 1) * L + K) // (2 * K)
            n = min(hi - lo, k)
            if n <= 0:
                continue
            cols = [lo + (i * (hi - lo)) // n for i in range(n)]
            if span == "blocks":                                         # whole key blocks of [lo, hi)
                hi = min(hi, j * R) if causal else hi                    # causal: its keys before the block
                cols = list(range(lo // R * R, min(T, ((hi - 1) // R + 1) * R))) if hi > lo else []
            for b in range(B):
                for h in range(H):
                    if sel[b, h, j, c]:
                        dense[b, h, j * R:min(T, (j + 1) * R), cols] = True
    starts = (torch.arange(T, device=sel.device) // R) * R               # [T] first row of each row's block
    keys = torch.arange(T, device=sel.device)
    own = (keys[None, :] >= starts[:, None]) & (keys[None, :] < starts[:, None] + R)   # [T, T] the block's own keys
    if causal:
        dense &= keys[None, :] < starts[:, None]                         # cells: keys before the block only
        return dense | (own & (keys[None, :] <= keys[:, None]))          # the block's own keys <= row
    return (dense & ~own) | own
