"""Every registered method x shape: contract checks generated from the registry.

Inputs are views into NaN-filled storage, so a method that reads past its tensor's extent produces NaN.
Exact methods must match the float64 reference (outputs and gradients); approximate methods must be
finite, shaped and typed right, and causal (a change after position t alters nothing at or before t).
How far approximate methods are from softmax attention is measured by the harness, not tested here.
"""
import pytest
import torch

import methods
from harness import reference
from methods.base import Problem

# Test-speed options (FlexAttention's compile costs ~20 s per shape on CPU; one compiled case is tested in
# test_flex_compiled below).
FAST = {"flex": {"compile": "false"}}
B, H, HKV, T, D = 2, 4, 2, 37, 16
ALL = sorted(methods.all_methods())


def _poisoned(shape, gen, dtype):
    """A tensor of `shape` that is a strided view into a larger NaN-filled buffer."""
    big = torch.full((*shape[:-1], shape[-1] + 5), float("nan"), dtype=torch.float64)
    view = big[..., 2:2 + shape[-1]]
    view.copy_(torch.randn(shape, generator=gen, dtype=torch.float64))
    return view.to(dtype) if dtype != torch.float64 else view


def _build(name, causal, backward, dtype="fp32"):
    cls = methods.get(name)
    cfg = cls.resolve_config(FAST.get(name, {}))
    problem = Problem(batch=B, heads=H, kv_heads=HKV, seq_len=T, head_dim=D, dtype=dtype, causal=causal,
                      device="cpu", backward=backward)
    reasons = cls.supports(problem, cfg)
    if reasons:
        pytest.skip(f"{name} refuses: {'; '.join(reasons)}")
    return cls, cls.build(cfg, problem, layer=0, seed=3)


def _inputs(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = _poisoned((B, H, T, D), g, dtype)
    k = _poisoned((B, HKV, T, D), g, dtype)
    v = _poisoned((B, HKV, T, D), g, dtype)
    return q, k, v


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("name", ALL)
def test_forward_contract(name, causal):
    cls, mod = _build(name, causal, backward=False)
    q, k, v = _inputs()
    with torch.no_grad():
        out = mod(q, k, v, causal=causal)
    assert out.shape == (B, H, T, D) and out.dtype == q.dtype
    assert torch.isfinite(out).all(), f"{name}: non-finite output"
    assert isinstance(getattr(mod, "impl", ""), str) and mod.impl, f"{name}: impl not recorded"
    if cls.exact:
        ref = reference.reference_attention(q.double(), k.double(), v.double(), causal=causal)
        assert reference.rel_l2(out.double(), ref) < 1e-5


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("name", ALL)
def test_backward_contract(name, causal):
    cls, mod = _build(name, causal, backward=True)
    q, k, v = (t.detach().clone().requires_grad_(True) for t in _inputs(1))
    go = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(9))
    out = mod(q, k, v, causal=causal)
    grads = torch.autograd.grad(out, (q, k, v), go, allow_unused=True)
    for name_g, g in zip("qkv", grads):
        if name_g == "v":
            assert g is not None, f"{name}: no gradient for v"
        if g is not None:
            assert torch.isfinite(g).all(), f"{name}: non-finite d{name_g}"
    if cls.exact:
        qd, kd, vd = (t.detach().double().requires_grad_(True) for t in (q, k, v))
        ref = reference.reference_attention(qd, kd, vd, causal=causal)
        ref_grads = torch.autograd.grad(ref, (qd, kd, vd), go.double())
        for g, rg in zip(grads, ref_grads):
            assert reference.rel_l2(g.double(), rg) < 1e-5


@pytest.mark.parametrize("name", ALL)
def test_causality_canary(name):
    """Changing tokens after position t changes no output at or before t."""
    _, mod = _build(name, True, backward=False)
    q, k, v = _inputs(2)
    t = 20
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    g = torch.Generator().manual_seed(5)
    for x in (q2, k2, v2):
        x[:, :, t + 1:] = torch.randn(x[:, :, t + 1:].shape, generator=g) * 3
    with torch.no_grad():
        a = mod(q, k, v, causal=True)
        b = mod(q2, k2, v2, causal=True)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert torch.allclose(a[:, :, :t + 1], b[:, :, :t + 1], atol=1e-5, rtol=1e-5), \
        f"{name}: future tokens changed the past by {(a[:, :, :t + 1] - b[:, :, :t + 1]).abs().max():.3g}"
    assert not torch.allclose(a[:, :, t + 1:], b[:, :, t + 1:]), f"{name}: output ignores its inputs"


@pytest.mark.parametrize("name", [n for n in ALL if methods.get(n).exact])
def test_exact_methods_respect_padding(name):
    cls = methods.get(name)
    if not cls.padding_ok:
        pytest.skip(f"{name} declares no padding support")
    _, mod = _build(name, False, backward=False)
    q, k, v = _inputs(3)
    kpm = torch.ones(B, T, dtype=torch.bool)
    kpm[0, 30:] = False
    kpm[1, 11:] = False
    with torch.no_grad():
        out = mod(q, k, v, causal=False, key_padding_mask=kpm)
    ref = methods.get("exact").build({"precision": "fp64"}, None)(q, k, v, causal=False, key_padding_mask=kpm)
    assert reference.rel_l2(out.double(), ref.double()) < 1e-5


def test_flex_compiled_matches_reference():
    cls = methods.get("flex")
    mod = cls.build(cls.resolve_config({}), Problem(batch=1, heads=2, kv_heads=1, seq_len=200, head_dim=16))
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 200, 16, generator=g)
    k = torch.randn(1, 1, 200, 16, generator=g)
    v = torch.randn(1, 1, 200, 16, generator=g)
    out = mod(q, k, v, causal=True)     # 200 is not a multiple of the 128-token block
    ref = reference.reference_attention(q.double(), k.double(), v.double(), causal=True)
    assert reference.rel_l2(out.double(), ref) < 1e-5
    assert "compiled" in mod.impl
