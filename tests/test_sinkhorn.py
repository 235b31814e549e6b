"""Sparse Sinkhorn attention vs a dense float64 restatement of the same approximation (same parameters)."""
import math

import pytest
import torch

from methods.base import MethodConfigError, Problem, get
from methods.exact import ExactAttention
from methods.sinkhorn import Sinkhorn, sinkhorn_log
from tests.helpers import gaussian_qkv, two_sided_padding

B, H, HKV, T, D = 2, 4, 2, 37, 16
BS = 8                                   # block size in most tests: 5 blocks, the last one padded


def _inputs(seed=0, T=T, dtype=torch.float64):
    return gaussian_qkv(B, H, HKV, T, D, seed=seed, dtype=dtype)


def _padding(T=T):
    return two_sided_padding(B, T)


def _module(T=T, seed=3, **cfg):
    cfg.setdefault("block_size", BS)
    full = Sinkhorn.resolve_config(cfg)
    return Sinkhorn.build(full, Problem(B, H, HKV, T, D), seed=seed)


# ------------------------------------------------------------------------------------------------
# dense float64 restatement (probability-domain Sinkhorn, explicit loops over blocks)
# ------------------------------------------------------------------------------------------------

def dense_sinkhorn_ref(mod, q, k, v, *, causal, kpm=None, scale=None, return_probs=False):
    q, k, v = (t.to(torch.float64) for t in (q, k, v))
    Bq, Hq, Tq, Dq = q.shape
    Hk = k.shape[1]
    G = Hq // Hk
    bs = mod.block_size
    nb = -(-Tq // bs)
    scale = 1 / math.sqrt(Dq) if scale is None else scale
    valid = torch.ones(Bq, Tq, dtype=torch.bool) if kpm is None else kpm.clone()
    vf = valid.double()
    params = {n: p.double() for n, p in mod.named_parameters()}

    # block embeddings [B, Hkv, nb, D]
    emb = torch.zeros(Bq, Hk, nb, Dq, dtype=torch.float64)
    for j in range(nb):
        sel = torch.zeros(Tq)
        if causal:
            sel[: j * bs + 1] = 1                                          # up to the block's first token
        else:
            sel[j * bs: (j + 1) * bs] = 1
        w = vf * sel                                                       # [B, T]
        emb[:, :, j] = (w[:, None, :, None] * k).sum(2) / w.sum(1).clamp_min(1)[:, None, None]
    if "w1" in params:
        hid = torch.relu(torch.stack([emb[:, g] @ params["w1"][g] + params["b1"][g] for g in range(Hk)], 1))
    else:
        hid = emb
    logits = torch.stack([hid[:, g] @ params["w2"][g] + params["b2"][g] for g in range(Hk)], 1)[..., :nb]
    P = torch.exp(logits / mod.temperature)                                # [B, Hkv, nb, nb]
    if causal:
        allowed = torch.tril(torch.ones(nb, nb), -1)
        P = P * allowed
        for _ in range(mod.sinkhorn_iter):
            P = P / P.cumsum(-2).where(allowed > 0, torch.ones(()))          # column sums over rows <= i
            rs = P.sum(-1, keepdim=True)
            P = P / rs.where(rs > 0, torch.ones(()))
    else:
        for _ in range(mod.sinkhorn_iter):
            P = P / P.sum(-1, keepdim=True)
            P = P / P.sum(-2, keepdim=True)

    out = torch.zeros(Bq, Hq, Tq, Dq, dtype=torch.float64)
    probs = torch.zeros(Bq, Hq, Tq, Tq, dtype=torch.float64)
    pos = torch.arange(Tq)
    for h in range(Hq):
        g = h // G
        for i in range(nb):
            qi = pos[i * bs: (i + 1) * bs]
            # sorted slot t = sum_j P[i, j] * token (j*bs + t); mix[b, t, p] is the weight of key p in slot t
            slot_of = (pos[None, :] % bs) == torch.arange(bs)[:, None]      # [bs, T]
            mix = P[:, g, i][:, pos // bs][:, None, :] * vf[:, None, :] * slot_of   # [B, bs, T]
            ks = mix @ k[:, g]                                             # [B, bs, D]
            vs = mix @ v[:, g]
            sw = mix.sum(-1)                                               # [B, bs]
            kq = q[:, h, qi]                                               # [B, n, D]
            s_loc = kq @ k[:, g].transpose(-1, -2) * scale                 # [B, n, T]
            ok_loc = valid[:, None, :] & ((pos[None, :] // bs) == i)
            if causal:
                ok_loc = ok_loc & (pos[None, :] <= qi[:, None])
            s_srt = kq @ ks.transpose(-1, -2) * scale                      # [B, n, bs]
            ok_srt = (sw > 0)[:, None, :].expand(s_srt.shape)
            s_all = torch.cat([s_loc, s_srt], -1).masked_fill(~torch.cat([ok_loc.expand(s_loc.shape), ok_srt], -1),
                                                               float("-inf"))
            a = torch.softmax(s_all, -1).nan_to_num(0.0)
            out[:, h, qi] = a[..., :Tq] @ v[:, g] + a[..., Tq:] @ vs
            probs[:, h, qi] = a[..., :Tq] + a[..., Tq:] @ mix
    return (out, probs) if return_probs else out


def _grads(out, tensors, seed=7):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad((out * g).sum(), tensors, allow_unused=True)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("sortnet", ["mlp", "linear"])
def test_matches_dense_reference(causal, pad, sortnet):
    q, k, v = (t.requires_grad_() for t in _inputs(seed=1))
    kpm = _padding() if pad else None
    mod = _module(sortnet=sortnet)
    out = mod(q, k, v, causal=causal, key_padding_mask=kpm)
    ref = dense_sinkhorn_ref(mod, q, k, v, causal=causal, kpm=kpm)
    assert out.shape == (B, H, T, D) and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    params = list(mod.parameters())
    g_out = _grads(out, (q, k, v, *params))
    g_ref = _grads(ref, (q, k, v, *params))
    names = ["q", "k", "v"] + [n for n, _ in mod.named_parameters()]
    for name, a, b in zip(names, g_out, g_ref):
        assert a is not None and b is not None, name
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9, msg=f"d{name}")
    assert all(g.abs().max() > 0 for g in g_out[3:])                      # the sorting network learns
    full = ExactAttention("fp64")(q, k, v, causal=causal, key_padding_mask=kpm)
    assert (out - full).abs().max() > 1e-3                                # not a silent full attention


def test_attention_probs_are_the_implied_attention():
    q, k, v = _inputs(seed=2)
    kpm = _padding()
    mod = _module()
    rows = torch.tensor([0, 7, 8, 20, 36])
    for causal in (False, True):
        probs = mod.attention_probs(q, k, v, causal=causal, rows=rows, key_padding_mask=kpm)
        _, pref = dense_sinkhorn_ref(mod, q, k, v, causal=causal, kpm=kpm, return_probs=True)
        assert probs.shape == (B, H, 5, T)
        torch.testing.assert_close(probs, pref[:, :, rows], rtol=1e-9, atol=1e-12)
        out = mod(q, k, v, causal=causal, key_padding_mask=kpm)
        torch.testing.assert_close(probs @ v.repeat_interleave(2, 1), out[:, :, rows], rtol=1e-9, atol=1e-9)
        assert (probs[0, ..., -5:] == 0).all() and (probs[1, ..., :3] == 0).all()
        if causal:
            assert (probs * torch.ones(T, T, dtype=torch.float64).triu(1)[rows]).abs().max() == 0


def test_doubly_stochastic_after_enough_iterations():
    q, k, v = _inputs(seed=3)
    mod = _module(sinkhorn_iter=200)
    S = mod.permutation(k, causal=False)                                   # [B, Hkv, nb, nb]
    assert S.shape == (B, HKV, 5, 5)
    torch.testing.assert_close(S.sum(-1), torch.ones(B, HKV, 5, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(S.sum(-2), torch.ones(B, HKV, 5, dtype=torch.float64), rtol=0, atol=1e-6)
    few = _module(sinkhorn_iter=0).permutation(k, causal=False)           # plain exp(logits): not balanced
    assert (few.sum(-1) - 1).abs().max() > 1e-2
    Sc = mod.permutation(k, causal=True)
    assert (Sc * torch.ones(5, 5).triu()).abs().max() == 0                # strictly lower triangular
    torch.testing.assert_close(Sc.sum(-1)[..., 1:], torch.ones(B, HKV, 4, dtype=torch.float64))


@pytest.mark.parametrize("n_iter", [1, 8])
def test_log_sinkhorn_matches_sinkhorn_transformer(n_iter):
    st = pytest.importorskip("sinkhorn_transformer.sinkhorn_transformer",
                             reason="sinkhorn-transformer not installed (optional oracle)")
    x = torch.randn(6, 5, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(sinkhorn_log(x, n_iter), st.sinkhorn_sorting_operator(x, n_iter))


def test_causality_canary():
    q, k, v = _inputs(seed=5)
    mod = _module()
    out = mod(q, k, v, causal=True)
    for t in (0, 7, 8, 20, 35):      # first/last token of a block, inside a block
        q2, k2, v2 = (x.clone() for x in (q, k, v))
        for x in (q2, k2, v2):
            x[:, :, t + 1:] = torch.randn_like(x[:, :, t + 1:]) * 5
        out2 = mod(q2, k2, v2, causal=True)
        torch.testing.assert_close(out2[:, :, :t + 1], out[:, :, :t + 1], rtol=1e-12, atol=1e-12)
        assert (out2[:, :, t + 1:] - out[:, :, t + 1:]).abs().max() > 1e-3
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    o = mod(qg, kg, vg, causal=True)
    t = 12
    for gr in torch.autograd.grad(o[:, :, :t + 1].sum(), (qg, kg, vg)):
        assert gr[:, :, t + 1:].abs().max() == 0
    # the bidirectional variant does look ahead (so the canary can fail)
    bo = mod(q, k, v, causal=False)
    bo2 = mod(q, k, v2, causal=False)
    assert (bo2[:, :, :8] - bo[:, :, :8]).abs().max() > 1e-3


@pytest.mark.parametrize("causal", [False, True])
def test_padding_respected(causal):
    q, k, v = _inputs(seed=6)
    kpm = _padding()
    mod = _module()
    out = mod(q, k, v, causal=causal, key_padding_mask=kpm)
    k2, v2 = k.clone(), v.clone()
    for x in (k2, v2):               # garbage in padded keys/values changes nothing (not even the sorting)
        x[0, :, -5:] = 1e3
        x[1, :, :3] = -1e3
    out2 = mod(q, k2, v2, causal=causal, key_padding_mask=kpm)
    torch.testing.assert_close(out2, out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_dtypes_and_backward(dtype, causal):
    q, k, v = _inputs(seed=8, dtype=dtype)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    mod = _module()
    out = mod(q, k, v, causal=causal, key_padding_mask=_padding())
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = mod(*(x.detach().double() for x in (q, k, v)), causal=causal, key_padding_mask=_padding())
    tol = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    out.float().sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))
    assert all(torch.isfinite(p.grad).all() for p in mod.parameters())


def test_lengths_state_seed_and_refusals():
    mod = _module(T=37)
    assert set(mod.state_dict()) == {"w1", "b1", "w2", "b2"} and mod.w2.shape == (HKV, D, 5)
    for t in (1, 8, 9, 37):
        q, k, v = _inputs(seed=9, T=t)
        for causal in (False, True):
            out = mod(q, k, v, causal=causal)
            assert out.shape == (B, H, t, D) and torch.isfinite(out).all()
    q, k, v = _inputs(seed=9, T=41)  # needs 6 blocks; the sorting network has 5 outputs
    with pytest.raises(ValueError, match="blocks"):
        mod(q, k, v, causal=True)
    a, b, c = _module(seed=11), _module(seed=11), _module(seed=12)
    assert torch.equal(a.w2, b.w2) and not torch.equal(a.w2, c.w2)
    q, k, v = _inputs(seed=9)
    a(q, k, v, causal=False)
    assert "seed=11" in a.impl and "block_size=8" in a.impl
    # Gumbel noise: seeded, reproducible per module, changes the result
    g1, g2 = _module(seed=11, gumbel=True), _module(seed=11, gumbel=True)
    o1, o2 = g1(q, k, v, causal=False), g2(q, k, v, causal=False)
    torch.testing.assert_close(o1, o2)
    assert (o1 - a(q, k, v, causal=False)).abs().max() > 1e-6


def test_registry_and_config():
    cls = get("sinkhorn")
    assert cls is Sinkhorn and cls.exact is False and cls.complexity
    with pytest.raises(MethodConfigError):
        Sinkhorn.resolve_config({"temperature": 0})
    with pytest.raises(MethodConfigError):
        Sinkhorn.resolve_config({"sortnet": "attention"})
    assert Sinkhorn.resolve_config({"gumbel": "true"})["gumbel"] is True


def test_explicit_scale():
    q, k, v = _inputs(seed=12)
    mod = _module()
    out = mod(q, k, v, causal=True, scale=0.3)
    torch.testing.assert_close(out, dense_sinkhorn_ref(mod, q, k, v, causal=True, scale=0.3), rtol=1e-9, atol=1e-9)
    assert (out - mod(q, k, v, causal=True)).abs().max() > 1e-3
