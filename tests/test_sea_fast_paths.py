"""SEA's fast paths: chunked cumulative mean (mix stage), reduced-precision decoder, no host sync in the
no-padding forward (CUDA-graph capturable)."""
from __future__ import annotations

import pytest
import torch

from methods.sea.layer import causal_mean, chunked_cumsum

B, H, T, D = 2, 4, 37, 16


def old_causal_mean(v, valid):
    """The previous formula (a plain cumsum along T), evaluated in float64."""
    v = v.double()
    if valid is not None:
        w = valid[:, None, :, None].double()                             # [B, 1, T, 1]
        return (v * w).cumsum(2) / w.cumsum(2).clamp(min=1)
    n = torch.arange(1, v.shape[2] + 1, dtype=torch.float64)
    return v.cumsum(2) / n[:, None]


@pytest.mark.parametrize("T_, chunk", [(1, 4), (37, 4), (37, 64), (64, 8), (300, 4), (1000, 16)])
def test_chunked_cumsum_equals_cumsum_float64(T_, chunk):
    x = torch.randn(B, H, T_, D, dtype=torch.float64, generator=torch.Generator().manual_seed(T_))
    got = chunked_cumsum(x, chunk)
    assert got.shape == (B, H, T_, D)
    torch.testing.assert_close(got, x.cumsum(2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padded", [False, True])
def test_causal_mean_fp32_matches_old_formula_in_float64(padded):
    g = torch.Generator().manual_seed(3)
    Tl = 700                                                             # several chunks of 64, 2 levels
    v = torch.randn(B, H, Tl, D, generator=g) + 0.5                      # non-zero mean: the sums grow
    valid = (torch.rand(B, Tl, generator=g) > 0.3) if padded else None
    want = old_causal_mean(v, valid)
    got = causal_mean(v.float(), valid)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)   # fp32 rounding only
    got64 = causal_mean(v.double(), valid)                              # same algorithm in float64: exact
    torch.testing.assert_close(got64, want, rtol=1e-12, atol=1e-12)
