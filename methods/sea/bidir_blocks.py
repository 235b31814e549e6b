"""Bidirectional SEA inference in blocks of query rows: the whole call's output with O(rows) intermediates.

`forward_bidirectional_blocks(layer, q, k, v, scale=..., rows=...)` returns what `layer(q, k, v, causal=False)`
returns (no padding mask, no gradient, top-k mode per_batch or per_head), up to float summation order, without
ever holding an O(T x H x K) tensor. The whole call's estimate A_hat [B, H, T, K] and its selection mask are the
large intermediates there (33x SDPA-flash's peak at T = 64k on an H200); here they exist for `rows` query rows at
a time. Steps:

 1. Performer (softmax features, bidirectional), key side once, in blocks of `rows` keys: the global key stabiliser
    (max of the key projections over all keys and features, per (b, kv head)) in a first sweep, then the key-value
    summary sum phi_k^T [V_I ; v] [m, 2d] and the normaliser sum phi_k [m] in fp32 in a second (phi_k recomputed:
    O(T d m) flops, no [T, m] tensor kept). The same sweep sums v over each of the K cells (for the mix). Per
    key-value head: GQA inputs are never repeated to H heads as a whole (only block by block).
 2. The estimate of query rows [s, e): Performer query side (per-row stabiliser) against the summary, the encoder
    and scaler head (the Estimator's modules, or its fused encoder kernel where the whole call would take it), and
    the bidirectional CNN decoder on a window of encoder rows around the block (`decoder_window` /
    `decode_window`): conv1 (stride 2 over time, padding 1), conv2 at half resolution, nearest x2 repeat, conv3,
    and for odd T the nearest resize back to T rows. The window reaches 5-6 rows past each end of the block; rows
    outside the sequence are zero rows exactly where the module's zero padding puts them, and the stride-2 grid is
    the global one (any block start works). The halo rows' Performer and encoder are recomputed per block.
 3. The per_batch (per_head) top-k ranks all H x T x K (T x K) cells of a batch element (head) against one budget
    (topk.budgets), so it is exact only over all blocks: `BlockedTopK`, a radix select on the fp32 bit patterns of
    A_hat (>= 0, so the int32 bits order like the values). Pass 1 histograms the top 16 bits per group (65536 bins)
    and sums A_hat's columns over query rows (the mix's column mean); the bin holding the n-th largest value
    follows. If the budget takes that whole bin (or all eligible cells), pass 2 is the final pass. Otherwise a
    refinement pass histograms the low 16 bits of the cells inside that bin per (b, h), which gives the exact
    threshold value tau and how many cells equal to tau must be taken. The final pass recomputes each block's
    estimate and selects the cells above tau plus the tied cells at tau in order of lowest flat index (b, h, t, k)
    first (per head: (t, k)); then it builds the block's CSR key lists (interp.py's geometry: bidirectional rows
    all span the T keys; by the interpolation kernels where interp_backend takes them, auto: CUDA, else by
    block_csr's tensor ops), runs the sparse attention of the block's query rows against all keys (the layer's
    sparse kernel: the rows kernel on CUDA, the row kernel under Triton, the torch gather path otherwise; with the
    mix in the kernel where mix_fused says so), and mixes with the global average context.
 4. The mix: C_avg [B, H, 1, D] = sum_c colmean_c / width_c * (sum of v over cell c's keys), the column mean of A_hat
    over all T query rows spread over each cell's keys: SEAAttention.average_context without its [B, H, 1, T]
    weights.

Semantics against the whole call (SEAAttention.forward, causal=False, no mask, no grad):
  * Same function up to float summation order: the Performer sums over keys in blocks, the column sums of A_hat in
    blocks, C_avg summed per cell, convolutions over a row window instead of the whole sequence.
  * Ties at the top-k threshold: the whole call's torch.topk takes tied cells in an unspecified order; here the
    lowest flat index (b, h, t, k) goes first. The two agree whenever the value at the threshold is unique. The
    bidirectional decoder repeats each of its K/2 columns twice (nearest x2 along K), so every value of A_hat
    occurs (at least) in a pair of cells; with an even budget (per_batch: n = H T per-row cells, even for even H)
    the threshold falls between pairs and is unique unless other values coincide.
  * Near-ties: a cell whose value differs from the threshold by float rounding (~1e-7 relative) may fall on the
    other side than in the whole call, like any change of summation order would.
  * performer_dtype=bf16: the features and values are rounded to bf16 as the whole call's dense path does, the
    [m, 2d] summary is accumulated in fp32 over key blocks and rounded to bf16 once, then the query product runs in
    bf16; agreement to bf16 rounding, not bit for bit. On CUDA the whole call runs the fused Performer kernel
    (kernels/favor_dense.py, tf32 products under estimator_precision=tf32); here the Performer is always torch
    matmuls in fp32 (estimator_precision=tf32 allows TF32 for them and for the decoder window's convolutions, as
    for the whole call's PyTorch operations: estimator.torch_precision). compile="estimator" is not applied here
    (eager estimator). estimator_dtype bf16/fp16: the decoder window runs under the same autocast as
    Estimator.decode.
  * Cost: the estimator runs twice (pass 1 and the final pass), three times when the threshold bin is only partly
    taken (almost always); with a single block (rows >= T) it runs once and the estimate is kept. The key side of
    the Performer runs once (two cheap sweeps). Host syncs: one or two for the threshold, one per block for the CSR
    lists.
  * The finite-input check (layer.validate_inputs) runs on q, k, v first (aminmax: no temporaries).

Memory (beyond q, k, v and the output [B, H, T, D] in q's dtype): O(rows x H x K) for the estimate, the masks and the
tie ranks of one block (plus the decoder window's ~12 halo rows), O(rows x H x K x min(k, T / K)) for one block's CSR
lists (int32 columns from the kernels; block_csr's tensor ops hold ~5 int64 temporaries per key; a run at T = 16M
in 64 blocks on an H200 ran out of memory with the tensor-op lists, cause not traced: results/nvidia-h200/
sea-vs-dense-4/), O(B H (m + K) d) for the Performer summary and the cell sums of v, and the histograms: [G, 65536]
int64 (G = B per_batch, B H per_head) and, for the refinement, [B H, 65536] int32 (int64 when T K >= 2^31). No O(T)
tensor except q, k, v and the output. Measured on the CPU (live storage bytes of every aten op's outputs, B=1, H=16,
d=64, K=128, T=2048, sparse attention stubbed out): 62 KiB per query row of a block (~4 KiB per row and head; the
encoder's LayerNorm is the peak) plus 4.5 MiB of histograms; the torch gather path of the sparse attention (CPU only)
adds ~3x D floats per selected key. This module imports no Triton at module level (kernels are imported inside calls).
It sets the estimator's last_performer / last_decoder ("torch-blocks", "torch-window") and last_encoder, which the
layer's impl string reads; `info` (forward_bidirectional_blocks) reports the rest.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from methods.base import check_inputs
from methods.sea.estimator import DEC_DTYPES, identity_rows, nearest_resize, torch_precision
from methods.sea import estimator as est_mod
from methods.sea.interp import cell_bounds
from methods.sea.topk import budgets

MODES = ("per_batch", "per_head")
NBINS = 1 << 16                     # radix of each histogram level: the high, then the low 16 bits of fp32 A_hat
FEATURE_EPS = 1e-4                  # favor.softmax_features' eps
PERFORMER_EPS = 1e-6                # favor.favor_attention's eps


def bidirectional_block_reason(layer, q, k, v, *, key_padding_mask=None) -> str | None:
    """Why this call cannot run in bidirectional query blocks (None: it can). For block_plan's routing."""
    if layer.causal:
        return "causal layer (query blocks: SEAAttention._forward_blocks)"
    return layer.blocks_refusal(q, k, v, key_padding_mask=key_padding_mask, modes=MODES)


# --- decoder on a window of rows -------------------------------------------------------------------------------------
def _resize_rows(T: int, s: int, e: int) -> torch.Tensor | None:
    """Source rows (of the 2 ceil(T/2) conv3 rows) of output rows s .. e-1 under estimator.nearest_resize, computed
    with its float32 formula (so the indices are the same ones); None when no resize happens (T even)."""
    n = 2 * ((T + 1) // 2)
    if n == T:
        return None
    scale = torch.tensor(n / T, dtype=torch.float32)
    return (torch.arange(s, e, dtype=torch.float32) * scale).floor().long().clamp_(max=n - 1)


def decoder_window(T: int, s: int, e: int) -> tuple[int, int]:
    """Encoder rows [z0, z1) that rows [s, e) of BidirectionalDecoder's output (over T rows) depend on."""
    if not 0 <= s < e <= T:
        raise ValueError(f"decoder rows [{s}, {e}) outside [0, {T})")
    return _window(T, s, e)[-1]


def _window(T: int, s: int, e: int):
    T1 = (T + 1) // 2                                                   # conv1 rows: ceil(T / 2)
    T3 = 2 * T1                                                         # rows after the x2 repeat (conv3's rows)
    src = _resize_rows(T, s, e)
    a3, b3 = (s, e) if src is None else (int(src[0]), int(src[-1]) + 1)   # conv3 rows giving output rows [s, e)
    r0, r1 = max(a3 - 1, 0), min(b3 + 1, T3)                             # repeated rows conv3 reads (inside)
    a2, b2 = r0 // 2, (r1 - 1) // 2 + 1                                  # conv2 rows they repeat
    c0, c1 = max(a2 - 1, 0), min(b2 + 1, T1)                             # conv1 rows conv2 reads (inside)
    z0, z1 = max(2 * c0 - 1, 0), min(2 * c1, T)                          # encoder rows conv1 reads (inside)
    return src, (a3, b3), (r0, r1), (a2, b2), (c0, c1), (z0, z1)


def decode_window(dec, z: torch.Tensor, *, T: int, s: int, e: int) -> torch.Tensor:
    """Rows [s, e) of dec(z_full) (dec a BidirectionalDecoder, z_full [B, H, T, 2d]) from z = z_full[:, :, z0:z1],
    (z0, z1) = decoder_window(T, s, e): logits [B, H, e - s, K]. Each convolution runs without time padding on rows
    that the caller's window provides, with explicit zero rows where the module's zero padding lies (outside the
    sequence at that resolution), so every output row is the module's (up to float summation order)."""
    src, (a3, b3), (r0, r1), (a2, b2), (c0, c1), (z0, z1) = _window(T, s, e)
    B, H, n, _ = z.shape
    if n != z1 - z0:
        raise ValueError(f"decode_window: z has {n} rows; rows [{s}, {e}) need encoder rows [{z0}, {z1})")
    K = dec.K
    x = dec.row(z).view(B, H, n, 4, K // 2)                               # [B, H, n, 4, K/2]
    x = x.permute(0, 1, 3, 2, 4).reshape(B, 4 * H, n, K // 2)            # [B, 4H, n, K/2]
    x = F.pad(x, (0, 0, z0 - (2 * c0 - 1), 2 * c1 - z1))                 # encoder rows [2 c0 - 1, 2 c1)
    x = F.conv2d(x, dec.conv1.weight, dec.conv1.bias, stride=(2, 1), padding=(0, 1)).relu_()   # conv1 rows [c0, c1)
    x = F.pad(x, (0, 0, c0 - (a2 - 1), (b2 + 1) - c1))                   # conv1 rows [a2 - 1, b2 + 1)
    x = F.conv2d(x, dec.conv2.weight, dec.conv2.bias, padding=(0, 1)).relu_()   # conv2 rows [a2, b2)
    if est_mod.PARITY_CONV3:                                             # the module's parity form (parity_weight)
        # half rows [a2, b2) in both parities; a kept row 2i + p reads half rows i - 1, i (p = 0) or i, i + 1 (p = 1),
        # inside [a2, b2) or outside the sequence (zero): only rows outside [a3, b3) see the window's zero edges
        y = F.conv2d(F.pad(x, (0, 0, 1, 1)), *dec.parity_weight(), padding=(0, 1))   # [B, 2H, b2 - a2, K/2]
        x = est_mod.interleave_parity(y, H)[:, :, a3 - 2 * a2:b3 - 2 * a2]   # conv3 rows [a3, b3)
        if src is not None:
            x = x.index_select(2, (src - a3).to(x.device))
        return nearest_resize(x, e - s, K)
    x = x.repeat_interleave(2, dim=2)[:, :, r0 - 2 * a2:r1 - 2 * a2]      # repeated rows [r0, r1)
    x = F.pad(x, (0, 0, r0 - (a3 - 1), (b3 + 1) - r1))                   # repeated rows [a3 - 1, b3 + 1)
    x = F.conv2d(x, dec.conv3.weight, dec.conv3.bias, padding=(0, 1))    # conv3 rows [a3, b3): [B, H, ., K/2]
    if src is not None:
        x = x.index_select(2, (src - a3).to(x.device))                   # nearest rows -> [B, H, e - s, K/2]
    return nearest_resize(x, e - s, K)                                   # columns K/2 -> K: [B, H, e - s, K]


# --- exact grouped top-k over blocks ---------------------------------------------------------------------------------
class BlockedTopK:
    """The n[g] largest eligible cells of each group g (per_batch: g = b over (h, t, k); per_head: g = (b, h) over
    (t, k)) of values x [B, H, T, K] >= 0 streamed in blocks of rows, as topk.select_topk's per_batch / per_head
    modes select them; exact ties at the threshold: the lowest flat index (b, h, t, k) first.

    Use: count(x_block) for every block; plan() -> whether refine() passes are needed; if so refine(x_block) for
    every block and settle(); then select(x_block) for every block in increasing row order. The blocks of each pass
    must hold bitwise the same values. Eligible cells: bool [K] (cells covering no key are never selected)."""

    def __init__(self, n: torch.Tensor, *, B: int, H: int, T: int, K: int, per_head: bool, eligible: torch.Tensor):
        self.B, self.H, self.T, self.K, self.per_head = B, H, T, K, per_head
        dev = eligible.device
        self.G = B * H if per_head else B
        self.n = n.to(device=dev, dtype=torch.int64).reshape(self.G)
        self.eligible = eligible.to(torch.bool)                          # [K]
        self.gid = torch.arange(B * H, device=dev).view(B, H) if per_head else \
            torch.arange(B, device=dev)[:, None].expand(B, H)            # [B, H] group of each head
        self.hist = torch.zeros(self.G * NBINS + 1, dtype=torch.int64, device=dev)   # last slot: ineligible cells
        self.hist_lo = None
        self.gt = self.tie = self.quota = self.seen = None
        self.ties = False

    def _bits(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.shape[0] != self.B or x.shape[1] != self.H or x.shape[3] != self.K:
            raise ValueError(f"BlockedTopK: expected fp32 [{self.B}, {self.H}, rows, {self.K}], got {x.dtype} "
                             f"{tuple(x.shape)}")
        return x.contiguous().view(torch.int32)                          # >= 0 values: bits order like values

    @staticmethod
    def _ones(n: int, dtype, device) -> torch.Tensor:
        """n ones (a stride-0 view) to add into a histogram. The histograms use scatter_add_ (atomic adds on CUDA;
        integer sums, so the result does not depend on their order): index_put_(accumulate=True) sorts the indices
        and adds each bin's duplicates one after another, which took 3.5 of 3.6 s of a bidirectional forward in 16
        query blocks at T = 16k on an H200 (~2M cells a block in a few hundred bins;
        results/nvidia-h200/sea-round19/call1/profile-bidir-blocks-16k.txt)."""
        return torch.ones(1, dtype=dtype, device=device).expand(n)

    def count(self, x: torch.Tensor) -> None:
        bits = self._bits(x)
        idx = self.gid[:, :, None, None] * NBINS + (bits >> 16).long()   # [B, H, R, K]
        idx = torch.where(self.eligible, idx, self.G * NBINS)
        self.hist.scatter_add_(0, idx.reshape(-1), self._ones(idx.numel(), self.hist.dtype, x.device))

    def plan(self) -> bool:
        """Threshold bin per group from the high-bit histogram; True when some group needs the low bits."""
        h = self.hist[:-1].view(self.G, NBINS)
        cum = h.flip(-1).cumsum(-1).flip(-1)                             # [G, NBINS]: cells in bins >= j
        j = (cum >= self.n[:, None]).sum(-1) - 1                         # [G] bin of the n-th largest; -1: take all
        jc = j.clamp(min=0)
        nxt = (jc + 1).clamp(max=NBINS - 1)
        above = torch.where(jc + 1 < NBINS, cum.gather(1, nxt[:, None])[:, 0], 0)   # cells in bins > j
        in_bin = h.gather(1, jc[:, None])[:, 0]
        self.j, self.r = j, self.n - above                               # r: cells to take from bin j (1 .. in_bin)
        self.need = (j >= 0) & (self.r < in_bin)
        self.gt = torch.where(j < 0, -1, (jc << 16) - 1)                 # select bits > gt (whole bins j and up)
        self.tie = torch.full_like(j, -2)                                # no tie value (bits >= 0)
        self.quota = torch.zeros(self.B, self.H, dtype=torch.int64, device=j.device)
        need = bool(self.need.any())                                     # host sync
        if need:
            wide = torch.int64 if self.T * self.K >= 2 ** 31 else torch.int32
            self.hist_lo = torch.zeros(self.B * self.H * NBINS + 1, dtype=wide, device=j.device)
        return need

    def refine(self, x: torch.Tensor) -> None:
        bits = self._bits(x)
        B, H = self.B, self.H
        jb = self.j[self.gid][:, :, None, None]                          # [B, H, 1, 1]
        take = self.eligible & ((bits >> 16).long() == jb) & self.need[self.gid][:, :, None, None]
        bh = torch.arange(B * H, device=x.device).view(B, H, 1, 1)
        idx = torch.where(take, bh * NBINS + (bits & 0xFFFF).long(), B * H * NBINS)
        self.hist_lo.scatter_add_(0, idx.reshape(-1), self._ones(idx.numel(), self.hist_lo.dtype, x.device))

    def settle(self) -> None:
        """Exact threshold tau and per-head quotas of tied cells from the low-bit histograms."""
        B, H = self.B, self.H
        hl = self.hist_lo[:-1].view(B, H, NBINS).long()
        hg = hl.reshape(B * H, NBINS) if self.per_head else hl.sum(1)    # [G, NBINS]
        cum = hg.flip(-1).cumsum(-1).flip(-1)
        r = self.r.clamp(min=1)
        lo = ((cum >= r[:, None]).sum(-1) - 1).clamp(min=0)              # [G] low bits of tau
        nxt = (lo + 1).clamp(max=NBINS - 1)
        above = torch.where(lo + 1 < NBINS, cum.gather(1, nxt[:, None])[:, 0], 0)
        r_tie = r - above                                                # tied cells to take at tau
        tau = (self.j.clamp(min=0) << 16) | lo
        at_tau = hl.gather(2, lo[self.gid][:, :, None])[:, :, 0]         # [B, H] cells equal to tau per head
        before = at_tau.cumsum(1) - at_tau                               # per_batch: tied cells of lower heads
        if self.per_head:
            before = torch.zeros_like(before)
        quota = torch.minimum((r_tie[self.gid] - before).clamp(min=0), at_tau)
        need = self.need
        self.gt = torch.where(need, tau, self.gt)
        self.tie = torch.where(need, tau, self.tie)
        self.quota = torch.where(need[self.gid], quota, 0)
        self.ties = bool(need.any())
        self.hist_lo = None

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """bool [B, H, R, K] for the next block of rows (blocks in increasing row order)."""
        bits = self._bits(x)
        B, H, R, K = bits.shape
        sel = self.eligible & (bits > self.gt[self.gid][:, :, None, None])
        if self.ties:
            if self.seen is None:
                self.seen = torch.zeros(B, H, dtype=torch.int64, device=x.device)
            eq = (self.eligible & (bits == self.tie[self.gid][:, :, None, None])).view(B, H, R * K)
            wide = torch.int64 if self.T * self.K >= 2 ** 31 else torch.int32
            upto = eq.cumsum(-1, dtype=wide)                             # tied cells of this head up to this one
            sel |= (eq & (upto <= (self.quota - self.seen)[:, :, None])).view(B, H, R, K)   # rank < quota
            self.seen += eq.sum(-1)
        return sel


# --- CSR lists of a block -------------------------------------------------------------------------------------------
def block_csr(sel: torch.Tensor, *, k: int, lo: torch.Tensor, width: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Selected cells bool [B, H, R, K] of bidirectional rows (every row spans all T keys: cells [lo_c, lo_c +
    width_c), [K] each) -> (row_ptr int64 [B*H*R + 1], col int32 [nnz]) with interp.mask_to_csr's keys: a cell gives
    min(width, k) keys lo + floor(j width / n), rows' keys ascending. One host sync (nonzero)."""
    B, H, R, K = sel.shape
    dev = sel.device
    n_cell = width.clamp(max=k)                                          # [K] keys per cell
    sel = sel & (n_cell > 0)
    counts = (sel.to(torch.int64) * n_cell).sum(-1).reshape(-1)          # [B*H*R] keys per row
    row_ptr = torch.zeros(B * H * R + 1, dtype=torch.int64, device=dev)
    torch.cumsum(counts, 0, out=row_ptr[1:])
    pair = torch.nonzero(sel.reshape(-1)).squeeze(1)                     # selected (b, h, t, c), flat ascending
    c_p = pair % K
    n_p = n_cell[c_p]                                                    # [P]
    e_pair = torch.repeat_interleave(torch.arange(pair.numel(), device=dev), n_p)   # pair of each key [nnz]
    first = torch.cumsum(n_p, 0) - n_p
    off = torch.arange(e_pair.numel(), device=dev) - first[e_pair]
    cp = c_p[e_pair]
    col = lo[cp] + torch.div(off * width[cp], n_p[e_pair], rounding_mode="floor")
    return row_ptr, col.to(torch.int32).contiguous()


# --- the blocked forward --------------------------------------------------------------------------------------------
def _identity_rows(s: int, e: int, T: int, d: int, device) -> torch.Tensor:
    """Rows s .. e-1 of estimator.identity_values(None, ., T, d) ([e - s, d]), by its float32 formula."""
    return identity_rows(T, d, device, s, e)


class _Blocks:
    def __init__(self, layer, q, k, v, scale, rows: int, info: dict | None):
        self.layer, self.est = layer, layer.estimator
        self.q, self.k, self.v = q, k, v
        B, H, T, D = q.shape
        self.B, self.H, self.T, self.D, self.Hkv = B, H, T, D, k.shape[1]
        self.g = H // self.Hkv
        self.scale = 1.0 / math.sqrt(D) if scale is None else scale
        self.rows = rows
        self.info = info if info is not None else {}
        self.K = layer.K
        L = torch.full((1, 1), T, dtype=torch.long, device=q.device)
        lo, hi = cell_bounds(L, self.K)                                  # [1, 1, K]
        self.lo, self.width = lo[0, 0], (hi - lo)[0, 0]                  # [K] every row's cells
        self.hi = hi[0, 0]
        self.bf16 = self.est.performer_dtype == "bf16"

    # Performer key side: stabiliser, [m, 2d] summary, [m] normaliser; and the sum of v over each cell
    def keys(self):
        est, k, v = self.est, self.k, self.v
        B, Hkv, T, d = k.shape
        proj = est.proj.float()                                          # [m, d]
        m = proj.shape[0]
        stab = None
        for s in range(0, T, self.rows):
            dash = (k[:, :, s:s + self.rows].float() * d ** -0.25) @ proj.T   # [B, Hkv, R, m]
            mx = dash.amax(dim=(-1, -2))                                 # [B, Hkv]
            stab = mx if stab is None else torch.maximum(stab, mx)
        kv = torch.zeros(B, Hkv, m, 2 * d, device=k.device)
        zs = torch.zeros(B, Hkv, m, device=k.device)
        vcell = torch.zeros(B, Hkv, self.K, d, device=k.device)
        for s in range(0, T, self.rows):
            e = min(T, s + self.rows)
            xn = k[:, :, s:e].float() * d ** -0.25
            dash = xn @ proj.T                                           # [B, Hkv, R, m]
            diag = (xn * xn).sum(-1, keepdim=True) / 2                   # [B, Hkv, R, 1]
            phi = dash.sub_(diag).sub_(stab[:, :, None, None]).exp_().add_(FEATURE_EPS).mul_(m ** -0.5)   # [., m]
            vb = v[:, :, s:e].float()                                    # [B, Hkv, R, d]
            vals = torch.cat([_identity_rows(s, e, T, d, k.device).expand(B, Hkv, e - s, d), vb], -1)   # [., 2d]
            zs += phi.sum(-2)
            if self.bf16:                                                # the dense path's bf16 operands
                phi, vals = phi.bfloat16().float(), vals.bfloat16().float()
            kv += phi.transpose(-1, -2) @ vals                           # [B, Hkv, m, 2d]
            cell = torch.searchsorted(self.hi, torch.arange(s, e, device=k.device), right=True).clamp(max=self.K - 1)
            vcell.index_add_(2, cell, vb)                                # [B, Hkv, K, d]
        g = self.g
        self.kv = kv.repeat_interleave(g, 1)                             # [B, H, m, 2d] (small)
        if self.bf16:
            self.kv = self.kv.bfloat16()                                 # the dense path rounds its summary
        self.zs = zs.repeat_interleave(g, 1)                             # [B, H, m]
        self.vcell = vcell                                               # [B, Hkv, K, d]

    # the estimate of query rows [s, e): logits [B, H, R, K], s_prob, s_mix [B, H, R, 1]
    def performer_rows(self, z0: int, z1: int) -> torch.Tensor:
        """favor_attention's output (softmax features, bidirectional) for query rows [z0, z1): [B, H, n, 2d] fp32.
        Same operations as favor.softmax_features / linear_attention, in place where that frees a temporary."""
        d = self.D
        xn = self.q[:, :, z0:z1].float() * d ** -0.25                    # [B, H, n, d]
        proj = self.est.proj.float()
        m = proj.shape[0]
        dash = xn @ proj.T                                               # [B, H, n, m]
        diag = (xn * xn).sum(-1, keepdim=True) / 2                       # [B, H, n, 1]
        del xn
        stab = dash.amax(-1, keepdim=True)                               # per-row query stabiliser
        phi = dash.sub_(diag).sub_(stab).exp_().add_(FEATURE_EPS).mul_(m ** -0.5)   # [B, H, n, m]
        den = (phi * self.zs[:, :, None, :]).sum(-1, keepdim=True)       # [B, H, n, 1]
        num = (phi.bfloat16() @ self.kv).float() if self.bf16 else phi @ self.kv   # [B, H, n, 2d]
        del phi, dash
        return num.div_(den.add_(PERFORMER_EPS))

    def encoder_rows(self, z0: int, z1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output z [B, H, n, 2d] and the scaler head's sigmoid outputs [B, H, n, 2] of rows [z0, z1)."""
        est = self.est
        c_perf = self.performer_rows(z0, z1)                             # [B, H, n, 2d]
        vf = self.v[:, :, z0:z1].float().repeat_interleave(self.g, 1).contiguous()   # [B, H, n, d]
        est.last_encoder = est.encoder_path(c_perf, vf)
        if est.last_encoder == "triton":
            return est.fused_encoder(c_perf, vf)                         # [B, H, n, 2d], [B, H, n, 2]
        z = est.enc(torch.cat([c_perf, vf], dim=-1))                     # [B, H, n, 2d]
        return z, torch.sigmoid(est.scaler(z))                           # [B, H, n, 2d], [B, H, n, 2]

    def estimate(self, s: int, e: int):
        """Logits [B, H, R, K] and s_prob, s_mix [B, H, R, 1] of query rows [s, e) (R = e - s)."""
        est, T = self.est, self.T
        z0, z1 = decoder_window(T, s, e)
        z, scales = self.encoder_rows(z0, z1)
        scales = scales[:, :, s - z0:e - z0]                             # [B, H, R, 2]
        if est.dec_dtype == "fp32":
            logits = decode_window(est.dec, z, T=T, s=s, e=e)
        else:
            with torch.autocast(device_type=z.device.type, dtype=DEC_DTYPES[est.dec_dtype], cache_enabled=False):
                logits = decode_window(est.dec, z, T=T, s=s, e=e).float()
        self.info["estimator_runs"] = self.info.get("estimator_runs", 0) + 1
        return logits, scales[..., 0:1], scales[..., 1:2]

    def a_hat(self, s, e):
        logits, s_prob, s_mix = self.estimate(s, e)
        return torch.softmax(logits, dim=-1), s_prob, s_mix              # [B, H, R, K]

    def run(self) -> torch.Tensor:
        layer, q, k, v = self.layer, self.q, self.k, self.v
        B, H, T, D, K = self.B, self.H, self.T, self.D, self.K
        self.est.last_performer, self.est.last_decoder = "torch-blocks", "torch-window"
        self.keys()
        blocks = [(s, min(T, s + self.rows)) for s in range(0, T, self.rows)]
        keep = len(blocks) == 1                                          # one block: estimate once, keep it
        L = torch.full((B, T), T, dtype=torch.long, device=q.device)
        n = budgets(layer.mode, L, k=layer.k, K=K, H=H)                  # [B]
        per_head = layer.mode == "per_head"
        if per_head:
            n = n[:, None].expand(B, H)
        topk = BlockedTopK(n, B=B, H=H, T=T, K=K, per_head=per_head, eligible=self.width > 0)
        colsum = torch.zeros(B, H, K, device=q.device)
        kept = None
        for s, e in blocks:                                              # pass 1: histogram, column sums
            est = self.a_hat(s, e)
            colsum += est[0].sum(2)
            topk.count(est[0])
            kept = est if keep else None
        refine = topk.plan()
        if refine:                                                       # pass 2: the threshold bin's low bits
            for s, e in blocks:
                topk.refine(kept[0] if keep else self.a_hat(s, e)[0])
            topk.settle()
        self.info["passes"] = 3 if refine else 2
        # mix weights: column mean of A_hat over the T query rows, per key of each cell, times the cells' v sums
        w = colsum / T / self.width.clamp(min=1).float()                 # [B, H, K]
        vc = self.vcell.repeat_interleave(self.g, 1)                     # [B, H, K, d]
        c_avg = (w[:, :, None, :] @ vc)                                  # [B, H, 1, D] fp32
        sparse, fused = self.kernels()
        out = torch.empty_like(q)
        for s, e in blocks:                                              # final pass: select, attend, mix
            a, s_prob, s_mix = kept if keep else self.a_hat(s, e)
            if layer.force_s_prob >= 0:
                s_prob = torch.full_like(s_prob, layer.force_s_prob)
            if layer.force_s_mix >= 0:
                s_mix = torch.full_like(s_mix, layer.force_s_mix)
            sel = topk.select(a)                                         # bool [B, H, R, K]
            row_ptr, col = self.csr(sel)
            qb = q[:, :, s:e]                                            # [B, H, R, D]
            if fused:
                _, ran = layer.sparse_mix(sparse, qb, k, v, row_ptr, col, self.scale, s_prob, s_mix, c_avg,
                                          out=out[:, :, s:e])
            else:
                c, ran = self.attend(sparse, qb, row_ptr, col)          # [B, H, R, D] in q's dtype
                out[:, :, s:e] = torch.addcmul((1 - s_mix) * c_avg, s_mix * s_prob, c.float()).to(q.dtype)
        self.info.update(blocks=len(blocks), rows=self.rows, sparse=ran, mix="fused" if fused else "torch")
        return out

    def kernels(self) -> tuple[str, bool]:
        layer, q = self.layer, self.q
        _, sparse = layer.sparse_plan(q, self.k, self.v, None)           # forward-only here (no_grad)
        fused = layer.mix_fused(q, self.k, self.v, layout="csr", kernel=sparse, valid=None, causal=False)
        return sparse, fused

    def csr(self, sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A block's CSR lists from its selected cells bool [B, H, R, K]: the interpolation kernels
        (kernels/sea_interp.py: row_key_counts + csr_columns_cells, rows spanning all T keys) where the layer's
        interp_backend takes them (auto: CUDA), block_csr's tensor ops otherwise; the same lists either way. The
        kernels write the int32 columns directly, where block_csr holds ~5 int64 temporaries per key (the peak of a
        block that selects many cells)."""
        layer = self.layer
        use = layer.interp_backend == "triton" or (layer.interp_backend == "auto" and sel.is_cuda)
        layer.last_interp = "triton" if use else "torch"
        if not use:
            return block_csr(sel, k=layer.k, lo=self.lo, width=self.width)
        from kernels.sea_interp import csr_columns_cells, row_key_counts

        row_ptr = row_key_counts(sel, layer.k, causal=False, row_ptr=True, span=self.T)   # [B*H*R + 1]
        nnz = int(row_ptr[-1])                                           # one host sync, as block_csr's nonzero
        return row_ptr, csr_columns_cells(sel, row_ptr, layer.k, max(nnz, 1), causal=False, span=self.T)[:nnz]

    def attend(self, sparse, qb, row_ptr, col):
        return self.layer.attend_block(sparse, qb, self.k, self.v, row_ptr, col, self.scale)


def forward_bidirectional_blocks(layer, q, k, v, *, scale=None, rows: int, info: dict | None = None) -> torch.Tensor:
    """Bidirectional SEA forward of `layer` (an SEAAttention built with causal=False) in blocks of `rows` query rows:
    out [B, H, T, D] in q's dtype, the whole call's `layer(q, k, v, causal=False, scale=scale)` up to float summation
    order and the tie rule at the top-k threshold (module docstring). q [B, H, T, D]; k, v [B, Hkv, T, D] (GQA
    handled per block, never repeated whole). No padding mask, no gradient (runs under torch.no_grad), top-k mode
    per_batch or per_head: anything else raises ValueError naming why (bidirectional_block_reason). `info`, if
    given, receives what ran: estimator_runs, passes, blocks, rows, sparse, mix."""
    check_inputs(q, k, v)
    B, H, T, D = q.shape
    if H != layer.heads or D != layer.head_dim:
        raise ValueError(f"this sea layer was built for heads={layer.heads}, head_dim={layer.head_dim}; "
                         f"got q {tuple(q.shape)}")
    if int(rows) < 1:
        raise ValueError(f"rows={rows}: query rows per block must be >= 1")
    why = bidirectional_block_reason(layer, q, k, v)
    if why is not None:
        raise ValueError(f"sea: bidirectional query blocks cannot serve this call: {why}")
    capturing = q.is_cuda and torch.cuda.is_current_stream_capturing()
    if layer.validate_inputs and not capturing:
        from methods.sea.layer import check_finite                       # layer.py imports this module

        check_finite(q=q, k=k, v=v)
    with torch.no_grad(), torch_precision(layer.estimator.precision):
        return _Blocks(layer, q, k, v, scale, int(rows), info).run()
