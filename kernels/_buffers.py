"""Small helpers the kernel wrappers share: output buffers (NaN-poisoned when a test asks, so a skipped write
fails), power-of-two block sizes, where a Triton kernel can run and the float32 input checks. No Triton import
here."""
from __future__ import annotations

import os

import torch


def triton_runs_on(device, have_triton: bool) -> bool:
    """Can a Triton kernel run on `device`: triton importable, and a CUDA device or TRITON_INTERPRET=1."""
    return have_triton and (torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")


def check_fp32_tensors(what: str, named: dict, ref: str) -> None:
    """ValueError in words unless every value of `named` is a float32 tensor on the device of named[ref]."""
    device = named[ref].device if isinstance(named[ref], torch.Tensor) else None
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{what}: {name} must be a tensor, got {type(t).__name__}")
        if t.dtype != torch.float32:
            raise ValueError(f"{what}: {name} must be float32, got {t.dtype}")
        if t.device != device:
            raise ValueError(f"{what}: {name} is on {t.device}, {ref} on {device}")


def fresh(shape, dtype, device, *, poison: bool) -> torch.Tensor:
    """An output buffer: uninitialised, or filled with NaN when `poison` (the caller's POISON_OUTPUTS flag)."""
    if poison:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def pow2_block(x: int, floor: int = 16) -> int:
    """The smallest power of two >= x, at least `floor` (tl.arange and tl.dot sizes)."""
    return max(floor, 1 << max(0, (x - 1).bit_length()))
