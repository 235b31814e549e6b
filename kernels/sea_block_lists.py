"""The key-block lists of a shared-key selection with span 'blocks', in FlexAttention's BlockMask format, by one
Triton program per (b, h, query block).

What: sel bool [B, H, NB, K] (a block's selected cells) and per block cell its first and last key block and whether
it holds a key (int32 / int32 / bool [NB, K]; methods/sea/shared.py: cell_key_blocks) -> (count int32 [B, H, NB],
indices int32 [B, H, NB, width]): the key blocks of the selected cells, each once; bidirectional (causal=False) with the
block's own block j first; causal without it (all before j: the caller adds j as the one partial block). Entries
after `count` in a row are not written (FlexAttention reads a row's first `count`).

Why: the same lists by tensor ops (methods/sea/flex_shared.py: a difference array over the NB key blocks, a running
sum, a scatter) pass over B H NB^2 integers several times: on an H200 at T = 64k (NB = 1024, H = 16) SEA's causal
forward took 3.79 ms with them and 3.04 ms with this kernel (0.023 ms)
(results/nvidia-h200/sea-flex-blocks/call3/, call4/). A program here reads its K cells and writes its own list.

How: a block's cells are ordered by key position, so their key-block ranges [first, last] are ordered too and two
consecutive selected cells share at most one key block (the previous one's last = this one's first). A cell's new
blocks start after the largest `last` of the selected cells before it (an exclusive running maximum: the shifted
cells' values scanned with max); its count is what is left of [first, last] (without j when bidirectional), its
place the running sum of the counts before it. The writes are a loop over the widest cell's blocks.
"""
from __future__ import annotations

import torch

from kernels._buffers import pow2_block

try:
    import triton
    import triton.language as tl
except ImportError:                                                      # pragma: no cover - triton is a dependency
    triton = None


if triton is not None:

    @triton.jit
    def _max(a, b):
        return tl.maximum(a, b)

    @triton.jit
    def _lists_kernel(SEL, FIRST, LAST, LIVE, COUNT, IDX, NB, SPAN, W,
                      K: tl.constexpr, KP: tl.constexpr, CAUSAL: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)                              # (b, h, j) flat
        j = (pid % NB).to(tl.int32)
        c = tl.arange(0, KP)
        cm = c < K
        tab = j.to(tl.int64) * K
        act = (tl.load(SEL + pid * K + c, mask=cm, other=0) != 0) & (tl.load(LIVE + tab + c, mask=cm, other=0) != 0)
        first = tl.load(FIRST + tab + c, mask=cm, other=0)
        last = tl.load(LAST + tab + c, mask=cm, other=0)
        # the largest `last` of the selected cells before each cell: the same values one cell to the right, scanned
        pm = cm & (c >= 1)
        pact = (tl.load(SEL + pid * K + c - 1, mask=pm, other=0) != 0) & \
            (tl.load(LIVE + tab + c - 1, mask=pm, other=0) != 0)
        plast = tl.where(pact, tl.load(LAST + tab + c - 1, mask=pm, other=-1), -1)
        before = tl.associative_scan(plast, 0, _max)                     # [KP] int32, -1: none
        start = tl.maximum(first, before + 1)
        n = tl.where(act, tl.maximum(last - start + 1, 0), 0)
        if CAUSAL:
            base = 0
            skip = n * 0                                                 # causal cells end before the block
        else:
            base = 1                                                     # the own block j goes first
            skip = tl.where((n > 0) & (start <= j) & (j <= last), 1, 0)
            n = n - skip
        off = base + tl.cumsum(n, 0) - n                                 # each cell's first slot
        row = IDX + pid * W
        if not CAUSAL:
            tl.store(row, j)
        for t in range(0, SPAN):
            blk = start + t
            blk = blk + tl.where((skip > 0) & (blk >= j), 1, 0)          # past the own block
            tl.store(row + off + t, blk, mask=(t < n) & (off + t < W))
        tl.store(COUNT + pid, base + tl.sum(n, 0))


def block_lists(sel: torch.Tensor, first: torch.Tensor, last: torch.Tensor, live: torch.Tensor, *, span: int,
                causal: bool, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(count int32 [B, H, NB], indices int32 [B, H, NB, width]) of sel bool [B, H, NB, K] with the cells' key-block
    ranges first, last int32 [NB, K] and live bool [NB, K] (see the module docstring); span: at least the widest
    live cell's number of key blocks (last - first + 1; the tables and span are per shape: no host sync here);
    width (default NB): the lists' length, at least the largest count (methods/sea/shared.py: key_block_width
    bounds it per shape); entries past it are not written."""
    if triton is None:
        raise RuntimeError("block_lists needs Triton")
    if sel.dim() != 4 or sel.dtype != torch.bool:
        raise ValueError(f"block_lists: sel must be bool [B, H, NB, K]; got {sel.dtype} {tuple(sel.shape)}")
    B, H, NB, K = sel.shape
    for name, x in (("first", first), ("last", last), ("live", live)):
        if tuple(x.shape) != (NB, K) or x.device != sel.device:
            raise ValueError(f"block_lists: {name} must be [{NB}, {K}] on {sel.device}; got {tuple(x.shape)} on "
                             f"{x.device}")
    width = NB if width is None else int(width)
    if width < 1:
        raise ValueError(f"block_lists: width={width} must be >= 1")
    count = torch.empty(B, H, NB, dtype=torch.int32, device=sel.device)
    idx = torch.empty(B, H, NB, width, dtype=torch.int32, device=sel.device)
    if B * H * NB:
        _lists_kernel[(B * H * NB,)](sel.contiguous().view(torch.int8), first.to(torch.int32).contiguous(),
                                     last.to(torch.int32).contiguous(), live.contiguous().view(torch.int8), count,
                                     idx, NB, int(span), width, K=K, KP=pow2_block(K), CAUSAL=bool(causal), num_warps=1)
    return count, idx
