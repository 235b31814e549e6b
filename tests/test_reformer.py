"""Reformer LSH attention vs a dense float64 restatement of the same approximation (same rotations)."""
import math
from unittest import mock

import pytest
import torch

from methods.base import MethodConfigError, Problem, get
from methods.exact import ExactAttention
from methods.reformer import SELF_LOGIT, Reformer, ReformerAttention, lsh_geometry
from tests.helpers import gaussian_qkv, two_sided_padding

B, H, HKV, T, D = 2, 4, 2, 37, 16


def _inputs(seed=0, T=T, dtype=torch.float64, hkv=HKV):
    return gaussian_qkv(B, H, hkv, T, D, seed=seed, dtype=dtype)


def _padding(T=T):
    return two_sided_padding(B, T)


def _module(T=T, seed=3, **cfg):
    full = Reformer.resolve_config(cfg)
    return Reformer.build(full, Problem(B, H, HKV, T, D), seed=seed)


# ------------------------------------------------------------------------------------------------
# dense float64 restatement: which keys each query sees per round, as a multiplicity matrix
# ------------------------------------------------------------------------------------------------

def _ranks(keys):
    """keys [..., T] distinct -> rank of each entry among the T (counting, not sorting)."""
    return (keys[..., None, :] < keys[..., :, None]).sum(-1)               # [..., T]


def dense_lsh_ref(q, k, v, rot, *, causal, C, nb, shared, across=True, kpm=None, scale=None,
                  return_probs=False):
    q, k, v, rot = (t.to(torch.float64) for t in (q, k, v, rot))
    Bq, Hq, Tq, Dq = q.shape
    k = k.repeat_interleave(Hq // k.shape[1], dim=1)                       # [B, H, T, D]
    v = v.repeat_interleave(Hq // v.shape[1], dim=1)                       # [B, H, T, D]
    scale = 1 / math.sqrt(Dq) if scale is None else scale
    Tp = -(-Tq // C) * C
    nc = Tp // C
    R = rot.shape[1]
    NC = R * nc
    keys = q / q.norm(dim=-1, keepdim=True) if shared else k
    pos = torch.arange(Tq)

    def buckets(x):                                                        # [R, B, H, T]
        out = []
        for r in range(R):
            proj = x @ rot[:, r, :]                                        # [B, H, T, nb/2]
            out.append(torch.cat([proj, -proj], -1).argmax(-1))
        return torch.stack(out)

    bq = buckets(q)
    bk = bq if shared else buckets(keys)
    # padding positions (>= T) sort after every real one, so ranks among real tokens suffice
    rq = _ranks(bq * Tp + pos)                                             # [R, B, H, T]
    rk = _ranks(bk * Tp + pos)
    gq = torch.arange(R)[:, None, None, None] * nc + rq // C               # global chunk of each query
    gk = torch.arange(R)[:, None, None, None] * nc + rk // C
    mult = torch.zeros(R, Bq, Hq, Tq, Tq, dtype=torch.float64)             # [R, B, H, Tq, Tk]
    for r in range(R):
        g = gq[r][..., :, None]                                            # [B, H, T, 1]
        for r2 in range(R):
            hit = (gk[r2][..., None, :] == g).double() + (gk[r2][..., None, :] == (g - 1) % NC).double()
            if not across:
                same = (r2 == r) & (bk[r2][..., None, :] == bq[r][..., :, None])
                hit = hit * same.double()
            mult[r] += hit
    s = q @ keys.transpose(-1, -2) * scale                                 # [B, H, T, T]
    if shared:
        s = torch.where(torch.eye(Tq, dtype=torch.bool), torch.full_like(s, SELF_LOGIT), s)
    allowed = torch.ones(Bq, 1, Tq, Tq, dtype=torch.bool)
    if causal:
        allowed = allowed & (pos[None, :] <= pos[:, None])
    if kpm is not None:
        allowed = allowed & kpm[:, None, None, :]
    wts = mult.sum(0) * allowed                                            # [B, H, T, T]
    s = torch.where(wts > 0, s, torch.full_like(s, float("-inf")))
    m = s.amax(-1, keepdim=True).clamp_min(-1e300).detach()
    e = torch.exp(s - m) * wts
    den = e.sum(-1, keepdim=True)
    p = torch.where(den > 0, e / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(e))
    out = p @ v
    return (out, p) if return_probs else out


def _grads(out, tensors, seed=7):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad((out * g).sum(), tensors, allow_unused=True)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("pad", [False, True])
def test_matches_dense_reference(causal, shared, pad):
    q, k, v = (t.requires_grad_() for t in _inputs(seed=1))
    kpm = _padding() if pad else None
    mod = _module(bucket_size=8, n_hashes=3, shared_qk=shared)
    rot, nb = mod.rotations_for(T, "cpu")
    assert nb == 6 and lsh_geometry(T, 8) == (40, 5, 6)
    out = mod(q, k, v, causal=causal, key_padding_mask=kpm)
    ref = dense_lsh_ref(q, k, v, rot, causal=causal, C=8, nb=nb, shared=shared, kpm=kpm)
    assert out.shape == (B, H, T, D) and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    g_out = _grads(out, (q, k, v))
    g_ref = _grads(ref, (q, k, v))
    for name, a, b in zip("qkv", g_out, g_ref):
        if shared and name == "k":
            assert b is None and a.abs().max() == 0 and a.shape == k.shape   # k is ignored in shared-QK mode
            continue
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=f"d{name}")
    # the approximation is not full attention (a canary for a silent fallback)
    full = ExactAttention("fp64")(q, k, v, causal=causal, key_padding_mask=kpm)
    assert (out - full).abs().max() > 1e-3


@pytest.mark.parametrize("causal", [False, True])
def test_same_bucket_only_matches_reference(causal):
    q, k, v = _inputs(seed=2)
    mod = _module(bucket_size=8, n_hashes=2, shared_qk=False, attend_across_buckets=False)
    rot, nb = mod.rotations_for(T, "cpu")
    out = mod(q, k, v, causal=causal)
    ref = dense_lsh_ref(q, k, v, rot, causal=causal, C=8, nb=nb, shared=False, across=False)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shared", [True, False])
def test_attention_probs_are_the_implied_attention(shared):
    q, k, v = _inputs(seed=3)
    kpm = _padding()
    mod = _module(bucket_size=8, n_hashes=3, shared_qk=shared)
    rows = torch.tensor([0, 5, 17, 36])
    probs = mod.attention_probs(q, k, v, causal=True, rows=rows, key_padding_mask=kpm)
    rot, nb = mod.rotations_for(T, "cpu")
    _, pref = dense_lsh_ref(q, k, v, rot, causal=True, C=8, nb=nb, shared=shared, kpm=kpm, return_probs=True)
    assert probs.shape == (B, H, 4, T)
    torch.testing.assert_close(probs, pref[:, :, rows], rtol=1e-9, atol=1e-12)
    out = mod(q, k, v, causal=True, key_padding_mask=kpm)
    torch.testing.assert_close(probs @ v.repeat_interleave(2, 1), out[:, :, rows], rtol=1e-9, atol=1e-9)
    assert (probs[0, ..., -5:] == 0).all() and (probs[1, ..., :3] == 0).all()   # padding never attended


@pytest.mark.parametrize("causal", [False, True])
def test_one_chunk_is_exact_attention_with_self_mask(causal):
    q, k, v = _inputs(seed=4)
    shared = _module(bucket_size=64, n_hashes=2, shared_qk=True)
    assert lsh_geometry(T, 64) == (64, 1, 2)
    out = shared(q, k, v, causal=causal)
    keys = q / q.norm(dim=-1, keepdim=True)
    s = q @ keys.transpose(-1, -2) / math.sqrt(D)                          # [B, H, T, T]
    s = s.masked_fill(torch.eye(T, dtype=torch.bool), SELF_LOGIT)
    if causal:
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    ref = torch.softmax(s, -1) @ v.repeat_interleave(2, 1)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    if causal:   # row 0 has only itself: it attends to itself
        torch.testing.assert_close(out[:, :, 0], v.repeat_interleave(2, 1)[:, :, 0])
    separate = _module(bucket_size=64, n_hashes=2, shared_qk=False)
    kpm = _padding()
    out = separate(q, k, v, causal=causal, key_padding_mask=kpm)
    ref = ExactAttention("fp64")(q, k, v, causal=causal, key_padding_mask=kpm)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shared", [True, False])
def test_causality_canary(shared):
    q, k, v = _inputs(seed=5)
    mod = _module(bucket_size=8, n_hashes=3, shared_qk=shared)
    t = 20
    out = mod(q, k, v, causal=True)
    # change future values and rescale future queries / keys: angular hashes (and so the chunks)
    # are unchanged, so every output at or before t must be identical
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    v2[:, :, t + 1:] = torch.randn_like(v2[:, :, t + 1:]) * 10
    q2[:, :, t + 1:] *= 3.0
    k2[:, :, t + 1:] *= 5.0
    out2 = mod(q2, k2, v2, causal=True)
    torch.testing.assert_close(out2[:, :, :t + 1], out[:, :, :t + 1], rtol=0, atol=0)
    assert (out2[:, :, t + 1:] - out[:, :, t + 1:]).abs().max() > 1e-3
    # and no gradient from past outputs reaches a future token
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    o = mod(qg, kg, vg, causal=True)
    grads = torch.autograd.grad(o[:, :, :t + 1].sum(), (qg, kg, vg), allow_unused=True)
    for gr in grads:
        if gr is not None:
            assert gr[:, :, t + 1:].abs().max() == 0


@pytest.mark.parametrize("shared", [True, False])
def test_padding_respected(shared):
    q, k, v = _inputs(seed=6)
    kpm = _padding()
    mod = _module(bucket_size=8, n_hashes=2, shared_qk=shared)
    vg = v.clone().requires_grad_()
    out = mod(q, k, vg, causal=False, key_padding_mask=kpm)
    (gv,) = torch.autograd.grad(out.sum(), (vg,))
    assert gv[0, :, -5:].abs().max() == 0 and gv[1, :, :3].abs().max() == 0
    assert gv[0, :, :-5].abs().max() > 0
    v2 = v.clone()
    v2[0, :, -5:] = 1e4
    v2[1, :, :3] = -1e4
    out2 = mod(q, k, v2, causal=False, key_padding_mask=kpm)
    torch.testing.assert_close(out2, out.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_dtypes_and_backward(dtype, causal):
    q, k, v = _inputs(seed=8, dtype=dtype)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    mod = _module(bucket_size=8, n_hashes=2, shared_qk=False)
    out = mod(q, k, v, causal=causal, key_padding_mask=_padding())
    assert out.dtype == dtype and torch.isfinite(out).all()
    # same rounded inputs in float64: identical buckets, so only rounding separates the two
    ref = mod(*(x.detach().double() for x in (q, k, v)), causal=causal, key_padding_mask=_padding())
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    out.float().sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


def test_any_length_and_state():
    mod = _module(T=37, bucket_size=8, n_hashes=2)
    assert "rotations" in mod.state_dict() and mod.rotations.shape == (D, 2, 3)
    for t in (1, 5, 37, 70):     # other lengths than the build-time one, incl. shorter than a chunk
        q, k, v = _inputs(seed=9, T=t)
        out = mod(q, k, v, causal=True)
        assert out.shape == (B, H, t, D) and torch.isfinite(out).all()
    # a single token attends to itself
    q, k, v = _inputs(seed=9, T=1)
    torch.testing.assert_close(mod(q, k, v, causal=False), v.repeat_interleave(2, 1))
    # determinism in the seed
    a = _module(seed=11, bucket_size=8)
    b = _module(seed=11, bucket_size=8)
    c = _module(seed=12, bucket_size=8)
    assert torch.equal(a.rotations, b.rotations) and not torch.equal(a.rotations, c.rotations)
    assert "seed=11" in a.impl and "n_hashes=4" in a.impl


def test_registry_and_config():
    cls = get("reformer")
    assert cls is Reformer and cls.exact is False and cls.complexity
    with pytest.raises(MethodConfigError):
        Reformer.resolve_config({"n_buckets": 3})
    with pytest.raises(MethodConfigError):
        Reformer.resolve_config({"n_hashes": 0})
    assert Reformer.resolve_config({"shared_qk": "false"})["shared_qk"] is False


# ------------------------------------------------------------------------------------------------
# independent oracle: reformer_pytorch's LSHAttention with the same rotations
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_matches_reformer_pytorch(causal):
    rp = pytest.importorskip("reformer_pytorch", reason="reformer_pytorch not installed (optional oracle)")
    Tr, C, R = 48, 8, 3                    # reformer_pytorch needs T % (2 * bucket_size) == 0
    q, _, v = _inputs(seed=10, T=Tr, hkv=H)
    mod = _module(T=Tr, bucket_size=C, n_hashes=R, shared_qk=True)
    rot, nb = mod.rotations_for(Tr, "cpu")
    assert nb == Tr // C
    ours = mod(q, q, v, causal=causal)
    theirs_attn = rp.LSHAttention(bucket_size=C, n_hashes=R, causal=causal).eval()
    real_randn = torch.randn
    calls = []

    def fake_randn(*shape, **kw):          # their hash draws (1, D, n_hashes, n_buckets/2) rotations
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        if tuple(shape) == (1, D, R, nb // 2):
            calls.append(shape)
            return rot[None].to(kw.get("dtype", torch.float32))
        return real_randn(*shape, **kw)

    with mock.patch.object(torch, "randn", fake_randn):
        theirs, _, _ = theirs_attn(q.reshape(B * H, Tr, D), v.reshape(B * H, Tr, D))   # [B*H, T, D]
    assert len(calls) == 1
    torch.testing.assert_close(ours, theirs.reshape(B, H, Tr, D), rtol=1e-7, atol=1e-7)


def test_explicit_scale():
    q, k, v = _inputs(seed=12)
    mod = _module(bucket_size=8, n_hashes=2, shared_qk=False)
    rot, nb = mod.rotations_for(T, "cpu")
    out = mod(q, k, v, causal=True, scale=0.3)
    ref = dense_lsh_ref(q, k, v, rot, causal=True, C=8, nb=nb, shared=False, scale=0.3)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    assert (out - mod(q, k, v, causal=True)).abs().max() > 1e-3
