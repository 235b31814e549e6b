"""performer (FAVOR+): float64 restatement with the same projection, causality, convergence to softmax,
and an independent cross-check against performer-pytorch when it is importable."""
import math

import pytest
import torch

from methods.base import MethodConfigError, Problem, get
from methods.exact import softmax_attention_probs
from methods.performer import RELU_EPS, SOFTMAX_EPS, default_nb_features

B, H, HKV, T, D = 2, 4, 2, 37, 16


def _build(causal=True, seed=0, layer=0, **opts):
    cls = get("performer")
    cfg = cls.resolve_config({"chunk": 16, **opts})
    return cls.build(cfg, Problem(B, H, HKV, T, D, causal=causal), layer=layer, seed=seed)


def _qkv(seed=0, t=T, dtype=torch.float32, hkv=HKV, h=H, d=D, std=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, h, t, d, generator=g) * std
    k = torch.randn(B, hkv, t, d, generator=g) * std
    v = torch.randn(B, hkv, t, d, generator=g)
    return [x.to(dtype) for x in (q, k, v)]


def _mask(t=T):
    m = torch.ones(B, t, dtype=torch.bool)
    m[1, :5] = False             # left padding in batch 1 (causal: its first 5 rows see no real key)
    m[0, -4:] = False            # right padding in batch 0
    return m


def _ref(q, k, v, w, *, kernel, causal, mask=None, scale=None):
    """FAVOR+ restated in float64 as a quadratic form: features, masked T x T weights, normalise."""
    q, k, v, w = (x.double() for x in (q, k, v, w))
    Hq, Tn, Dn = q.shape[1], q.shape[2], q.shape[3]
    k = k.repeat_interleave(Hq // k.shape[1], dim=1)                   # [B, H, T, D]
    v = v.repeat_interleave(Hq // v.shape[1], dim=1)
    c = math.sqrt(1.0 / math.sqrt(Dn) if scale is None else scale)
    real = torch.ones(B, Tn, dtype=torch.bool) if mask is None else mask
    qd, kd = (q * c) @ w.T, (k * c) @ w.T                               # [B, H, T, m]
    if kernel == "relu":
        fq, fk = torch.relu(qd) + RELU_EPS, torch.relu(kd) + RELU_EPS
    else:
        hq = 0.5 * ((q * c) ** 2).sum(-1, keepdim=True)
        hk = 0.5 * ((k * c) ** 2).sum(-1, keepdim=True)
        sq = qd.amax(-1, keepdim=True).detach()
        kmax = kd.amax(-1).detach().masked_fill(~real[:, None, :], -math.inf)   # [B, H, T]
        if causal:
            first = real.double().argmax(1)                                        # first real key
            sk = torch.stack([kmax[b, :, first[b]] for b in range(B)])[:, :, None, None]
            sk = torch.maximum(sk, 0.5 * (w ** 2).sum(-1).max() - 60.0)
        else:
            sk = kmax.amax(-1)[:, :, None, None]
        fq = (torch.exp(qd - hq - sq) + SOFTMAX_EPS) / math.sqrt(w.shape[0])
        fk = (torch.exp(kd - hk - sk) + SOFTMAX_EPS) / math.sqrt(w.shape[0])
    a = fq @ fk.transpose(-1, -2)                                      # [B, H, T, T]
    vis = real[:, None, None, :].expand(B, 1, Tn, Tn)
    if causal:
        vis = vis & torch.ones(Tn, Tn, dtype=torch.bool).tril()
    a = a * vis
    den = a.sum(-1, keepdim=True)
    return (a / torch.where(den > 0, den, torch.ones_like(den))) @ v


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kernel", ["softmax", "relu"])
@pytest.mark.parametrize("padded", [False, True])
def test_matches_float64_restatement(causal, kernel, padded):
    mod = _build(causal, kernel=kernel, nb_features=24)
    q, k, v = (x.requires_grad_() for x in _qkv(1))
    mask = _mask() if padded else None
    out = mod(q, k, v, causal=causal, key_padding_mask=mask)
    assert out.shape == (B, H, T, D) and out.dtype == torch.float32
    assert ("triton" in mod.impl) == causal and "seed=0" in mod.impl
    qr, kr, vr = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = _ref(qr, kr, vr, mod.projection, kernel=kernel, causal=causal, mask=mask)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (out.double() * g).sum().backward()
    (ref * g).sum().backward()
    for name, a, r in (("dq", q.grad, qr.grad), ("dk", k.grad, kr.grad), ("dv", v.grad, vr.grad)):
        torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=1e-5, msg=name)


def test_custom_scale_and_torch_backend():
    mod = _build(True, nb_features=20, backend="torch")
    q, k, v = _qkv(3)
    out = mod(q, k, v, causal=True, scale=0.4)
    assert "torch" in mod.impl
    torch.testing.assert_close(out.double(), _ref(q, k, v, mod.projection, kernel="softmax", causal=True, scale=0.4),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype):
    mod = _build(True, nb_features=24)
    q, k, v = (x.requires_grad_() for x in _qkv(4, dtype=dtype))
    out = mod(q, k, v, causal=True)
    assert out.dtype == dtype
    ref = _ref(q.detach(), k.detach(), v.detach(), mod.projection, kernel="softmax", causal=True)
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert q.grad.dtype == dtype and torch.isfinite(q.grad.float()).all() and k.grad.abs().sum() > 0


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_causality_canary(kernel):
    mod = _build(True, kernel=kernel, nb_features=24)
    q, k, v = _qkv(5)
    t0 = 20
    out1 = mod(q, k, v, causal=True)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, :, t0 + 1:] *= 3.0
    k2[:, :, t0 + 1:] = 4.0 * torch.randn_like(k2[:, :, t0 + 1:])     # would move a global key max
    v2[:, :, t0 + 1:] += 10.0
    out2 = mod(q2, k2, v2, causal=True)
    assert torch.equal(out1[:, :, :t0 + 1], out2[:, :, :t0 + 1])
    assert not torch.allclose(out1[:, :, t0 + 1:], out2[:, :, t0 + 1:])


def test_padded_keys_are_ignored():
    mod = _build(False, nb_features=24)
    q, k, v = _qkv(6)
    mask = _mask()
    out1 = mod(q, k, v, causal=False, key_padding_mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[~mask[:, None, :].expand_as(k2[..., 0])] = 50.0
    v2[~mask[:, None, :].expand_as(v2[..., 0])] = -7.0
    out2 = mod(q, k2, v2, causal=False, key_padding_mask=mask)
    torch.testing.assert_close(out1, out2, rtol=1e-6, atol=1e-6)
    out_c = mod(q, k, v, causal=True, key_padding_mask=mask)
    assert (out_c[1, :, :5] == 0).all() and torch.isfinite(out_c).all()   # rows that see no real key


def test_error_vs_softmax_shrinks_with_nb_features():
    q, k, v = _qkv(7, t=24, hkv=H, std=0.5)
    exact = softmax_attention_probs(q.double(), k.double(), causal=False) @ v.double()
    errs = {}
    for m in (16, 256, 2048):
        e = []
        for seed in range(8):
            mod = _build(False, seed=seed, nb_features=m)
            e.append((mod(q, k, v, causal=False).double() - exact).pow(2).mean().sqrt().item())
        errs[m] = sum(e) / len(e)
    # measured (8 seeds): ~0.080, ~0.036, ~0.014 - the Monte-Carlo error falls roughly like 1/sqrt(m)
    assert errs[256] < 0.6 * errs[16], errs
    assert errs[2048] < 0.6 * errs[256], errs


def test_attention_probs_match_output():
    mod = _build(True, nb_features=24)
    q, k, v = _qkv(8, hkv=H)
    mask = _mask()
    rows = torch.tensor([0, 6, 17, 36])
    p = mod.attention_probs(q, k, v, causal=True, rows=rows, key_padding_mask=mask)
    assert p.shape == (B, H, 4, T)
    out = mod(q, k, v, causal=True, key_padding_mask=mask)
    torch.testing.assert_close(p @ v, out[:, :, rows], rtol=1e-4, atol=1e-5)
    assert (p[:, :, 1, 7:] == 0).all()                              # causal: row 6 sees keys <= 6
    assert (p[0, :, 3, -4:] == 0).all()                             # padded keys
    sums = p.sum(-1)
    assert torch.allclose(sums[0], torch.ones_like(sums[0]))
    assert (sums[1, :, 0] == 0).all()                               # batch 1 row 0 sees only padding


def test_projection_is_orthogonal_with_chi_norms_and_redraw_is_deterministic():
    a, b, c = _build(True, seed=3, nb_features=40), _build(True, seed=3, nb_features=40), _build(True, seed=4, nb_features=40)
    w = a.projection.double()
    assert w.shape == (40, D)
    u = w / w.norm(dim=1, keepdim=True)
    blk = u[:D] @ u[:D].T                                            # one block: orthonormal directions
    torch.testing.assert_close(blk, torch.eye(D, dtype=torch.float64), rtol=0, atol=1e-5)
    assert w.norm(dim=1).std() > 0.1                                 # norms resampled, not all sqrt(D)
    assert torch.equal(a.projection, b.projection) and not torch.equal(a.projection, c.projection)
    w0 = a.projection.clone()
    a.redraw_features(), b.redraw_features()
    assert not torch.equal(a.projection, w0) and torch.equal(a.projection, b.projection)
    assert "redraws=1" in a.impl or "redraws=1" in a._impl("")
    assert "projection" in a.state_dict()
    assert not torch.equal(_build(True, seed=3, layer=1, nb_features=40).projection, w0)   # layers differ
    iid = _build(True, seed=3, nb_features=40, ortho=False).projection
    assert (iid[:D] @ iid[:D].T - torch.diag(torch.diagonal(iid[:D] @ iid[:D].T))).abs().max() > 1.0


def test_options():
    cls = get("performer")
    assert default_nb_features(64) == int(64 * math.log(64))
    assert _build(True).projection.shape[0] == int(D * math.log(D))
    assert _build(True, nbf=2.0).projection.shape[0] == int(D * math.log(D) / 2)
    assert _build(True, nb_features=33).projection.shape[0] == 33
    assert _build(True, eps=1e-6).eps == 1e-6 and _build(True).eps is None
    for bad in ({"nb_features": 10, "nbf": 2.0}, {"nb_features": -1}, {"chunk": 24}, {"kernel": "cos"}):
        with pytest.raises(MethodConfigError):
            cls.resolve_config(bad)
    assert cls.exact is False and cls.complexity
    assert cls.supports(Problem(1, 4, 2, 100, 64, dtype="bf16"), cls.resolve_config()) == []


# --- independent oracle: performer-pytorch with the same projection matrix ---------------------------

def _performer_pytorch():
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import performer_pytorch.performer_pytorch as pp
        return pp
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"performer_pytorch not importable ({type(exc).__name__}: {exc})")


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_cross_check_performer_pytorch_bidirectional(kernel):
    pp = _performer_pytorch()
    mod = _build(False, kernel=kernel, nb_features=24)
    q, k, v = _qkv(9, hkv=H)
    fa = pp.FastAttention(D, nb_features=24, causal=False, generalized_attention=(kernel == "relu"))
    fa.projection_matrix.copy_(mod.projection)
    torch.testing.assert_close(mod(q, k, v, causal=False), fa(q, k, v), rtol=1e-4, atol=1e-5)


def test_cross_check_performer_pytorch_causal_relu():
    # causal softmax differs on purpose (key stabilizer, see methods/performer.py); relu has none.
    # performer-pytorch's pure-PyTorch causal path adds eps=1e-6 to the key prefix sums: loose tolerance.
    pp = _performer_pytorch()
    mod = _build(True, kernel="relu", nb_features=24)
    q, k, v = _qkv(10, hkv=H)
    wq = pp.generalized_kernel(q, projection_matrix=mod.projection, kernel_fn=torch.nn.ReLU())
    wk = pp.generalized_kernel(k, projection_matrix=mod.projection, kernel_fn=torch.nn.ReLU())
    theirs = pp.causal_linear_attention_noncuda(wq, wk, v)
    torch.testing.assert_close(mod(q, k, v, causal=True), theirs, rtol=1e-3, atol=1e-4)


def test_plain_cpu_uses_torch_fallback_and_records_it(monkeypatch):
    mod = _build(True)
    q, k, v = _qkv(11)
    out_triton = mod(q, k, v, causal=True)
    assert "(triton)" in mod.impl
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    out_torch = mod(q, k, v, causal=True)
    assert "(torch)" in mod.impl
    torch.testing.assert_close(out_torch, out_triton, rtol=1e-5, atol=1e-6)
