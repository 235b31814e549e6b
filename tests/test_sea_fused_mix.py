"""sea.mix_backend=triton: the sparse attention and the mix in one kernel (kernels/sea_sparse_mix.py), wired into the
layer (whole forward, query blocks, stage profile). The layer's output must equal the two-step path's (row kernel,
then the mix in tensor ops) with the same selection; calls the kernel cannot serve take the two steps and say so.
Triton interpreter on CPU (tests/conftest.py), small shapes."""
from __future__ import annotations

import pytest
import torch

from methods.base import Problem, get

B, H, Hkv, T, D = 2, 4, 2, 37, 16


def build(causal, **opts):
    M = get("sea")
    base = dict(k=3, K=16, backend="triton", max_len=64)
    cfg = M.resolve_config({key: str(val) for key, val in dict(base, **opts).items()})
    return M.build(cfg, Problem(B, H, Hkv, T, D, dtype="fp32", causal=causal, device="cpu"), seed=5)


def qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, D, generator=g), torch.randn(B, Hkv, T, D, generator=g),
            torch.randn(B, Hkv, T, D, generator=g))


@pytest.mark.parametrize("causal, opts", [(True, {}), (False, {}), (True, dict(query_chunk=10)),
                                          (False, dict(backend="triton_rows")),
                                          (True, dict(backend="triton_rows", query_chunk=10)),
                                          (False, dict(backend="triton_rows", query_chunk=16))])
def test_fused_mix_equals_two_steps(causal, opts):
    """Row kernel (kernels/sea_sparse_mix.py) or rows kernel (its mix epilogue, kernels/sea_sparse_rows.py): whole
    calls and query blocks of both directions."""
    two = build(causal, mix_backend="torch", **opts)
    fused = build(causal, mix_backend="triton", **opts)
    fused.load_state_dict(two.state_dict())
    q, k, v = qkv(1)
    with torch.no_grad():
        want = two(q, k, v, causal=causal)
        got = fused(q, k, v, causal=causal)
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert "mix=fused" in fused.impl and "mix=fused" not in two.impl
    assert ("sparse=triton_rows" in fused.impl) == (opts.get("backend") == "triton_rows")


def test_auto_fuses_the_rows_mix_only_for_bidirectional_rows_calls(monkeypatch):
    """mix_backend=auto takes the rows kernel's mix epilogue for bidirectional calls on the rows kernel when
    layer.AUTO_ROWS_MIX (same output as the two steps), never for causal calls (the causal mix kernel's job)."""
    import methods.sea.layer as layer_mod

    q, k, v = qkv(4)
    for flag in (False, True):
        monkeypatch.setattr(layer_mod, "AUTO_ROWS_MIX", flag)
        two = build(False, backend="triton_rows", mix_backend="torch")
        auto = build(False, backend="triton_rows")
        auto.load_state_dict(two.state_dict())
        with torch.no_grad():
            want, got = two(q, k, v, causal=False), auto(q, k, v, causal=False)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert ("mix=fused" in auto.impl) == flag
        causal = build(True, backend="triton_rows")
        assert not causal.mix_fused(q, k, v, layout="csr", kernel="triton_rows", valid=None, causal=True)


def test_fused_mix_stage_profile_times_the_kernel():
    mod = build(True, mix_backend="triton")
    q, k, v = qkv(2)
    calls = []

    def timer(fn):
        calls.append(fn())
        return 1.0

    with torch.no_grad():
        ms = mod.stage_profile(q, k, v, causal=True, timer=timer)
    assert set(ms) == {"estimator", "topk", "interpolate", "sparse_attention", "mix"}
    with torch.no_grad():
        out = mod(q, k, v, causal=True)
    torch.testing.assert_close(calls[3], out, rtol=0, atol=0)        # "sparse_attention" ran the fused kernel
    assert "mix=fused" in mod.impl


def test_calls_the_kernel_cannot_serve_take_two_steps():
    q, k, v = qkv(3)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 30:] = False
    two, fused = build(False), build(False, mix_backend="triton")
    fused.load_state_dict(two.state_dict())
    with torch.no_grad():
        want = two(q, k, v, causal=False, key_padding_mask=valid)
        got = fused(q, k, v, causal=False, key_padding_mask=valid)     # padded rows are zeroed by the mix stage
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert "mix=fused" not in fused.impl
    qg = q.clone().requires_grad_()
    fused(qg, k, v, causal=False).sum().backward()                   # gradients: the two steps
    assert qg.grad is not None and "mix=fused" not in fused.impl
    M = get("sea")
    reasons = M.supports(Problem(B, H, Hkv, T, D, dtype="fp32", causal=True, device="cpu", backward=True),
                         M.resolve_config(dict(mix_backend="triton")))
    assert any("mix_backend=triton" in r and "forward-only" in r for r in reasons)
