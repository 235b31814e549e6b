"""sea.decoder_backend: the causal decoder as the modules (torch), one fused kernel (triton,
kernels/sea_decoder.py) or three plain kernels (split, kernels/sea_decoder_v2.py) gives the same estimate inside the
layer (interpreted here), the impl names the kernel, and the kernels' refusals reach the harness."""
from __future__ import annotations

import pytest
import torch

from methods.base import Problem
from tests.helpers import gaussian_qkv, sea_case, untie_sea_decoder

B, H, Hkv, T, D = 2, 4, 2, 45, 16


def build(**opts):
    return sea_case(B, H, Hkv, T, D, **dict(dict(backend="torch", max_len=64), **opts))


def test_split_and_fused_kernels_match_the_modules():
    q, k, v = gaussian_qkv(B, H, Hkv, T, D, dtype=torch.float32)
    logits, impls = {}, {}
    state = None
    for backend in ("torch", "triton", "split"):
        M, cfg, prob = build(decoder_backend=backend)
        assert M.supports(prob, cfg) == []
        mod = M.build(cfg, prob, seed=4)
        if state is None:                            # LayerNorm affine away from its init: no trivial output
            state = untie_sea_decoder(mod).state_dict()
        mod.load_state_dict(state)
        with torch.no_grad():
            mod(q, k, v, causal=True)
        logits[backend], impls[backend] = mod.last_aux["logits"], mod.impl
    assert "decoder=" not in impls["torch"]
    assert "decoder=triton" in impls["triton"] and "decoder=split" in impls["split"]
    assert logits["torch"].abs().max() > 0.5
    for backend in ("triton", "split"):
        torch.testing.assert_close(logits[backend], logits["torch"], rtol=1e-4, atol=1e-4)


def test_split_refusals():
    M, cfg, _ = build(decoder_backend="split")
    bidir = Problem(B, H, Hkv, T, D, dtype="fp32", causal=False, device="cpu")
    back = Problem(B, H, Hkv, T, D, dtype="fp32", causal=True, device="cpu", backward=True)
    assert any("decoder_backend=split" in r and "bidirectional" in r for r in M.supports(bidir, cfg))
    assert any("decoder_backend=split" in r and "forward-only" in r for r in M.supports(back, cfg))
    M, cfg16, prob = build(decoder_backend="split", estimator_dtype="bf16")
    assert any("decoder_backend=split runs in fp32" in r for r in M.supports(prob, cfg16))
    with pytest.raises(ValueError, match="decoder backend"):
        from methods.sea.estimator import Estimator
        Estimator(d=D, H=H, K=16, causal=True, nbf=8.0, max_len=64, seed=0, decoder_backend="nope")
