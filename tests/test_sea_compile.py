"""sea.compile=estimator: the estimator's tensor operations through torch.compile. The compiled estimator must
compute what the eager one does (same weights, same inputs; only fusion may reorder float32 sums), with and
without a padding mask, and the option must reach the layer and its impl string. The inductor test compiles on
the CPU (a C compiler is needed; about 15 s); the padded and bidirectional cases use the aot_eager backend (the
same dynamo graph capture and kernel-call breaks, no code generation) to keep the suite short."""
from __future__ import annotations

import pytest
import torch

import methods.sea.estimator as est_mod
from methods.base import MethodConfigError, Problem, get

B, H, Hkv, T, D = 2, 4, 2, 37, 16


def build(causal, **opts):
    M = get("sea")
    cfg = M.resolve_config({key: str(val) for key, val in dict(dict(k=3, K=16, backend="torch"), **opts).items()})
    return M.build(cfg, Problem(B, H, Hkv, T, D, dtype="fp32", causal=causal, device="cpu"), seed=5)


def qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, D, generator=g), torch.randn(B, Hkv, T, D, generator=g),
            torch.randn(B, Hkv, T, D, generator=g))


def compare(causal, valid):
    eager, comp = build(causal), build(causal, compile="estimator")
    assert comp.estimator.compile == "estimator" and eager.estimator.compile == "none"
    comp.load_state_dict(eager.state_dict())                    # same weights (seeded alike anyway)
    q, k, v = qkv()
    kr, vr = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)   # [B, H, T, D]
    with torch.no_grad():
        want = eager.estimator(q, kr, vr, valid=valid)
        got = comp.estimator(q, kr, vr, valid=valid)
        got_again = comp.estimator(q * 2, kr, vr, valid=valid)  # a second call reuses the compiled graph
        want_again = eager.estimator(q * 2, kr, vr, valid=valid)
    assert comp.estimator._compiled is not None
    for w, g in zip(want + want_again, got + got_again):
        assert g.shape == w.shape and g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert not torch.equal(got[0], got_again[0])               # the inputs reached the compiled graph
    with torch.no_grad():
        out_e = eager(q, k, v, causal=causal, key_padding_mask=valid)
        out_c = comp(q, k, v, causal=causal, key_padding_mask=valid)
    torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
    assert "compile=estimator" in comp.impl and "compile=" not in eager.impl


def test_compiled_estimator_matches_eager_inductor():
    compare(causal=True, valid=None)


@pytest.mark.parametrize("causal", [True, False])
def test_compiled_estimator_matches_eager_with_padding(monkeypatch, causal):
    monkeypatch.setattr(est_mod, "COMPILE_BACKEND", "aot_eager")
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 30:] = False                                        # batch element 1 padded after 30 tokens
    compare(causal=causal, valid=valid)


def test_compile_option_refuses_unknown_value():
    with pytest.raises(MethodConfigError):
        build(True, compile="max")
    with pytest.raises(ValueError, match="compile"):
        est_mod.Estimator(d=D, H=H, K=16, causal=True, nbf=2.0, max_len=64, seed=0, compile="all")


def test_compiled_estimator_gradients_match_eager(monkeypatch):
    """Training through the compiled estimator (AOT autograd; the Performer kernel's autograd.Function runs between
    the compiled pieces): output and gradients to q, k, v and every estimator parameter as in eager mode. The
    causal decoder only steers the selection, so a loss on the output leaves its parameters without a gradient
    (None) in both: the compiled decoder is a graph of its own whose backward does not run (before, one graph with
    the encoder ran the decoder's backward on zero gradients)."""
    monkeypatch.setattr(est_mod, "COMPILE_BACKEND", "aot_eager")
    results = []
    for mod in (build(True), build(True, compile="estimator")):
        q, k, v = (x.requires_grad_() for x in qkv(3))
        out = mod(q, k, v, causal=True)
        out.square().sum().backward()
        grads = {n: p.grad for n, p in mod.estimator.named_parameters()}
        results.append((out.detach(), q.grad, k.grad, v.grad, grads))
    (out_e, *g_e, p_e), (out_c, *g_c, p_c) = results
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert any(g is not None and g.abs().max() > 0 for g in p_e.values())   # the estimator is trained at all
    assert all(p_e[name] is None for name in p_e if name.startswith("dec."))
    for name in p_e:
        assert (p_c[name] is None) == (p_e[name] is None), name
        if p_e[name] is not None:
            torch.testing.assert_close(p_c[name], p_e[name], rtol=1e-4, atol=1e-5, msg=name)
