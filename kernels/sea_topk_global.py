"""SEA's bidirectional top-k modes (per_batch: all H x T x K cells of a batch element against one budget;
per_head: the T x K cells of each (b, h)) as an exact radix select in Triton, instead of torch.topk over groups of
up to ~10^8 cells.

API: select_global(scores, n, width=None) -> bool [G, N]. scores: a contiguous float tensor (fp32, bf16; fp16 also
works, through 32-bit keys) of G * N elements viewed as [G, N], G = n.numel(); n: int64 [G] budgets on the device;
width: optional int tensor [K] with N % K == 0, cell c = flat index % K is ineligible when width[c] <= 0 (None: all
cells eligible). Output [G, N]: per group the n[g] highest eligible cells (every eligible cell when fewer; none when
n[g] <= 0). Eligible also means a score that is neither -inf nor NaN (+inf is eligible, the highest); equality is
float equality (-0.0 == +0.0). Ties at the threshold go to the LOWEST flat index of the group first; torch.topk's
order among equal values is unspecified, so the two agree wherever the threshold value is unique. No host sync:
every count stays on the device (no .item()), so the call can be captured in a CUDA graph.

Algorithm (most significant digit radix select on monotone keys, as in kernels/sea_topk.py): each score becomes a
key whose unsigned integer order is the float order: fp32 bits b (after -0.0 -> +0.0) -> k = b ^ ((b >> 31) &
0x7fffffff) (signed order == float order), then u = k ^ 0x80000000 (unsigned order); for bf16 the low 16 bits carry
nothing, so u = (k >> 16) + 32768, a 16-bit key (half the passes). Ineligible cells get u = 0 and are masked out of
every count (an eligible key is >= 0x00800000, resp. 128). The key's bits are split into digits, most significant
first (DIGITS_32 = 8 + 8 + 8 + 8 bits, DIGITS_16 = 8 + 8). Per digit one pass over the group: a grid of
PROGRAMS (P) programs per group, each owning one contiguous chunk of TILES x BLOCK cells, counts the digit of the
keys whose higher digits equal the prefix found so far into its own row of a [G, P, bins] int32 buffer:
  - the first HIST_PASSES passes (default 1: the first, where every key matches): tl.histogram per tile, summed
    in registers over the chunk and stored once (no atomics at all);
  - the later passes (where only the keys of the chosen bins match, wide digits): a masked tl.atomic_add per
    matching key into the program's own row (privatized: programs never contend with each other, so even a group of
    all-equal values costs P-way parallel atomics, not one serialized address; SEA's duplicated column pairs cost
    nothing special). Tiles with no matching key skip the work.
Between passes, torch sums the rows over programs ([G, bins]) and a one-program-per-group kernel (_pick_kernel)
finds the digit d holding the need-th highest key (need = min(n, eligible) after the first pass): S = suffix
cumsum of the bins, d = the highest digit with S[d] >= need, need -= S[d] - hist[d], prefix = prefix << bits | d.
After the last digit the prefix is the threshold key v itself and need the number of keys == v to take. The last
pick also reads its digit's count from every program's row and writes their exclusive cumsum over programs (the
keys == v in the chunks before each program, index order). The final pass (_mark_kernel) marks keys > v, and keys
== v whose rank (that base + a running count over the program's earlier tiles + an exclusive tl.cumsum within the
tile; only for tiles holding a key == v) is below need. n <= 0 or no eligible cell gives need = 0 and v = the
all-ones key, above every eligible key: nothing is selected. Offsets are int64 (N may exceed 2^31 for G = 1).
Launches with FUSED_PICK = False, fp32 (4 digits): 4 x (count pass, torch sum, pick) + 3 memsets (the atomic
passes' zeroed rows) + mark = 16; bf16: 2 x 3 + 1 + 1 = 8.

FUSED_PICK (default True): one launch a digit counts AND picks (_count_pick_kernel), by the "last program done"
pattern (CUDA's threadFenceReduction sample, CUTLASS's split-k semaphore). One [G, P, 2^max(digits)] int32 buffer
serves every pass (torch.empty: the atomic passes' programs zero their own row themselves, store then
tl.debug_barrier, so no memset), and one zeroed int64 [G, 2^max(digits) + 1] buffer holds per group the counts
summed over programs and a ticket counter (the call's one memset). Each program counts its chunk into its row as
above, adds the row's nonzero counts to its group's sums (tl.atomic_add, relaxed; an atomic pass first reads its
row back after a barrier), then tl.debug_barrier and one ticket t = atomic_add(ticket[g], 1, acq_rel, gpu scope).
The program that draws t == P - 1 is the group's last: it loads the sums (.cg), runs the pick of _pick_kernel (the
shared @triton.jit _pick: FIRST / LAST, NEED / PREFIX / TIEBASE, the LAST pass's per-program counts at the chosen
digit read from the rows, .cg) and sets the sums and the ticket back to 0 for the next pass. Launches: fp32 1
memset + 4 passes + mark = 6, bf16 1 + 2 + 1 = 4. The group's sums are added by every program (P-way parallel
adds, at most 2^bits a program, onto 2^bits addresses a group) instead of summed by the last program alone: that
first form (the last program loading all P rows, a loop over programs, int64 sums) cost ~60 us a pass at P = 1024
and 256 bins on an H200 (measured, below), more than the launches it saves.
Measured once on an H200 (torch 2.11, triton 3.6; ad-hoc runs of the GPU test and a torch.profiler script during
the nineteenth session, not kept; medians of harness.measure.time_cuda; SEA's recorded 8k profiles with the switch on
and off: results/nvidia-h200/sea-offsets/call3/), fused against FUSED_PICK = False:
  - 262144 fp32 cells (G = 1, P = 64 programs of one tile, as SEA's bidirectional forward at T = 8k), n = 4096:
    CUDA-graph replay 0.030-0.033 ms against 0.061-0.062 (eager 0.15-0.35 against 0.34-0.77 ms, host-bound);
    a fused pass 4.2-5.6 us against ~8-10 us of count + sum + memset + pick kernels. The first form: 0.046 ms.
  - the GPU test's 134M cells, n = 2^20: graph 1.385-1.423 ms against 1.438-1.476 (the passes 578 / 251 / 182 /
    158 us against 555 / 250 / 178 / 160 us of count kernels + ~13 us a pass of the rest); bf16 1.10 against
    1.14 ms. The first form: 1.68 ms (+60-80 us a pass).
Why the last program sees every count (PTX memory model, as the CUDA sample argues): in each program, every
thread's writes to its row and its adds to the sums come before a CTA barrier (bar.sync: CTA-scope ordering),
which comes before the ticket's atomic in the issuing thread's program order; Triton lowers a scalar atomic to one
issuing thread (predicated), its result broadcast through shared memory with a bar.sync (seen in the sm_90 PTX:
bar.sync; @p atom.global.gpu.acq_rel.add.u64; st.shared; bar.sync; ld.shared). Its release half orders those
writes (cumulatively, through the barrier) before the ticket's increment; the last program's acquire reads the
last increment in the ticket's release sequence, so it synchronizes with every earlier ticket holder; its own
threads load after that barrier (plus an explicit one) in program order, so every write of every program is
visible to them. The loads use .cg (L2, not L1) so that no stale L1 line can be read even where that ordering
were weaker than assumed (the CUDA sample reads through volatile for the same reason). PREFIX / NEED, read by every
program at the start of the next pass and written by this pass's last program, are ordered by the launch boundary;
within a pass every program reads PREFIX before its ticket, so before the last program's write. The interpreter
(TRITON_INTERPRET=1) runs programs one after another, ignores barriers and cache modifiers and does atomics in
place: it checks the logic (any program may be the last: the tests also run the grid in reverse), not the
ordering; tests/test_sea_topk_global.py's GPU test compares both forms with the restatement on the GPU.

GPU time, predicted (not measured: no GPU here) for the brief's size, G = 1, N = 16 x 65536 x 128 = 134M cells,
fp32 (537 MB), n = 2^20, softmax-like scores with duplicated column pairs, H200 (~4.0 TB/s achievable of 4.8,
~1.0e12 warp-instructions/s: 132 SMs x 4 schedulers x ~1.9 GHz). 134M keys = 4.2M warp-rows of 32 keys. PTX of
the kernels compiled here for sm_90 (BLOCK 4096, 8 warps: 16 keys a thread a tile), instructions a tile / 16 =
per warp-row: first pass 5 bits 67, 6 bits 76, 7 bits 89, 8 bits 110; atomic pass ~30; mark ~40 without ties.
  - pass 1 (8-bit digit, tl.histogram): 0.13 ms of reads, but Triton lowers tl.histogram to one warp ballot per
    bin-index bit plus per-lane popcounts of its bins/32 bins: 4.2M x 110 = 4.6e8 warp-instructions = ~0.45 ms,
    issue-bound. (Hence only 8 bits first and atomics for the wide digits; 6 bits: ~0.32 ms, more pass-2 matches.)
  - passes 2 and 3 (12-bit digits, privatized atomics): 0.13 ms of reads each; 4.2M x 30 = 1.3e8 = ~0.13 ms of
    issue, so ~0.15 ms each. Atomics: pass 2's matches are the keys of pass 1's bin (a factor-4 band of values):
    simulated on 8M cells of this test's data (softmax of N(0, 4) logits, 64 columns duplicated, the top 0.78 %),
    0.9 % of the cells (threshold ~0.13, bin [0.125, 0.5)), i.e. ~1.2M atomics over 1024 x 4096 addresses:
    negligible; pass 3 matches 7e-6 of the cells (~900). Data whose threshold sits in a crowded factor-4 band (up
    to all cells) would cost up to ~134M atomics spread over P rows, ~1 ms more (guess: ~1e11 L2 atomics/s).
  - mark: 0.13 ms reads + 0.03 ms bool writes, ~0.17 ms (tl.cumsum only in tiles holding the threshold value).
  - small stuff: 2 memsets + 3 sums of [1, 1024, <=4096] int32 (<=16 MB each) ~0.03 ms, ~11 launches ~0.03 ms.
  Total ~1.0 ms (torch.topk path ~2.5 ms + its masked_fill copy and scatter), ~2.5-3x faster, still ~8x the
  0.13 ms one-read floor; bf16 input (16-bit keys: one histogram pass, one atomic pass, mark; half the bytes):
  ~0.45 (histogram, issue-bound, same key count) + ~0.13 (atomic pass, issue-bound) + ~0.1 (mark) = ~0.7 ms.
  Knobs for the lead (module level, read at each call): DIGITS_32 / DIGITS_16, HIST_PASSES, BLOCK, PROGRAMS,
  NUM_WARPS, FUSED_PICK. Not done: a per-group early exit when a bin's count equals need (the rest of that group's
  passes could skip their reads), sample-based first pivots instead of the fixed 8-bit digit.

Measured on an H200 (scripts/probe_topk_global.py, results/nvidia-h200/sea-round19/call4/): at that size, on the
estimate A_hat of an untrained bidirectional SEA layer at T = 65536 (values in [6.6e-3, 9.2e-3]: pass 2 matches half
of the 134M cells, not 1 % as simulated above) with cell widths, 2.22 ms with 8 + 12 + 12 bit digits (count passes
1.83, mark 0.27), 2.06 ms with 8 + 8 + 8 + 8 (now the default), 2.72 ms counting every pass with tl.histogram,
4.10 ms with 11 + 11 + 10 by atomics only; on the test's softmax data 1.50 / 1.68 ms. The torch.topk path took 3.4
ms (tests/test_sea_topk_global.py's GPU test), so the prediction of ~1.0 ms was 2x optimistic: the count passes,
not the reads, dominate. In SEA's bidirectional forward at 64k: 17.41 -> 16.28 ms.

`select_global_ref` is the plain restatement (stable sort) the tests compare with.
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: select_global cannot run
    triton = None
    tl = None

DIGITS_32 = (8, 8, 8, 8)    # digit widths of a 32-bit key (fp32, fp16), most significant first; sum 32 (H200, SEA's
                            # 64k estimate: 2.06 ms against 2.22 with 8 + 12 + 12, 4.10 with 11 + 11 + 10)
DIGITS_16 = (8, 8)          # bf16: 16-bit keys; sum 16
HIST_PASSES = 1             # the first this-many passes count with tl.histogram (keep their digits <= ~8 bits),
                            # the later ones with atomics into per-program rows
BLOCK = 1024                # cells a tile (power of two). H200, SEA's bidirectional forward (262144 block cells at
                            # 8k, 64 programs a pass with 4096): the four count-and-pick launches 0.025 -> 0.019 ms
                            # and the mark launch below 0.003 with 1024 (2048: 0.020), the 8k forward's kernels
                            # 0.611 -> 0.603 ms, 64k 3.871 -> 3.864 (results/nvidia-h200/sea-graph-call/call3/)
PROGRAMS = 1024             # programs per pass in all (~8 per SM of an H200), split over the groups
NUM_WARPS = 8               # warps per program of the count and mark passes
FUSED_PICK = True           # one launch a digit (count, add to the group's sums, the last program picks); False:
                            # count, torch sum and _pick_kernel launches a digit, as before (A/B on the GPU)
POISON_OUTPUTS = False      # tests: start the output (and FUSED_PICK's row buffer) from 0x55 bytes, not torch.empty


if triton is not None:

    @triton.jit
    def _keys(X, offs, inside, WIDTH, K, HAS_WIDTH: tl.constexpr, KEY16: tl.constexpr):
        """(unsigned monotone key, eligible) of the cells at flat offsets offs (int64)."""
        x = tl.load(X + offs, mask=inside, other=0.0).to(tl.float32)
        ok = inside & (x > float("-inf"))                                   # NaN and -inf: ineligible
        if HAS_WIDTH:
            w = tl.load(WIDTH + offs % K, mask=inside, other=0)
            ok = ok & (w > 0)
        x = tl.where(x == 0.0, 0.0, x)                                      # -0.0 -> +0.0 (equal floats, one key)
        bits = x.to(tl.int32, bitcast=True)
        key = bits ^ ((bits >> 31) & 0x7FFFFFFF)                            # signed order == float order
        if KEY16:
            key = (key >> 16) + 32768                                       # bf16: the high half, in [0, 65536)
        else:
            key = key ^ -2147483648                                         # unsigned order == float order
        return key.to(tl.uint32, bitcast=True), ok                          # callers mask with ok


    @triton.jit
    def _count_chunk(X, WIDTH, K, PREFIX, row, g, p, N, TPP, SHIFT: tl.constexpr, BITS: tl.constexpr,
                     FIRST: tl.constexpr, USE_HIST: tl.constexpr, HAS_WIDTH: tl.constexpr, KEY16: tl.constexpr,
                     BLK: tl.constexpr):
        """row[:2^BITS] = counts of digit (u >> SHIFT) of the eligible keys of program p's chunk of group g whose
        higher bits (u >> (SHIFT + BITS)) equal PREFIX[g]. USE_HIST: tl.histogram and a store (and the counts are
        returned, [2^BITS] int32); else atomics into a row the caller has zeroed (and zeros are returned)."""
        BINS: tl.constexpr = 1 << BITS
        if not FIRST:
            prefix = tl.load(PREFIX + g).to(tl.uint32)
        i = tl.arange(0, BLK)
        acc = tl.zeros([BINS], dtype=tl.int32)
        for t in range(0, TPP):
            start = (p * TPP + t) * BLK                                     # int64 cell index within the group
            idx = start + i
            inside = idx < N
            u, ok = _keys(X, g * N + idx, inside, WIDTH, K, HAS_WIDTH, KEY16)
            match = ok
            if not FIRST:
                match = ok & ((u >> (SHIFT + BITS)) == prefix)
            digit = ((u >> SHIFT) & (BINS - 1)).to(tl.int32)
            if USE_HIST:
                acc += tl.histogram(digit, BINS, mask=match)
            else:
                if tl.max(match.to(tl.int32), axis=0) > 0:
                    tl.atomic_add(row + digit, 1, mask=match, sem="relaxed")
        if USE_HIST:
            tl.store(row + tl.arange(0, BINS), acc)
        return acc


    @triton.jit
    def _count_kernel(X, WIDTH, K, PREFIX, PH, N, P, TPP, SHIFT: tl.constexpr, BITS: tl.constexpr,
                      FIRST: tl.constexpr, USE_HIST: tl.constexpr, HAS_WIDTH: tl.constexpr, KEY16: tl.constexpr,
                      BLK: tl.constexpr):
        """PH[g, p, :2^BITS] = program p's counts (_count_chunk); the atomic passes' PH comes zeroed (torch.zeros)."""
        p = tl.program_id(0).to(tl.int64)
        g = tl.program_id(1).to(tl.int64)
        BINS: tl.constexpr = 1 << BITS
        _count_chunk(X, WIDTH, K, PREFIX, PH + (g * P + p) * BINS, g, p, N, TPP, SHIFT, BITS, FIRST, USE_HIST,
                     HAS_WIDTH, KEY16, BLK)


    @triton.jit
    def _pick(h, g, NB, PREFIX, NEED, TIEBASE, PH, P, BITS: tl.constexpr, ROW: tl.constexpr, FIRST: tl.constexpr,
              LAST: tl.constexpr, PB: tl.constexpr, CACHE: tl.constexpr):
        """Group g's pick from its histogram h ([2^BITS] int64, summed over programs): the digit holding the need-th
        highest matching key; updates PREFIX / NEED. LAST: the exclusive cumsum over programs of their counts at that
        digit (PH[g, q, d], rows ROW apart, loaded with cache modifier CACHE) -> TIEBASE[g, :P]."""
        BINS: tl.constexpr = 1 << BITS
        j = tl.arange(0, BINS)
        if FIRST:
            need = tl.minimum(tl.load(NB + g), tl.sum(h, axis=0))           # cells to select: min(n, eligible)
            need = tl.maximum(need, 0)
            prefix = tl.zeros([], dtype=tl.int64)
        else:
            need = tl.load(NEED + g)
            prefix = tl.load(PREFIX + g)
        s = tl.cumsum(h, 0, reverse=True)                                   # keys with digit >= j
        d = tl.sum((s >= need).to(tl.int32), axis=0) - 1                   # need == 0: the top digit (all ones)
        above = tl.sum(tl.where(j == d, s - h, 0), axis=0)                  # keys with digit > d
        tl.store(NEED + g, need - above)
        tl.store(PREFIX + g, (prefix << BITS) | d)
        if LAST:
            carry = tl.zeros([], dtype=tl.int64)
            for p0 in range(0, P, PB):
                q = p0 + tl.arange(0, PB)
                c = tl.load(PH + (g * P + q) * ROW + d, mask=q < P, other=0, cache_modifier=CACHE).to(tl.int64)
                tl.store(TIEBASE + g * P + q, carry + tl.cumsum(c, 0) - c, mask=q < P)
                carry += tl.sum(c, axis=0)


    @triton.jit
    def _pick_kernel(HIST, PH, NB, PREFIX, NEED, TIEBASE, P, BITS: tl.constexpr, FIRST: tl.constexpr,
                     LAST: tl.constexpr, PB: tl.constexpr):
        """One program per group: _pick on HIST[g] (torch's sum of PH over programs; PH's rows 2^BITS apart)."""
        g = tl.program_id(0).to(tl.int64)
        BINS: tl.constexpr = 1 << BITS
        h = tl.load(HIST + g * BINS + tl.arange(0, BINS))                  # [BINS] int64
        _pick(h, g, NB, PREFIX, NEED, TIEBASE, PH, P, BITS, BINS, FIRST, LAST, PB, "")


    @triton.jit
    def _count_pick_kernel(X, WIDTH, K, NB, PREFIX, NEED, TIEBASE, PH, SUMS, N, P, TPP, SHIFT: tl.constexpr,
                           BITS: tl.constexpr, ROW: tl.constexpr, FIRST: tl.constexpr, LAST: tl.constexpr,
                           USE_HIST: tl.constexpr, HAS_WIDTH: tl.constexpr, KEY16: tl.constexpr, BLK: tl.constexpr,
                           PB: tl.constexpr):
        """FUSED_PICK's pass: _count_chunk into PH[g, p, :2^BITS] (rows ROW apart; the atomic passes zero their own
        row first), the row's nonzero counts atomically added to the group's sums SUMS[g, :2^BITS] (int64, rows
        ROW + 1 apart), then a ticket on SUMS[g, ROW]; the program that draws the last ticket (P - 1) loads the sums
        (.cg), runs _pick (LAST: reading PH's rows, .cg) and sets the sums and the ticket back to 0 for the next pass.
        Why the last program sees every program's counts: the module docstring."""
        p = tl.program_id(0).to(tl.int64)
        g = tl.program_id(1).to(tl.int64)
        BINS: tl.constexpr = 1 << BITS
        j = tl.arange(0, BINS)
        row = PH + (g * P + p) * ROW
        sums = SUMS + g * (ROW + 1)
        if not USE_HIST:
            tl.store(row + j, tl.zeros([BINS], dtype=tl.int32))
            tl.debug_barrier()                                              # zeros before any thread's atomics
        c = _count_chunk(X, WIDTH, K, PREFIX, row, g, p, N, TPP, SHIFT, BITS, FIRST, USE_HIST, HAS_WIDTH, KEY16, BLK)
        if not USE_HIST:
            tl.debug_barrier()                                              # every thread's atomics, then read back
            c = tl.load(row + j, cache_modifier=".cg")
        tl.atomic_add(sums + j, c.to(tl.int64), mask=c > 0, sem="relaxed", scope="gpu")
        tl.debug_barrier()                                                  # every thread's adds, then ...
        ticket = tl.atomic_add(sums + ROW, 1, sem="acq_rel", scope="gpu")   # ... one thread's release / acquire
        if ticket == P - 1:                                                 # the last program of group g
            tl.debug_barrier()                                              # every thread's loads after the acquire
            h = tl.load(sums + j, cache_modifier=".cg")                     # [BINS] int64: summed over programs
            _pick(h, g, NB, PREFIX, NEED, TIEBASE, PH, P, BITS, ROW, FIRST, LAST, PB, ".cg")
            tl.store(sums + j, tl.zeros([BINS], dtype=tl.int64))
            tl.store(sums + ROW, 0)


    @triton.jit
    def _mark_kernel(X, WIDTH, K, THR, NEED, TIEBASE, OUT, N, P, TPP, HAS_WIDTH: tl.constexpr, KEY16: tl.constexpr,
                     BLK: tl.constexpr):
        """OUT[g, c] = key > v, or key == v with fewer than NEED[g] keys == v at lower indices (v = THR[g])."""
        p = tl.program_id(0).to(tl.int64)
        g = tl.program_id(1).to(tl.int64)
        thr = tl.load(THR + g).to(tl.uint32)
        need = tl.load(NEED + g)
        before = tl.load(TIEBASE + g * P + p)                               # keys == v in earlier programs' chunks
        i = tl.arange(0, BLK)
        for t in range(0, TPP):
            idx = (p * TPP + t) * BLK + i
            inside = idx < N
            u, ok = _keys(X, g * N + idx, inside, WIDTH, K, HAS_WIDTH, KEY16)
            sel = ok & (u > thr)
            eq = (ok & (u == thr)).to(tl.int32)
            ties = tl.sum(eq, axis=0)
            if ties > 0:
                rank = before + (tl.cumsum(eq, 0) - eq)                    # keys == v at lower indices
                sel = sel | ((eq > 0) & (rank < need))
                before += ties
            tl.store(OUT + g * N + idx, sel.to(tl.int8), mask=inside)


def _layout(G: int, N: int) -> tuple[int, int]:
    """(programs per group P, tiles per program TPP) for a group of N cells."""
    tiles = triton.cdiv(N, BLOCK)
    per_group = max(1, min(tiles, triton.cdiv(PROGRAMS, G)))
    tpp = triton.cdiv(tiles, per_group)
    return triton.cdiv(tiles, tpp), tpp


def select_global(scores: torch.Tensor, n: torch.Tensor, width: torch.Tensor | None = None) -> torch.Tensor:
    """bool [G, N]: per group g (G = n.numel(), N = scores.numel() // G) the n[g] highest eligible cells of
    scores viewed as [G, N], ties to the lowest index. See the module docstring."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    G = n.numel()
    if scores.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"select_global: scores dtype {scores.dtype} (expected float32, bfloat16 or float16)")
    if not scores.is_contiguous() or G == 0 or scores.numel() % G:
        raise ValueError(f"select_global: scores {tuple(scores.shape)} (contiguous) must split into n.numel() = {G} "
                         "groups")
    N = scores.numel() // G
    if width is not None and (width.dim() != 1 or width.numel() == 0 or N % width.numel()):
        raise ValueError(f"select_global: width {tuple(width.shape)} must be [K] with K dividing N = {N}")
    key16 = scores.dtype == torch.bfloat16
    digits = DIGITS_16 if key16 else DIGITS_32
    if sum(digits) != (16 if key16 else 32) or min(digits) < 1:
        raise ValueError(f"select_global: digit widths {digits} must be positive and sum to the key width")
    dev = scores.device
    if POISON_OUTPUTS:
        out = torch.full((G, N), 0x55, dtype=torch.int8, device=dev)
    else:
        out = torch.empty(G, N, dtype=torch.int8, device=dev)
    if N == 0:
        return out.view(torch.bool)
    P, tpp = _layout(G, N)
    has_w = width is not None
    w = width.to(device=dev, dtype=torch.int32).contiguous() if has_w else out   # out: an unused dummy pointer
    K = width.numel() if has_w else 1
    nb = n.to(device=dev, dtype=torch.int64).reshape(G).contiguous()
    prefix = torch.empty(G, dtype=torch.int64, device=dev)
    need = torch.empty(G, dtype=torch.int64, device=dev)
    tiebase = torch.empty(G, P, dtype=torch.int64, device=dev)
    shift = sum(digits)
    pb = min(1024, triton.next_power_of_2(P))
    if FUSED_PICK:
        row = 1 << max(digits)                                         # one buffer for every pass: rows of the widest
        if POISON_OUTPUTS:                                             # a row a pass fails to zero / overwrite shows
            ph = torch.full((G, P, row), 0x55555555, dtype=torch.int32, device=dev)
        else:
            ph = torch.empty(G, P, row, dtype=torch.int32, device=dev)
        sums = torch.zeros(G, row + 1, dtype=torch.int64, device=dev)   # [G, row + 1]: counts over programs, ticket;
                                                                        # each pass's last program zeroes them again
    for pass_i, bits in enumerate(digits):
        shift -= bits
        bins = 1 << bits
        use_hist = pass_i < HIST_PASSES
        if FUSED_PICK:
            _count_pick_kernel[(P, G)](scores, w, K, nb, prefix, need, tiebase, ph, sums, N, P, tpp, SHIFT=shift,
                                       BITS=bits, ROW=row, FIRST=pass_i == 0, LAST=pass_i == len(digits) - 1,
                                       USE_HIST=use_hist, HAS_WIDTH=has_w, KEY16=key16, BLK=BLOCK, PB=pb,
                                       num_warps=NUM_WARPS)
            continue
        ph = (torch.empty if use_hist else torch.zeros)(G, P, bins, dtype=torch.int32, device=dev)
        _count_kernel[(P, G)](scores, w, K, prefix, ph, N, P, tpp, SHIFT=shift, BITS=bits, FIRST=pass_i == 0,
                              USE_HIST=use_hist, HAS_WIDTH=has_w, KEY16=key16, BLK=BLOCK, num_warps=NUM_WARPS)
        hist = ph.sum(1, dtype=torch.int64)                              # [G, bins]
        _pick_kernel[(G,)](hist, ph, nb, prefix, need, tiebase, P, BITS=bits, FIRST=pass_i == 0,
                           LAST=pass_i == len(digits) - 1, PB=pb, num_warps=4)
    _mark_kernel[(P, G)](scores, w, K, prefix, need, tiebase, out, N, P, tpp, HAS_WIDTH=has_w, KEY16=key16,
                         BLK=BLOCK, num_warps=NUM_WARPS)
    return out.view(torch.bool)


def select_global_ref(scores: torch.Tensor, n: torch.Tensor, width: torch.Tensor | None = None) -> torch.Tensor:
    """The same selection with a stable descending sort per group (tests, and methods/sea/shared.py's tensor-op
    path): bool [G, N]."""
    G = n.numel()
    x = scores.reshape(G, -1).float()                                   # [G, N]
    N = x.shape[1]
    elig = ~torch.isnan(x) & (x > float("-inf"))
    if width is not None:
        elig = elig & (width > 0).repeat(N // width.numel())[None, :]
    x = x.masked_fill(~elig, float("-inf"))
    order = torch.sort(x, dim=1, descending=True, stable=True).indices   # equal floats keep index order
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N, device=x.device).expand(G, N).contiguous())
    return (rank < n.reshape(G, 1).to(x.device)) & elig
