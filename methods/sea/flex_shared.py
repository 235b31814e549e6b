"""Shared-key selections with span 'blocks' on FlexAttention (torch.nn.attention.flex_attention).

With `shared_span=blocks` a block of R query rows attends every key of the R-aligned key blocks its selected cells
touch (methods/sea/shared.py: key_block_mask) and its own block (causal: up to each row): a block-sparse mask in
FlexAttention's own format, so its kernel computes SEA's function exactly, not a superset of it. The BlockMask is
built from the selection inside the forward without a host sync or a T x T mask function (on CUDA one Triton
program per query block writes its list, kernels/sea_block_lists.py; tensor ops elsewhere), its lists as long as a
per-shape bound (methods/sea/shared.py: key_block_width): the key blocks other than the own one are full blocks; the
own block is the one partial block of a causal row (its mask function q >= kv), none in a bidirectional row.

Compiled (CUDA): FlexAttention evaluates the mask function on partial blocks only, so the plain causal rule is
exact there. Eager (the reference FlexAttention that runs for CPU tensors): the mask function is evaluated on every
(query, key) pair and the block structure is ignored, so there it reads the key-block mask itself.
Forward only in the layer (calls with gradients take the per-row lists of the same keys).
"""
from __future__ import annotations

import functools

import torch

from methods.sea.shared import key_block_mask


def flex_usable(q: torch.Tensor) -> str | None:
    """Why FlexAttention cannot serve these queries (None: it can)."""
    try:
        from torch.nn.attention.flex_attention import BlockMask  # noqa: F401
    except ImportError:                                                  # pragma: no cover - torch >= 2.5 here
        return "torch without FlexAttention"
    D = q.shape[-1]
    if D < 16 or D & (D - 1):
        return f"head_dim={D} (FlexAttention needs a power of two >= 16)"
    if q.device.type == "cpu" and q.dtype == torch.float16:
        return "FlexAttention on CPU takes fp32 and bf16"
    return None


def _ordered(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool [..., N] -> (count int32 [...], the true columns first in ascending order, int32 [..., N]): positions by
    a running count and one scatter (no sort)."""
    N = mask.shape[-1]
    count = mask.sum(-1, dtype=torch.int32)
    pos = torch.where(mask, mask.to(torch.int32).cumsum(-1, dtype=torch.int32) - 1, N).long()
    cols = torch.arange(N, dtype=torch.int32, device=mask.device).expand(mask.shape)
    out = torch.zeros(*mask.shape[:-1], N + 1, dtype=torch.int32, device=mask.device)
    return count, out.scatter_(-1, pos, cols)[..., :N].contiguous()


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


@functools.lru_cache(maxsize=8)
def _partial_blocks(B: int, H: int, NB: int, width: int, causal: bool, device: str
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The partial blocks, the same for every selection of a shape: causal, each query block's own block (count 1,
    index j); bidirectional, none."""
    dev = torch.device(device)
    if not causal:
        return torch.zeros(B, H, NB, dtype=torch.int32, device=dev), None    # (indices: the full ones, unread)
    idx = torch.zeros(B, H, NB, width, dtype=torch.int32, device=dev)
    idx[..., 0] = torch.arange(NB, dtype=torch.int32, device=dev)
    return torch.ones(B, H, NB, dtype=torch.int32, device=dev), idx


def full_blocks(sel: torch.Tensor, *, T: int, R: int, causal: bool, width: int | None = None, backend: str = "auto",
                kb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(count int32 [B, H, NB], indices int32 [B, H, NB, width]): each query block's full key blocks (causal: those
    before it; bidirectional: with its own); width (default NB) at least the largest count (key_block_width).
    backend 'triton' (kernels/sea_block_lists.py, one program per query block: the own block first when
    bidirectional, entries after the count unwritten), 'torch' (key_block_mask and a running count: ascending, the
    rest zero; kb: the key_block_mask when the caller has it), 'auto' (triton on CUDA)."""
    if backend == "auto":
        backend = "triton" if sel.is_cuda else "torch"
    if backend == "triton":
        from kernels.sea_block_lists import block_lists
        from methods.sea.shared import cell_key_block_tables

        first, last, live, span = cell_key_block_tables(T, R, sel.shape[3], bool(causal), str(sel.device))
        return block_lists(sel, first, last, live, span=span, causal=causal, width=width)
    if kb is None:
        kb = key_block_mask(sel, T=T, R=R, causal=causal)                # [B, H, NB, NB], own block included
    own = torch.eye(kb.shape[2], dtype=torch.bool, device=sel.device)
    count, idx = _ordered(kb & ~own if causal else kb)
    return count, idx[..., :width].contiguous() if width is not None else idx


def shared_block_mask(sel: torch.Tensor, *, T: int, R: int, causal: bool, exact_mod: bool, width: int | None = None,
                      backend: str = "auto"):
    """The BlockMask of a selection sel bool [B, H, NB, K] with span 'blocks' (BLOCK_SIZE R, sequence T).
    exact_mod: the mask function reads the key-block mask (for the eager FlexAttention, which ignores the blocks);
    else it is the causal rule (or none), exact on the partial blocks the compiled kernel applies it to.
    width: the lists' length (None: NB; methods/sea/shared.py: key_block_width bounds it per shape; the transposed
    lists a backward needs are not made). backend: full_blocks' (how the lists are made)."""
    from torch.nn.attention.flex_attention import BlockMask

    B, H, NB, _ = sel.shape
    width = NB if width is None else int(width)
    kb = key_block_mask(sel, T=T, R=R, causal=causal) if exact_mod else None
    full_num, full_idx = full_blocks(sel, T=T, R=R, causal=causal, width=width, backend=backend, kb=kb)
    part_num, part_idx = _partial_blocks(B, H, NB, width, bool(causal), str(sel.device))
    part_idx = full_idx if part_idx is None else part_idx
    if exact_mod:
        def mod(b, h, q_idx, kv_idx):
            ok = kb[b, h, q_idx // R, kv_idx // R]
            return ok & ((kv_idx <= q_idx) | (kv_idx < (q_idx // R) * R)) if causal else ok
    else:
        mod = _causal if causal else None
    return BlockMask.from_kv_blocks(part_num, part_idx, full_num, full_idx, BLOCK_SIZE=R, mask_mod=mod,
                                    seq_lengths=(T, T), compute_q_blocks=False)


def flex_shared_attention(q, k, v, sel, *, R: int, scale: float, causal: bool, block_mask=None) -> torch.Tensor:
    """out [B, H, T, D] in q's dtype: softmax attention of every query row over its block's keys (span 'blocks').
    q [B, H, T, D], k, v [B, Hkv, T, D] (GQA: H a multiple of Hkv), sel bool [B, H, NB, K]. CUDA: the compiled
    FlexAttention (methods/flex.py's compiled function; tiles of min(R, 128)); elsewhere the eager one.
    block_mask: a BlockMask already built by shared_block_mask for this call."""
    why = flex_usable(q)
    if why is not None:
        raise ValueError(f"flex shared attention: {why}")
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise RuntimeError("flex_shared_attention is forward-only here; calls with gradients take the per-row lists "
                           "(methods/sea/shared.py: shared_row_csr with span='blocks')")
    from torch.nn.attention.flex_attention import flex_attention

    T = q.shape[2]
    compiled = q.is_cuda
    bm = block_mask if block_mask is not None else shared_block_mask(sel, T=T, R=R, causal=causal,
                                                                     exact_mod=not compiled)
    gqa = k.shape[1] != q.shape[1]
    if compiled:
        from methods.flex import _compiled_flex

        tile = min(R, 128)
        return _compiled_flex()(q, k, v, block_mask=bm, scale=scale, enable_gqa=gqa,
                                kernel_options={"BLOCK_M": tile, "BLOCK_N": tile})
    return flex_attention(q, k, v, block_mask=bm, scale=scale, enable_gqa=gqa)
