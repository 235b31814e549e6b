"""SEA's grouped top-k for the per-row budget modes as a Triton kernel (two algorithms): per group (a query
row's H x K cells for causal_per_batch, its K cells for per_query) find the n-th highest eligible score and
mark the cells above it.

Inputs: the estimate a [B, H, T, K] (only the order matters), the cell widths for the rows' time steps
(width [T, K]; a cell of width 0 covers no key and is never selected) and the budget of each time step
(n [T]; the same for every batch element: no padding mask here). Output: bool [B, H, T, K], the n_t highest
eligible cells of each group (all eligible cells when fewer; none when n_t <= 0). Ties at the threshold go to the
lowest flat index in the group, (head, cell) order; torch.topk breaks ties in an unspecified order, so the two
agree whenever the threshold value is unique. Eligible: width > 0 and a score that is neither -inf nor NaN (+inf
is eligible, the highest); equality is float equality (-0.0 == +0.0). Both algorithms below give bit-identical
output for every input, NaN included (NaN cells are never selected and take no rank).

Two algorithms, switched by the module-level ALGO (select_rows reads it at each call):
- "sort" (_group_topk_kernel; measured on an H200, bf16 estimate, B=1, H=16, K=64, causal_per_batch, 1024 cells
  per group: 0.40 ms at T=16k, 1.31-1.43 ms at 64k, 5.2-5.6 ms at 256k, against a traffic floor of ~0.07-0.08 ms
  at 64k): one program per group sorts the group's 1024 scores in registers (a bitonic tl.sort: 55
  compare-exchange stages, most of them across threads) only to read the n-th value. (n <= 0 and n above the
  padded group size used to threshold at 0.0 and NaN could land anywhere in the sort; now n <= 0 selects nothing,
  a larger n every eligible cell, and NaN is -inf before the sort. SEA's budgets are 1..H K, never NaN.)
- "bisect" (_group_bisect_kernel; the default since measured on an H200 at T=65536, H=16, K=64, B=1, budgets of
  causal_per_batch, ~8 % zero-width cells, `pytest -m gpu -s tests/test_sea_topk_kernel.py`, median of 20 CUDA-event
  timings, masks equal to the sort kernel's: SEA-like tied scores sort 1.376 ms, bisect 0.320 ms (16 cells a
  thread; 8: 0.408, 32: 0.329, count-only 0.447); normal scores 1.417 / 0.397 ms (32 cells: 0.363);
  results/nvidia-h200/sea-precision/gpu-tests.txt): no sort. Each score becomes a monotone int32 key
  (bits ^ ((bits >> 31) & 0x7fffffff) after -0.0 -> +0.0, so integer order == float order and equal keys ==
  equal floats; ineligible cells get INT32_MIN, below every eligible key). One fused reduction gives the number
  of eligible cells and the lowest and highest eligible key; then a search over the key range [lo, hi] keeps
  count(key >= lo) >= n and v <= hi for the n-th highest key v. A step takes mid = the midpoint, and in one
  reduction counts the keys >= mid and (BISECT_SNAP) takes the lowest key >= mid and the highest key < mid, so lo
  and hi jump to real keys: lo = lowest key >= mid when count >= n, else hi = highest key < mid. It stops when
  lo == hi (then lo == v), or early when exactly n keys are >= mid (the selection is then those n cells), and
  at once for n == 1 (v = highest key) and n >= eligible (v = lowest key). The selection is then the sort
  kernel's: keys > v, plus keys == v in index order (cumsum) until n. Without BISECT_SNAP a step only counts
  (hi = mid - 1 when count < n): cheaper steps, but ties at v make it run the whole ~27-32 steps of the range.
  Steps per group, simulated in numpy for H=16, K=64, k=64 causal budgets at random rows (n = round(65536 /
  (t + 1)), most rows n <= 16), scores normal (no ties) or softmax probabilities with each of 16 columns repeated
  4 times per head (SEA's decoder: ties by construction), mean / median / p90:
      T=16k normal:    count-only 13.5 / 13 / 17   snap 9.3 / 10 / 11
      T=16k SEA ties:  count-only 21.5 / 27 / 27   snap 7.0 /  7 /  8
      T=64k normal:    count-only  8.4 / 11 / 15   snap 5.7 /  7 / 10
      T=64k SEA ties:  count-only 16.0 / 27 / 27   snap 4.5 /  6 /  8
  Cost, from the SASS of both kernels compiled here for sm_90 (triton 3.6, no GPU; 1024-cell groups, static
  instruction counts per thread): the sort kernel is straight-line, ~3160 instructions a thread with 4 warps
  (~470 FSETP + ~460 FSEL compare-exchanges, ~440 SHFL, ~160 STS/LDS layout changes, 34 barriers) = ~12.6k
  warp-instructions a group. The bisect kernel with 2 warps (16 cells a thread, the default): ~1340 outside its
  loop (loads, keys, the first reduction, cumsum, int8 stores) and 161 per snap step (87 count-only), i.e.
  ~2.7k + 322 (174) warp-instructions per step a group: ~4.9k at 7 snap steps, 2.6x fewer than the sort; with
  1 warp ~2.1k + 250 per snap step (~3.8k at 7 steps; 122 registers); with 4 warps ~3.3k + 496 per step.
  Were both issue-bound alike (the sort's 1.31 ms at 64k is ~8.3e8 warp-instructions, ~60 % of the H200's issue
  rate), bisect would take ~0.4-0.5 ms at 64k; latency (a reduction's shuffle tree and barrier per step) may
  cost more. The per_query configuration (64 cells, 8 rows, 1 warp) compiles too; not counted.
  Fewer warps per group do the same work in fewer warp-instructions (fewer shuffle trees and barriers), which
  pays while the grid has tens of thousands of programs. Small groups (per_query: K = 64 cells) take several
  consecutive rows per program (BISECT_CELLS cells at least, one search loop for all of them: it runs until the
  slowest row is done), so a program is not mostly masked lanes.

`select_rows_ref` is the plain restatement used by the tests.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

ALGO = "bisect"                 # "sort" | "bisect" (H200, 64k: 1.38 -> 0.32 ms on SEA-like tied scores)
ALGOS = ("sort", "bisect")
BISECT_SNAP = True              # bisect: snap lo / hi to the nearest real keys (one reduction of three values)
BISECT_CELLS = 512              # bisect: at least this many cells per program (several rows for small groups)
BISECT_SPLIT = "auto"           # bisect: (count, min, max) as three reductions (True) or one (False); see _split_reduce
BISECT_CELLS_PER_THREAD = 16    # bisect: warps per program = cells per program / (32 x this), 1 to 8
POISON_OUTPUTS = False          # tests: start from a buffer of 0x55 bytes instead of torch.empty


@triton.jit
def _group_cells(rest, H, K: tl.constexpr, HG: tl.constexpr, GP: tl.constexpr):
    """A program's group from its index over (b, head group): (b, head h [GP], cell c [GP], lane inside the group
    [GP]); lanes i < HG K hold the group's cells in (head, cell) order, the rest pad GP."""
    groups = H // HG
    b = rest // groups
    i = tl.arange(0, GP)
    return b, (rest % groups) * HG + i // K, i % K, i < HG * K


@triton.jit
def _group_topk_kernel(A, WIDTH, N, OUT, T, H, K: tl.constexpr, HG: tl.constexpr, GP: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    t = pid % T
    b, h, c, inside = _group_cells(pid // T, H, K, HG, GP)
    i = tl.arange(0, GP)
    off = ((b * H + h) * T + t) * K + c                                   # [GP] flat [B, H, T, K] positions
    w = tl.load(WIDTH + t * K + c, mask=inside, other=0)
    x = tl.load(A + off, mask=inside, other=0.0).to(tl.float32)
    ok = inside & (w > 0) & (x == x)                                      # NaN: ineligible, like -inf
    x = tl.where(ok, x, float("-inf"))
    n = tl.load(N + t)
    s = tl.sort(x, descending=True)
    # the n-th highest score; n > GP reads a padded -inf (all eligible cells), n <= 0 selects nothing below
    thr = tl.sum(tl.where(i == tl.minimum(n, GP) - 1, s, 0.0), axis=0)
    finite = x > float("-inf")
    gt = (x > thr) & finite
    eq = (x == thr) & finite
    need = n - tl.sum(gt.to(tl.int32), axis=0)
    before = tl.cumsum(eq.to(tl.int32), 0) - eq.to(tl.int32)            # equal scores at lower indices
    sel = (gt | (eq & (before < need))) & (n > 0)
    tl.store(OUT + off, sel.to(tl.int8), mask=inside)


@triton.jit
def _count_min_max(c0, lo0, hi0, c1, lo1, hi1):
    return c0 + c1, tl.minimum(lo0, lo1), tl.maximum(hi0, hi1)


@triton.jit
def _count_min_max_rows(c, lo, hi, SPLIT: tl.constexpr):
    # [R, GP] -> (sum c, min lo, max hi) over axis 1: one combined reduction, or (SPLIT) three built-in ones, the
    # same integers (the Triton interpreter runs a combined reduction in Python, ~100x slower)
    if SPLIT:
        return tl.sum(c, axis=1), tl.min(lo, axis=1), tl.max(hi, axis=1)
    else:
        return tl.reduce((c, lo, hi), 1, _count_min_max)


@triton.jit
def _group_bisect_kernel(A, WIDTH, N, OUT, T, H, K: tl.constexpr, HG: tl.constexpr, GP: tl.constexpr,
                         R: tl.constexpr, SNAP: tl.constexpr, SPLIT: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    tiles = tl.cdiv(T, R)
    t = (pid % tiles) * R + tl.arange(0, R)                             # [R] the program's time steps
    b, h, c, in_group = _group_cells(pid // tiles, H, K, HG, GP)
    row_in = t < T
    inside = row_in[:, None] & in_group[None, :]                        # [R, GP]
    off = ((b * H + h[None, :]) * T + t[:, None]) * K + c[None, :]      # [R, GP] flat [B, H, T, K] positions
    w = tl.load(WIDTH + t[:, None] * K + c[None, :], mask=inside, other=0)
    x = tl.load(A + off, mask=inside, other=0.0).to(tl.float32)
    ok = inside & (w > 0) & (x > float("-inf"))                         # NaN and -inf: ineligible
    x = tl.where(x == 0.0, 0.0, x)                                      # -0.0 -> +0.0 (equal floats, one key)
    bits = x.to(tl.int32, bitcast=True)
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)                            # integer order == float order
    key = tl.where(ok, key, -2147483648)                                # below every eligible key
    n = tl.load(N + t, mask=row_in, other=0)                            # [R] budgets
    cnt, kmin, kmax = _count_min_max_rows(ok.to(tl.int32), tl.where(ok, key, 2147483647), key, SPLIT)
    n = tl.minimum(n, cnt)                                              # cells to select (<= 0: none)
    # Search the n-th highest key v: count(key >= lo) >= n and v <= hi throughout; lo, hi int64 (no overflow).
    lo = tl.where(n == 1, kmax, kmin).to(tl.int64)                      # n == 1: v = kmax; n >= cnt: v = kmin
    hi = tl.where((n <= 1) | (n >= cnt), lo, kmax.to(tl.int64))
    while tl.max(hi - lo, axis=0) > 0:
        mid = lo + (hi - lo + 1) // 2                                   # [R]; == lo for a row already done
        m = key >= mid.to(tl.int32)[:, None]
        if SNAP:
            above, up, down = _count_min_max_rows(m.to(tl.int32), tl.where(m, key, 2147483647),
                                                  tl.where(m, -2147483648, key), SPLIT)
            ge = above >= n
            lo = tl.where(ge, up.to(tl.int64), lo)                      # lowest key >= mid (v >= it)
            hi = tl.where(ge, tl.where(above == n, lo, hi), down.to(tl.int64))   # else highest key < mid
        else:
            above = tl.sum(m.to(tl.int32), axis=1)
            ge = above >= n
            lo = tl.where(ge, mid, lo)
            hi = tl.where(ge, tl.where(above == n, mid, hi), mid - 1)
        # above == n: exactly n keys >= lo, the selection below takes all of them
    thr = lo.to(tl.int32)[:, None]
    gt = key > thr
    eq = key == thr
    need = n - tl.sum(gt.to(tl.int32), axis=1)
    eqi = eq.to(tl.int32)
    before = tl.cumsum(eqi, 1) - eqi                                    # equal keys at lower indices
    sel = (gt | (eq & (before < need[:, None]))) & (n > 0)[:, None]
    tl.store(OUT + off, sel.to(tl.int8), mask=inside)


def _split_reduce(device) -> bool:
    """The bisect kernel's (count, min, max) as three reductions (BISECT_SPLIT True) or one combined one (False);
    "auto": three off CUDA (the interpreter), one on CUDA. The same integers either way."""
    if BISECT_SPLIT not in (True, False, "auto"):
        raise ValueError(f"kernels.sea_topk.BISECT_SPLIT = {BISECT_SPLIT!r}: expected True, False or auto")
    return BISECT_SPLIT is True or (BISECT_SPLIT == "auto" and torch.device(device).type != "cuda")


def bisect_config(group: int) -> tuple[int, int]:
    """(rows per program, warps per program) of the bisect kernel for groups of `group` cells (padded to a power
    of two): BISECT_CELLS cells a program at least, BISECT_CELLS_PER_THREAD cells a thread."""
    gp = triton.next_power_of_2(group)
    rows = max(1, BISECT_CELLS // gp)
    warps = min(8, max(1, rows * gp // (32 * BISECT_CELLS_PER_THREAD)))
    return rows, triton.next_power_of_2(warps)


def select_rows(a: torch.Tensor, width: torch.Tensor, n: torch.Tensor, *, heads_per_group: int) -> torch.Tensor:
    """bool [B, H, T, K]: per group of `heads_per_group` heads (H: causal_per_batch, 1: per_query) and time step
    t, the n[t] highest cells of a among those with width[t, c] > 0. ALGO picks the kernel."""
    B, H, T, K = a.shape
    if ALGO not in ALGOS:
        raise ValueError(f"kernels.sea_topk.ALGO = {ALGO!r}: expected one of {', '.join(ALGOS)}")
    if H % heads_per_group or width.shape != (T, K) or n.shape != (T,):
        raise ValueError(f"select_rows: a {tuple(a.shape)}, width {tuple(width.shape)}, n {tuple(n.shape)}, "
                         f"heads_per_group {heads_per_group}")
    if POISON_OUTPUTS:
        out = torch.full((B, H, T, K), 0x55, dtype=torch.int8, device=a.device)
    else:
        out = torch.empty(B, H, T, K, dtype=torch.int8, device=a.device)
    if out.numel() == 0:
        return out.view(torch.bool)
    args = (a.contiguous(), width.to(torch.int32).contiguous(), n.to(torch.int32).contiguous(), out, T, H)
    gp = triton.next_power_of_2(heads_per_group * K)
    groups = B * (H // heads_per_group)
    if ALGO == "sort":
        _group_topk_kernel[(groups * T,)](*args, K=K, HG=heads_per_group, GP=gp)
    else:
        rows, warps = bisect_config(heads_per_group * K)
        _group_bisect_kernel[(groups * triton.cdiv(T, rows),)](*args, K=K, HG=heads_per_group, GP=gp, R=rows,
                                                               SNAP=BISECT_SNAP, SPLIT=_split_reduce(a.device),
                                                               num_warps=warps)
    return out.view(torch.bool)


def select_rows_ref(a: torch.Tensor, width: torch.Tensor, n: torch.Tensor, *, heads_per_group: int) -> torch.Tensor:
    """The same selection with a stable sort per group (tests, and methods/sea/shared.py's tensor-op path). NaN and
    -inf cells are ineligible."""
    B, H, T, K = a.shape
    g = heads_per_group
    x = a.float()
    x = x.masked_fill(~(width > 0)[None, None] | torch.isnan(x), float("-inf"))   # [B, H, T, K]
    x = x.view(B, H // g, g, T, K).permute(0, 1, 3, 2, 4).reshape(B, H // g, T, g * K)   # [B, H/g, T, gK]
    order = torch.sort(x, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(g * K, device=a.device).expand_as(order).contiguous())
    sel = (rank < n.view(1, 1, T, 1)) & (x > float("-inf"))
    return sel.view(B, H // g, T, g, K).permute(0, 1, 3, 2, 4).reshape(B, H, T, K)
