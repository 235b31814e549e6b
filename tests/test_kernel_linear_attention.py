"""Chunked causal linear attention (kernels/linear_attention.py) vs the plain float64 prefix-sum formula.

Triton runs through TRITON_INTERPRET=1 on CPU (set by conftest when there is no GPU); sizes stay tiny.
"""
import pytest
import torch

import kernels.linear_attention as la
from kernels.linear_attention import causal_linear_attention, causal_linear_attention_ref, pick_backend

B, H, HKV = 2, 4, 2


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """Kernel output buffers start as NaN, so a row/column the kernel forgets to write fails."""
    monkeypatch.setattr(la, "_new_buffer",
                        lambda shape, device: torch.full(shape, float("nan"), device=device, dtype=torch.float32))


def _inputs(T, M, E, *, hkv=HKV, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    fq = torch.rand(B, H, T, M, generator=g, dtype=torch.float64)       # positive features, like the methods
    fk = torch.rand(B, hkv, T, M, generator=g, dtype=torch.float64)
    v = torch.randn(B, hkv, T, E, generator=g, dtype=torch.float64)
    return [x.to(device) for x in (fq, fk, v)]


def _check(fq, fk, v, *, backend, dtype=torch.float32, rtol=2e-5, **kw):
    """Outputs and grads of (num, den) against causal_linear_attention_ref in float64."""
    x = [t.to(dtype).requires_grad_() for t in (fq, fk, v)]
    num, den = causal_linear_attention(*x, backend=backend, **kw)
    assert num.dtype == torch.float32 and den.dtype == torch.float32
    xr = [t.to(dtype).double().requires_grad_() for t in (fq, fk, v)]      # same rounded inputs
    rnum, rden = causal_linear_attention_ref(*xr)
    assert num.shape == rnum.shape and den.shape == rden.shape
    g = torch.Generator().manual_seed(1)
    gnum = torch.randn(rnum.shape, generator=g, dtype=torch.float64)
    gden = torch.randn(rden.shape, generator=g, dtype=torch.float64)
    ((num.double() * gnum).sum() + (den.double() * gden).sum()).backward()
    ((rnum * gnum).sum() + (rden * gden).sum()).backward()
    for name, a, r in (("num", num, rnum), ("den", den, rden)) + tuple(
            (f"grad {n}", p.grad, pr.grad) for n, p, pr in zip(("fq", "fk", "v"), x, xr)):
        assert a.dtype == (torch.float32 if name in ("num", "den") else dtype), name
        a = a.double()
        assert torch.isfinite(a).all(), name
        tol = rtol * r.abs().max().item() + 1e-6
        err = (a - r).abs().max().item()
        assert err <= tol, f"{name}: max err {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("T", [37, 32, 5])
def test_matches_prefix_sum_formula(backend, T):
    # T=37: not a multiple of the chunk (16); T=32: exact multiple; T=5: shorter than one chunk
    _check(*_inputs(T, 16, 16), backend=backend, chunk=16)


def test_triton_split_feature_and_value_blocks():
    # M=40 over blocks of 16 -> 3 feature blocks (partial sums), E=24 -> 2 value blocks (den written once)
    _check(*_inputs(37, 40, 24, seed=3), backend="triton", chunk=16, block_m=16, block_e=16)


def test_triton_chunk_32_and_no_gqa():
    _check(*_inputs(45, 16, 20, hkv=H, seed=4), backend="triton", chunk=32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_half_inputs_accumulate_in_fp32(backend, dtype):
    # the reference sees the same rounded inputs, so only accumulation error remains (fp32) - plus the
    # rounding of the half gradients themselves
    _check(*_inputs(37, 16, 16, seed=5), backend=backend, dtype=dtype, chunk=16,
           rtol=1e-2 if dtype == torch.bfloat16 else 2e-3)


def test_non_contiguous_inputs():
    fq, fk, v = _inputs(37, 16, 16, seed=6)
    # [B, T, H, M] storage viewed as [B, H, T, M]
    fq, fk, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (fq, fk, v))
    assert not fq.is_contiguous()
    _check(fq, fk, v, backend="triton", chunk=16)


def test_numerator_only_and_denominator_only_grads():
    fq, fk, v = _inputs(21, 16, 16, seed=7)
    for use in ("num", "den"):
        x = [t.float().requires_grad_() for t in (fq, fk, v)]
        xr = [t.clone().requires_grad_() for t in (fq, fk, v)]
        out = causal_linear_attention(*x, backend="triton", chunk=16)
        ref = causal_linear_attention_ref(*xr)
        i = 0 if use == "num" else 1
        out[i].sum().backward()
        ref[i].sum().backward()
        for p, pr in zip(x, xr):
            if use == "den" and pr.grad is None:      # v does not reach den
                assert p.grad is None or (p.grad == 0).all()
                continue
            torch.testing.assert_close(p.grad.double(), pr.grad, rtol=1e-5, atol=1e-5)


def test_float64_runs_in_float64_on_torch_backend():
    fq, fk, v = _inputs(37, 16, 16, seed=8)
    num, den = causal_linear_attention(fq, fk, v, backend="auto", chunk=16)
    assert pick_backend(fq) == "torch" and num.dtype == torch.float64
    rnum, rden = causal_linear_attention_ref(fq, fk, v)
    torch.testing.assert_close(num, rnum, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(den, rden, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError):
        causal_linear_attention(fq, fk, v, backend="triton", chunk=16)


def test_causal_prefix_is_unaffected_by_later_tokens():
    fq, fk, v = (t.float() for t in _inputs(37, 16, 16, seed=9))
    t0 = 19                                              # inside the second chunk of 16
    num1, den1 = causal_linear_attention(fq, fk, v, backend="triton", chunk=16)
    fq2, fk2, v2 = fq.clone(), fk.clone(), v.clone()
    fq2[:, :, t0 + 1:] += 5.0
    fk2[:, :, t0 + 1:] += 5.0
    v2[:, :, t0 + 1:] = float("1e6")
    num2, den2 = causal_linear_attention(fq2, fk2, v2, backend="triton", chunk=16)
    assert torch.equal(num1[:, :, :t0 + 1], num2[:, :, :t0 + 1])
    assert torch.equal(den1[:, :, :t0 + 1], den2[:, :, :t0 + 1])
    assert not torch.allclose(num1[:, :, t0 + 1:], num2[:, :, t0 + 1:])


def test_pick_backend(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert pick_backend(x) == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert pick_backend(x) == "triton"
    assert pick_backend(x, "torch") == "torch"
    with pytest.raises(ValueError):
        pick_backend(x, "cuda")


def test_bad_shapes_and_chunk():
    fq, fk, v = (t.float() for t in _inputs(20, 16, 16))
    with pytest.raises(ValueError):
        causal_linear_attention(fq, fk[:, :, :10], v, backend="torch")
    with pytest.raises(ValueError):
        causal_linear_attention(fq, fk, v, backend="triton", chunk=24)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_triton_matches_torch_fallback_at_model_sizes(dtype):
    # performer-like sizes: M = int(64 ln 64) = 266 (5 feature blocks), E = 64, T not a multiple of 64
    g = torch.Generator(device="cuda").manual_seed(0)
    fq = torch.rand(2, 8, 1000, 266, device="cuda", generator=g).to(dtype)
    fk = torch.rand(2, 2, 1000, 266, device="cuda", generator=g).to(dtype)
    v = torch.randn(2, 2, 1000, 64, device="cuda", generator=g).to(dtype)
    x = [t.clone().requires_grad_() for t in (fq, fk, v)]
    xr = [t.clone().requires_grad_() for t in (fq, fk, v)]
    out = causal_linear_attention(*x, backend="triton")
    ref = causal_linear_attention(*xr, backend="torch")
    gn = torch.randn_like(out[0])
    gd = torch.randn_like(out[1])
    ((out[0] * gn).sum() + (out[1] * gd).sum()).backward()
    ((ref[0] * gn).sum() + (ref[1] * gd).sum()).backward()
    grads = [(p.grad, pr.grad) for p, pr in zip(x, xr)]
    for i, (a, r) in enumerate(list(zip(out, ref)) + grads):
        a, r = a.double(), r.double()
        rtol = 1e-4 if i < 2 or dtype == torch.float32 else 1e-2     # bf16 grads: rounding of the result
        assert torch.isfinite(a).all()
        assert (a - r).abs().max() <= rtol * r.abs().max() + 1e-5
