"""sea.estimator_precision: the precision of the products inside the estimator's Triton kernels reaches the fused
front and the encoder kernel (the decoder kernel keeps its default: one-pass TF32 measured slower there), the impl
string names it, and tf32 changes the estimate by a little (under the interpreter only the fused front's bf16
feature operands are visible: its products are exact)."""
from __future__ import annotations

import pytest
import torch

import kernels.sea_decoder as dk
import kernels.sea_encoder as ek
import kernels.sea_favor_encoder as fe
from methods.base import Problem, get

B, H, T, D = 1, 2, 40, 16


def build(**opts):
    M = get("sea")
    base = dict(k=3, K=16, backend="torch", max_len=64, decoder_backend="triton", performer_dtype="bf16")
    cfg = M.resolve_config({key: str(val) for key, val in dict(base, **opts).items()})
    prob = Problem(B, H, H, T, D, dtype="fp32", causal=True, device="cpu")
    assert M.supports(prob, cfg) == []
    return M.build(cfg, prob, seed=3)


def spy(monkeypatch, module, name, seen):
    real = getattr(module, name)

    def wrapped(*args, **kw):
        seen.append((name, kw.get("precision")))
        return real(*args, **kw)
    monkeypatch.setattr(module, name, wrapped)


@pytest.mark.parametrize("front", ["fused", "torch"])
def test_precision_reaches_every_estimator_kernel(monkeypatch, front):
    seen = []
    spy(monkeypatch, fe, "favor_encoder_forward", seen)
    spy(monkeypatch, ek, "encoder_forward", seen)
    spy(monkeypatch, dk, "decoder_forward", seen)
    extra = {} if front == "fused" else dict(encoder_backend="triton")
    fast, exact = build(performer_backend=front, estimator_precision="tf32", **extra), \
        build(performer_backend=front, **extra)
    exact.load_state_dict(fast.state_dict())
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    with torch.no_grad():
        a = fast(q, k, v, causal=True)
        names = {n for n, _ in seen}
        assert dict(seen) == {**{n: "tf32" for n in names}, "decoder_forward": None}, seen
        seen.clear()
        b = exact(q, k, v, causal=True)
        assert {p for _, p in seen} == {None}, seen
    want = {"decoder_forward", "favor_encoder_forward" if front == "fused" else "encoder_forward"}
    assert names == want
    assert "estimator_precision=tf32" in fast.impl and "estimator_precision" not in exact.impl
    assert torch.isfinite(a).all()
    if front == "fused":     # bf16 feature operands: a visible, small change of the estimate (the output itself
        la, lb = fast.last_aux["logits"], exact.last_aux["logits"]   # moves more: near-tied cells swap in top-k)
        diff = ((la - lb).norm() / lb.norm()).item()
        assert 0 < diff < 1e-2, diff


def test_bad_precision_refused():
    M = get("sea")
    with pytest.raises(Exception, match="estimator_precision"):
        M.resolve_config({"estimator_precision": "fp16"})
