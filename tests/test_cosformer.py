"""cosformer: the linear (decomposed) computation vs its quadratic form relu(q).relu(k) cos(pi/2 (i-j)/M)
in float64, outputs and gradients, causal and bidirectional, GQA, padding, causality."""
import math

import pytest
import torch

from methods.base import MethodConfigError, Problem, get

B, H, HKV, T, D = 2, 4, 2, 37, 16


def _build(causal=True, **opts):
    cls = get("cosformer")
    cfg = cls.resolve_config({"chunk": 16, **opts})
    return cls.build(cfg, Problem(B, H, HKV, T, D, causal=causal), seed=0)


def _qkv(seed=0, t=T, dtype=torch.float32, hkv=HKV):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, t, D, generator=g)
    k = torch.randn(B, hkv, t, D, generator=g)
    v = torch.randn(B, hkv, t, D, generator=g)
    q[0, 1, 3] = -q[0, 1, 3].abs() - 0.1       # a query with relu(q) = 0: normaliser hits the eps clamp
    return [x.to(dtype) for x in (q, k, v)]


def _mask(t=T):
    m = torch.ones(B, t, dtype=torch.bool)
    m[1, :5] = False             # left padding (causal: rows 0..4 of batch 1 see no real key)
    m[0, -4:] = False            # right padding
    return m


def _ref(q, k, v, *, causal, mask=None, max_len=0, eps=1e-6):
    """Quadratic form in float64: S[i, j] = relu(q_i).relu(k_j) cos(pi/2 (i - j) / M), masked, normalised."""
    q, k, v = (x.double() for x in (q, k, v))
    Hq, Tn = q.shape[1], q.shape[2]
    k = k.repeat_interleave(Hq // k.shape[1], dim=1)                   # [B, H, T, D]
    v = v.repeat_interleave(Hq // v.shape[1], dim=1)                   # [B, H, T, D]
    M = max_len or Tn
    i = torch.arange(1, Tn + 1, dtype=torch.float64)
    w = torch.cos(math.pi / 2 * (i[:, None] - i[None, :]) / M)         # [T, T]
    s = torch.relu(q) @ torch.relu(k).transpose(-1, -2) * w            # [B, H, T, T]
    vis = torch.ones(B, 1, Tn, Tn, dtype=torch.bool)
    if mask is not None:
        vis = vis & mask[:, None, None, :]
    if causal:
        vis = vis & torch.ones(Tn, Tn, dtype=torch.bool).tril()
    s = s * vis
    return (s @ v) / torch.clamp_min(s.sum(-1, keepdim=True), eps)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_matches_quadratic_form(causal, padded):
    mod = _build(causal)
    q, k, v = (x.requires_grad_() for x in _qkv(1))
    mask = _mask() if padded else None
    out = mod(q, k, v, causal=causal, key_padding_mask=mask)
    assert out.shape == (B, H, T, D) and out.dtype == torch.float32
    assert ("triton" in mod.impl) == causal
    qr, kr, vr = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = _ref(qr, kr, vr, causal=causal, mask=mask)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    assert (out[0, 1, 3] == 0).all()
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (out.double() * g).sum().backward()
    (ref * g).sum().backward()
    for name, a, r in (("dq", q.grad, qr.grad), ("dk", k.grad, kr.grad), ("dv", v.grad, vr.grad)):
        torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("causal", [True, False])
def test_max_len_option_and_torch_backend(causal):
    mod = _build(causal, max_len=50, backend="torch")
    q, k, v = _qkv(3, hkv=H)
    out = mod(q, k, v, causal=causal)
    torch.testing.assert_close(out.double(), _ref(q, k, v, causal=causal, max_len=50), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out.double(), _ref(q, k, v, causal=causal))     # M really changed
    cls = get("cosformer")
    cfg = cls.resolve_config({"max_len": 30})
    assert any("max_len" in r for r in cls.supports(Problem(B, H, HKV, T, D), cfg))
    with pytest.raises(ValueError):
        cls.build(cfg, Problem(B, H, HKV, 30, D))(q, k, v, causal=causal)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype):
    mod = _build(True)
    q, k, v = (x.requires_grad_() for x in _qkv(4, dtype=dtype))
    out = mod(q, k, v, causal=True)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), _ref(q.detach(), k.detach(), v.detach(), causal=True),
                               rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert q.grad.dtype == dtype and torch.isfinite(k.grad.float()).all() and v.grad.abs().sum() > 0


def test_causality_canary():
    mod = _build(True)
    q, k, v = _qkv(5)
    t0 = 20
    out1 = mod(q, k, v, causal=True)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, :, t0 + 1:] *= -2.0
    k2[:, :, t0 + 1:] += 3.0
    v2[:, :, t0 + 1:] += 10.0
    out2 = mod(q2, k2, v2, causal=True)
    assert torch.equal(out1[:, :, :t0 + 1], out2[:, :, :t0 + 1])
    assert not torch.allclose(out1[:, :, t0 + 1:], out2[:, :, t0 + 1:])


@pytest.mark.parametrize("causal", [True, False])
def test_padded_keys_are_ignored(causal):
    mod = _build(causal)
    q, k, v = _qkv(6)
    mask = _mask()
    out1 = mod(q, k, v, causal=causal, key_padding_mask=mask)
    pad = ~mask[:, None, :].expand(B, HKV, T)
    k2, v2 = k.clone(), v.clone()
    k2[pad] = 9.0
    v2[pad] = -7.0
    out2 = mod(q, k2, v2, causal=causal, key_padding_mask=mask)
    torch.testing.assert_close(out1, out2, rtol=1e-6, atol=1e-6)
    if causal:
        assert (out1[1, :, :5] == 0).all()


def test_attention_probs_match_output():
    mod = _build(True)
    q, k, v = _qkv(7, hkv=H)
    mask = _mask()
    rows = torch.tensor([0, 2, 19, 36])
    p = mod.attention_probs(q, k, v, causal=True, rows=rows, key_padding_mask=mask)
    assert p.shape == (B, H, 4, T)
    out = mod(q, k, v, causal=True, key_padding_mask=mask)
    torch.testing.assert_close(p @ v, out[:, :, rows], rtol=1e-4, atol=1e-5)
    assert (p[:, :, 1, 3:] == 0).all() and (p[0, :, 3, -4:] == 0).all()
    assert (p >= 0).all()                           # cos weights are non-negative for angles in [0, pi/2]


def test_options():
    cls = get("cosformer")
    for bad in ({"max_len": -1}, {"eps": 0.0}, {"chunk": 8}, {"backend": "cuda"}):
        with pytest.raises(MethodConfigError):
            cls.resolve_config(bad)
    assert cls.exact is False and cls.complexity
    assert cls.supports(Problem(1, 8, 2, 1000, 64, dtype="fp16", padding=True), cls.resolve_config()) == []


def test_plain_cpu_uses_torch_fallback_and_records_it(monkeypatch):
    mod = _build(True)
    q, k, v = _qkv(11)
    out_triton = mod(q, k, v, causal=True)
    assert "(triton)" in mod.impl
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    out_torch = mod(q, k, v, causal=True)
    assert "(torch)" in mod.impl
    torch.testing.assert_close(out_torch, out_triton, rtol=1e-5, atol=1e-6)
