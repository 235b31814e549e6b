"""kernels/linear_attention_den_grad.py: the causal linear-attention normaliser's gradient in Triton launches, added
into the numerator's gradient buffers. Checked against the formulas in float64 and against autograd through
den = fq . cumsum(fk) (float64), with grouped heads, one or both gradients, several chunks and scan steps (CHUNK and
the scan shrunk), and inside causal_linear_attention's backward against the PyTorch backend. Triton interpreter on
the CPU (tests/conftest.py)."""
from __future__ import annotations

import pytest
import torch

import kernels.linear_attention as la
import kernels.linear_attention_den_grad as dg
import kernels.sea_causal_mix as scm


@pytest.fixture(autouse=True)
def small(monkeypatch):
    monkeypatch.setattr(dg, "CHUNK", 16)
    monkeypatch.setattr(scm, "SCAN_BLOCK_D", 8)
    monkeypatch.setattr(scm, "SCAN_STEPS", 2)
    monkeypatch.setattr(scm, "POISON_OUTPUTS", True)


def inputs(B, H, Hkv, T, M, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    fq = torch.rand(B, H, T, M, generator=g).to(dtype)
    fk = torch.rand(B, Hkv, T, M, generator=g).to(dtype)
    dden = torch.randn(B, H, T, generator=g)
    return fq, fk, dden


def reference(fq, fk, dden):
    """(dfq, dfk per query head) of sum_t dden[t] den[t], den[t] = fq[t] . sum_{s <= t} fk[s], by autograd in
    float64."""
    H, Hkv = fq.shape[1], fk.shape[1]
    q = fq.double().requires_grad_()
    k = fk.double().repeat_interleave(H // Hkv, dim=1).requires_grad_()
    den = (q * k.cumsum(2)).sum(-1)
    (den * dden.double()).sum().backward()
    return q.grad, k.grad


@pytest.mark.parametrize("H, Hkv, T, M", [(2, 2, 37, 8), (4, 2, 70, 33), (3, 1, 16, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adds_the_normaliser_gradient(H, Hkv, T, M, dtype):
    fq, fk, dden = inputs(2, H, Hkv, T, M, dtype, seed=T + M)
    base_q, base_k = torch.randn(2, 2, H, T, M, generator=torch.Generator().manual_seed(1))
    dfq, dfk = base_q.clone(), base_k.clone()
    dg.den_grad_add_(fq, fk, dden, dfq, dfk)
    want_q, want_k = reference(fq, fk, dden)
    # the formulas written out: prefix sums of fk times dden, suffix sums of dden * fq
    ck = fk.double().repeat_interleave(H // Hkv, dim=1).cumsum(2)
    torch.testing.assert_close(want_q, dden.double()[..., None] * ck, rtol=1e-12, atol=1e-12)
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dfq.double(), base_q.double() + want_q, **tol)
    torch.testing.assert_close(dfk.double(), base_k.double() + want_k, **tol)


def test_one_gradient_only_leaves_the_other_alone():
    fq, fk, dden = inputs(1, 2, 2, 40, 6, torch.float32, seed=3)
    want_q, want_k = reference(fq, fk, dden)
    dfq = torch.zeros(fq.shape)
    dg.den_grad_add_(fq, fk, dden, dfq, None)
    torch.testing.assert_close(dfq.double(), want_q, rtol=1e-5, atol=1e-5)
    dfk = torch.zeros(fq.shape)
    dg.den_grad_add_(fq, fk, dden, None, dfk)
    torch.testing.assert_close(dfk.double(), want_k, rtol=1e-5, atol=1e-5)


def test_refusals():
    fq, fk, dden = inputs(1, 2, 2, 8, 4, torch.float32)
    with pytest.raises(ValueError, match="fp32"):
        dg.den_grad_add_(fq, fk, dden.double(), torch.zeros(fq.shape), None)
    with pytest.raises(ValueError, match="dfq must be a contiguous fp32"):
        dg.den_grad_add_(fq, fk, dden, torch.zeros(fq.shape, dtype=torch.float64), None)
    fq3, fk3, dden3 = inputs(1, 3, 2, 8, 4, torch.float32)
    with pytest.raises(ValueError, match="H % Hkv"):
        dg.den_grad_add_(fq3, fk3, dden3, torch.zeros(fq3.shape), None)


@pytest.mark.parametrize("kernel", [True, False])
def test_triton_backward_matches_torch_backend(monkeypatch, kernel):
    """causal_linear_attention's gradients on the Triton path (with the kernel, or the PyTorch normaliser gradient)
    equal the PyTorch backend's, the loss reaching both the numerator and the normaliser."""
    monkeypatch.setattr(la, "DEN_GRAD_KERNEL", kernel)
    calls = []
    real = dg.den_grad_add_
    monkeypatch.setattr(dg, "den_grad_add_", lambda *a: (calls.append(1), real(*a))[1])
    g = torch.Generator().manual_seed(5)
    fq, fk = torch.rand(1, 4, 50, 8, generator=g), torch.rand(1, 2, 50, 8, generator=g)
    v = torch.randn(1, 2, 50, 16, generator=g)
    w_num, w_den = torch.randn(1, 4, 50, 16, generator=g), torch.randn(1, 4, 50, generator=g)
    grads = {}
    for backend in ("triton", "torch"):
        x = [t.clone().requires_grad_() for t in (fq, fk, v)]
        num, den = la.causal_linear_attention(*x, chunk=16, backend=backend)
        ((num * w_num).sum() + (den * w_den).sum()).backward()
        grads[backend] = [t.grad for t in x]
    assert calls == ([1] if kernel else [])
    for a, b in zip(grads["triton"], grads["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_against_pytorch_form_and_timing(monkeypatch):
    """SEA's 32k causal size (B=1, H=16, M=33 bf16 features, fp32 dden) with the shipped constants: the kernel against
    the PyTorch form it replaces (chunked_cumsum / chunked_rev_cumsum); prints both times (the harness's timer)."""
    from harness.measure import time_cuda
    from kernels.scan import chunked_cumsum, chunked_rev_cumsum

    monkeypatch.undo()                                                  # the shipped CHUNK and scan constants
    g = torch.Generator(device="cuda").manual_seed(0)
    fq, fk = (torch.rand(1, 16, 32768, 33, device="cuda", generator=g).to(torch.bfloat16) for _ in range(2))
    dden = torch.randn(1, 16, 32768, device="cuda", generator=g)

    def torch_form():
        d = dden[..., None]
        return d * chunked_cumsum(fk.float()), chunked_rev_cumsum(d * fq.float())

    def kernel_form():
        dfq, dfk = torch.zeros(fq.shape, device="cuda"), torch.zeros(fq.shape, device="cuda")
        dg.den_grad_add_(fq, fk, dden, dfq, dfk)
        return dfq, dfk

    for a, b in zip(kernel_form(), torch_form()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3 * (1 + b.abs().max().item()))
    t_torch = time_cuda(torch_form, rep_ms=50).median_ms
    t_kernel = time_cuda(kernel_form, rep_ms=50).median_ms
    print(f"\nnormaliser gradient T=32768: PyTorch form {t_torch:.3f} ms, kernel {t_kernel:.3f} ms "
          "(with two zero fills)")
