"""methods/sea/precision.py: tf32_linear equals F.linear in value and gradients, runs its backward's products with
TF32 allowed and restores the caller's flags; SEA with estimator_precision=tf32 routes the estimator's encoder, scaler
and feature projections through it when a gradient is computed (both directions), and its gradients then equal the
fp32 estimator's on the CPU (where TF32 does not exist)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import methods.sea.precision as prec
from tests.helpers import gaussian_qkv, sea_case

B, H, T, D = 1, 2, 24, 16


def flags():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("bias", [True, False])
def test_tf32_linear_matches_linear_and_scopes_its_backward(monkeypatch, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 8, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    seen = []
    real = prec._mm
    monkeypatch.setattr(prec, "_mm", lambda a, c: (seen.append(flags()), real(a, c))[1])
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        out = prec.tf32_linear(x, w, b)
        ref = F.linear(x, w, b)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        gout = torch.randn(out.shape, generator=g, dtype=torch.float64)
        ins = [t for t in (x, w, b) if t is not None]
        got = torch.autograd.grad(out, ins, gout)
        want = torch.autograd.grad(ref, ins, gout)
        assert flags() == (False, False)                                 # restored after the backward
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)
    assert len(seen) == 2 and all(f == (True, True) for f in seen)      # dx and dw products under TF32


@pytest.mark.parametrize("causal", [True, False])
def test_sea_tf32_grads_route_through_tf32_linear_and_equal_fp32_on_cpu(monkeypatch, causal):
    calls = []
    real = prec._forward_product
    monkeypatch.setattr(prec, "_forward_product", lambda *a: (calls.append(a[1].shape), real(*a))[1])
    grads = {}
    for precision in ("fp32", "tf32"):
        M, cfg, prob = sea_case(B, H, H, T, D, causal=causal, backend="torch", performer_backend="torch",
                                estimator_precision=precision, max_len=64)
        mod = M.build(cfg, prob, seed=5)
        q, k, v = (t.requires_grad_() for t in gaussian_qkv(B, H, H, T, D, seed=2, dtype=torch.float32))
        params = [p for p in mod.parameters() if p.requires_grad]
        out = mod(q, k, v, causal=causal)
        gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
        grads[precision] = (out.detach(), torch.autograd.grad(out, [q, k, v] + params, gout, allow_unused=True))
        if precision == "fp32":
            assert calls == []
    # the feature projections of q and k ([m, d]), the encoder ([2d, 3d]) and the scaler ([2, 2d])
    assert (2 * D, 3 * D) in calls and (2, 2 * D) in calls
    assert sum(1 for s in calls if s[1] == D) == 2
    out32, g32 = grads["fp32"]
    outtf, gtf = grads["tf32"]
    torch.testing.assert_close(outtf, out32, rtol=1e-5, atol=1e-6)
    assert sum(a is not None for a in gtf) >= 5
    for a, c in zip(gtf, g32):
        assert (a is None) == (c is None)
        if a is not None:
            torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)


def test_switch_off_takes_the_plain_modules(monkeypatch):
    monkeypatch.setattr(prec, "TF32_BACKWARD", False)
    calls = []
    real = prec._forward_product
    monkeypatch.setattr(prec, "_forward_product", lambda *a: (calls.append(a[1].shape), real(*a))[1])
    M, cfg, prob = sea_case(B, H, H, T, D, causal=True, backend="torch", performer_backend="torch",
                            estimator_precision="tf32", max_len=64)
    mod = M.build(cfg, prob, seed=5)
    q, k, v = (t.requires_grad_() for t in gaussian_qkv(B, H, H, T, D, seed=2, dtype=torch.float32))
    out = mod(q, k, v, causal=True)
    torch.autograd.grad(out, [q, k, v], torch.ones_like(out))
    assert calls == []
