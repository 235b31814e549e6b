"""kernels/sea_causal_mix_grad.py: SEA's causal mix with a Triton backward. The backward is checked against the
float64 re-statement of its formulas (causal_mix_grad_ref), against autograd through a float64 torch mix, and
against autograd through SEA's own torch path (stage_mix with the tensor ops), in the Triton interpreter on the CPU
(tests/conftest.py) with CHUNK etc. shrunk so that T = 130 has 9 chunks and the scans several dependent steps."""
from __future__ import annotations

import pytest
import torch

import kernels.sea_causal_mix as scm
from kernels.sea_causal_mix_grad import MAX_D, causal_mix_grad, causal_mix_grad_ref
from tests.test_sea_causal_mix import inputs, sea_torch_path

# fp32 kernel sums in a different order than float64: tight; bf16 gradients: one bf16 step (the interpreter's
# casts truncate) -> rtol 2^-7
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.bfloat16: dict(rtol=8e-3, atol=1e-5)}


@pytest.fixture(autouse=True)
def small(monkeypatch):
    monkeypatch.setattr(scm, "CHUNK", 16)
    monkeypatch.setattr(scm, "SCAN_BLOCK_D", 8)
    monkeypatch.setattr(scm, "SCAN_STEPS", 2)
    monkeypatch.setattr(scm, "POISON_OUTPUTS", True)


def run(c, v, sp, sm, out_dtype, g):
    c, v, sp, sm = (x.clone().requires_grad_() for x in (c, v, sp, sm))
    out = causal_mix_grad(c, v, sp, sm, out_dtype=out_dtype)
    out.backward(g)
    return out.detach(), c.grad, v.grad, sp.grad, sm.grad


@pytest.mark.parametrize("T, D", [(37, 16), (130, 24), (16, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_matches_float64_formulas_and_autograd(T, D, dtype):
    c, v, sp, sm = inputs(T, D, dtype, seed=T * D)
    g = torch.randn(c.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    out, dc, dv, dsp, dsm = run(c, v, sp, sm, dtype, g)
    assert dc.dtype == c.dtype and dv.dtype == v.dtype and dsp.dtype == dsm.dtype == torch.float32
    assert all(torch.isfinite(x).all() for x in (dc, dv, dsp, dsm))   # poisoned buffers: every element written
    want = causal_mix_grad_ref(g, c, v, sp, sm)
    for name, got, ref in zip(("dc", "dv", "ds_prob", "ds_mix"), (dc, dv, dsp, dsm), want):
        tol = TOL[dtype] if name in ("dc", "dv") else dict(rtol=2e-5, atol=2e-5 * (1 + ref.abs().max().item()))
        torch.testing.assert_close(got.double(), ref, **tol, msg=name)
    # the formulas are the gradient: autograd through the mix written in float64
    c64, v64, sp64, sm64 = (x.double().requires_grad_() for x in (c, v, sp, sm))
    n = torch.arange(1, T + 1, dtype=torch.float64)[:, None]
    ((1 - sm64) * v64.cumsum(2) / n + sm64 * sp64 * c64).backward(g.double())
    for name, ref, auto in zip(("dc", "dv", "ds_prob", "ds_mix"), want, (c64, v64, sp64, sm64)):
        torch.testing.assert_close(ref, auto.grad, rtol=1e-10, atol=1e-10, msg=name)
    torch.testing.assert_close(out, scm.causal_mix_ref(c, v, sp, sm, out_dtype=dtype), **TOL[dtype])


def test_matches_sea_torch_path_gradients():
    """The same gradients as autograd through SEA's tensor ops (stage_mix without the kernel)."""
    T, D = 130, 24
    c, v, sp, sm = inputs(T, D, torch.float32, seed=9)
    g = torch.randn(c.shape, generator=torch.Generator().manual_seed(2))
    got = run(c, v, sp, sm, torch.float32, g)
    leaves = [x.clone().requires_grad_() for x in (c, v, sp, sm)]
    out, _ = sea_torch_path(*leaves, torch.float32)
    out.backward(g)
    torch.testing.assert_close(got[0], out.detach(), rtol=2e-6, atol=2e-6)
    for name, a, leaf in zip(("dc", "dv", "ds_prob", "ds_mix"), got[1:], leaves):
        torch.testing.assert_close(a, leaf.grad, rtol=2e-5, atol=2e-5, msg=name)


def test_partial_inputs_and_expanded_v():
    """Only some inputs need a gradient; v as an expanded view (grouped-query heads) gets its summed gradient."""
    T, D = 40, 16
    c, v, sp, sm = inputs(T, D, torch.float32, seed=4)
    vk = v[:, :1].clone().requires_grad_()                              # [B, 1, T, D] shared by all heads
    spl = sp.clone().requires_grad_()
    g = torch.randn(c.shape, generator=torch.Generator().manual_seed(3))
    causal_mix_grad(c, vk.expand_as(v), spl, sm, out_dtype=torch.float32).backward(g)
    _, dv, dsp, _ = causal_mix_grad_ref(g, c, vk.detach().expand_as(v), sp, sm)
    torch.testing.assert_close(vk.grad.double(), dv.sum(1, keepdim=True), rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(spl.grad.double(), dsp, rtol=2e-5, atol=2e-5)


def test_refusals():
    c, v, sp, sm = inputs(8, MAX_D + 1, torch.float32)
    with pytest.raises(ValueError, match="head dim"):
        causal_mix_grad(c, v, sp, sm, out_dtype=torch.float32)
    c, v, sp, sm = inputs(8, 8, torch.float32)
    with pytest.raises(ValueError, match="float64"):
        causal_mix_grad(c.double(), v, sp, sm, out_dtype=torch.float32)
    with pytest.raises(ValueError, match="s_mix"):
        causal_mix_grad(c, v, sp, sm[:, :, :4], out_dtype=torch.float32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_against_sea_torch_path_and_timing(monkeypatch):
    """SEA's 32k causal size (B=1, H=16, D=64, bf16) with the shipped constants: gradients against autograd through
    SEA's torch path; prints the forward+backward time of both (ms per call, the harness's timer)."""
    from harness.measure import time_cuda
    from tests.test_sea_causal_mix import SHIPPED

    for name, val in SHIPPED.items():
        monkeypatch.setattr(scm, name, val)
    monkeypatch.setattr(scm, "POISON_OUTPUTS", False)
    T = 32768
    c, v, sp, sm = inputs(T, 64, torch.bfloat16, seed=0, b=1, h=16, device="cuda")
    g = torch.randn(c.shape, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1)).to(c.dtype)
    leaves = [x.clone().requires_grad_() for x in (c, v, sp, sm)]

    def torch_step():
        out, _ = sea_torch_path(*leaves, torch.bfloat16)
        return torch.autograd.grad(out, leaves, g)

    def kernel_step():
        return torch.autograd.grad(causal_mix_grad(*leaves, out_dtype=torch.bfloat16), leaves, g)

    for name, a, b in zip(("dc", "dv", "ds_prob", "ds_mix"), kernel_step(), torch_step()):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-3 * (1 + b.abs().max().item()), msg=name)
    t_torch = time_cuda(torch_step, rep_ms=50).median_ms
    t_kernel = time_cuda(kernel_step, rep_ms=50).median_ms
    print(f"\ncausal mix forward+backward T={T}: SEA torch path {t_torch:.3f} ms, causal_mix_grad {t_kernel:.3f} ms")
