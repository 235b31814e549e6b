"""Small helpers the kernel wrappers share: output buffers (NaN-poisoned when a test asks, so a skipped write
fails) and power-of-two block sizes. No Triton import here."""
from __future__ import annotations

import torch


def fresh(shape, dtype, device, *, poison: bool) -> torch.Tensor:
    """An output buffer: uninitialised, or filled with NaN when `poison` (the caller's POISON_OUTPUTS flag)."""
    if poison:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def pow2_block(x: int, floor: int = 16) -> int:
    """The smallest power of two >= x, at least `floor` (tl.arange and tl.dot sizes)."""
    return max(floor, 1 << max(0, (x - 1).bit_length()))
