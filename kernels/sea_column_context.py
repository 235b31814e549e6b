"""SEA's bidirectional average context from the block scores in one Triton launch.

What: for block scores S [B, H, NB, K] (fp32: A_hat summed over each block of query rows, SEA's pooled estimate) and
the values v [B, H, T, D] (any float dtype, any strides with a unit last stride), T a multiple of K (every one of a
row's K cells holds W = T / K keys; cell i the keys [i W, (i + 1) W)),

    colmean[b, h, i] = (sum_j S[b, h, j, i] / T) / W                          (A_hat's column mean, per key)
    C_avg[b, h, :]   = sum_i colmean[b, h, i] * sum_{t in cell i} v[b, h, t, :]     -> fp32 [B, H, 1, D]

which is methods/sea/layer.py's average_context for that case (the mix's (1 - s_mix) term), there a column sum of
S, two divisions, a sum of v over each cell and a [K] x [K, D] product: 5-6 launches (~0.020 ms at 8k on an H200,
B=1, H=16, D=64, of which the cells' sum of v 0.009 for 16.7 MB: results/nvidia-h200/sea-graph-call/call1/). This
kernel: 0.017 ms there (0.071 at 64k, where v alone is 134 MB: ~0.034 at 4 TB/s), two launches with the tickets'
memset instead of 5-6; the forward 0.003 ms faster at 8k, the same at 64k (sea-graph-call/call4/).

How: grid (chunks, B H). A program owns CELLS consecutive cells of one (b, h): per cell the column sum over the NB
block rows, the sum of its W keys' values in fp32 (BLOCK_T keys a step), weighted and added to a [D] accumulator;
the program stores that partial sum in its row of a [B H, chunks, D] buffer, then draws a ticket
(tl.debug_barrier, one acq_rel atomic: the pattern of kernels/sea_topk_global.py's fused pick); the program that
draws the last ticket of its (b, h) sums the rows in chunk order (deterministic: the same order every call) and
stores C_avg, and puts the ticket back to 0. The tickets come zeroed (one memset a call).

Precision: fp32 sums in another order than the tensor ops' (per cell, then over cells in chunk order), so the same
value within fp32 rounding (tests: against a float64 statement).
"""
from __future__ import annotations

import torch

from kernels._buffers import triton_runs_on

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: context_usable() is False
    triton = None
    tl = None

TARGET_PROGRAMS = 1024     # about this many programs a launch (cells per program chosen from it). H200, SEA's
                           # forward: 0.017 ms at 8k, 0.071 at 64k, against ~0.020 / ~0.073 of the tensor ops it
                           # replaces (kernels 0.608 -> 0.605 ms, 3.888 -> 3.886; sea-graph-call/call4/). A second
                           # form (256 programs of 8 cells, column sums as [128, 8] tiles, the partial rows summed as
                           # one tile) took 0.021 / 0.130 ms (call5/): fewer programs read v more slowly.
BLOCK_T = 64               # keys a step of a cell's value sum
BLOCK_NB = 128             # block rows a step of a column sum
NUM_WARPS = 4


if triton is not None:

    @triton.jit
    def _context_kernel(S, V, PART, TICKET, O, H, NB, K, T, D, W, n_chunks, svb, svh, svt,
                        CELLS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_NB: tl.constexpr,
                        BLOCK_D: tl.constexpr):
        c = tl.program_id(0).to(tl.int64)
        bh = tl.program_id(1).to(tl.int64)
        b = bh // H
        h = bh % H
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        offs_t = tl.arange(0, BLOCK_T)
        offs_j = tl.arange(0, BLOCK_NB)
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for n in range(CELLS):
            i = c * CELLS + n
            if i < K:
                s = tl.zeros([BLOCK_NB], dtype=tl.float32)
                for j0 in range(0, NB, BLOCK_NB):                           # the column sum over the block rows
                    j = j0 + offs_j
                    s += tl.load(S + (bh * NB + j) * K + i, mask=j < NB, other=0.0)
                w = (tl.sum(s, axis=0) / T) / W                             # mass per key of cell i
                vs = tl.zeros([BLOCK_D], dtype=tl.float32)
                for t0 in range(0, W, BLOCK_T):                             # the cell's keys
                    t = i * W + t0 + offs_t
                    x = tl.load(V + b * svb + h * svh + t[:, None] * svt + offs_d[None, :],
                                mask=((t0 + offs_t) < W)[:, None] & dmask[None, :], other=0.0)
                    vs += tl.sum(x.to(tl.float32), axis=0)
                acc += w * vs
        tl.store(PART + (bh * n_chunks + c) * D + offs_d, acc, mask=dmask)
        tl.debug_barrier()                                                  # every thread's stores, then ...
        ticket = tl.atomic_add(TICKET + bh, 1, sem="acq_rel", scope="gpu")  # ... one thread's release / acquire
        if ticket == n_chunks - 1:                                          # the last program of (b, h)
            tl.debug_barrier()
            total = tl.zeros([BLOCK_D], dtype=tl.float32)
            for p in range(0, n_chunks):                                    # chunk order: deterministic
                total += tl.load(PART + (bh * n_chunks + p) * D + offs_d, mask=dmask, other=0.0,
                                 cache_modifier=".cg")
            tl.store(O + bh * D + offs_d, total, mask=dmask)
            tl.store(TICKET + bh, 0)


def context_usable(device) -> bool:
    """True when the kernel can run on `device` (CUDA, or any device under TRITON_INTERPRET=1)."""
    return triton_runs_on(device, triton is not None)


def column_context(scores: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """scores fp32 [B, H, NB, K] (A_hat's block sums), v [B, H, T, D] with T a multiple of K -> C_avg fp32
    [B, H, 1, D]: the column mean of A_hat per key of each cell, times the cell's values (module docstring)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if not isinstance(scores, torch.Tensor) or scores.dim() != 4 or scores.dtype != torch.float32:
        raise ValueError("column_context: scores must be a float32 [B, H, NB, K] tensor")
    if not isinstance(v, torch.Tensor) or v.dim() != 4 or not v.is_floating_point() or v.device != scores.device:
        raise ValueError(f"column_context: v must be a floating [B, H, T, D] tensor on {scores.device}")
    B, H, NB, K = scores.shape
    T, D = v.shape[2], v.shape[3]
    if tuple(v.shape[:2]) != (B, H):
        raise ValueError(f"column_context: v {tuple(v.shape)} and scores {tuple(scores.shape)} differ in B, H")
    if K < 1 or T < K or T % K:
        raise ValueError(f"column_context: T={T} must be a positive multiple of K={K}")
    if not context_usable(v.device):
        raise RuntimeError(f"column_context needs triton on CUDA (or TRITON_INTERPRET=1); got {v.device}")
    scores = scores.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    BH = B * H
    out = torch.empty(B, H, 1, D, dtype=torch.float32, device=v.device)
    if BH == 0 or D == 0:
        return out
    cells = max(1, min(K, -(-BH * K // TARGET_PROGRAMS)))
    n_chunks = -(-K // cells)
    part = torch.empty(BH, n_chunks, D, dtype=torch.float32, device=v.device)
    ticket = torch.zeros(BH, dtype=torch.int32, device=v.device)
    _context_kernel[(n_chunks, BH)](scores, v, part, ticket, out, H, NB, K, T, D, T // K, n_chunks,
                                    v.stride(0), v.stride(1), v.stride(2), CELLS=cells, BLOCK_T=BLOCK_T,
                                    BLOCK_NB=BLOCK_NB, BLOCK_D=max(16, triton.next_power_of_2(D)),
                                    num_warps=NUM_WARPS)
    return out
