"""sea.mix_backend=kernel: SEA's causal cumulative mean of v and the mix (out = s_mix s_prob c + (1 - s_mix) C_avg) by
kernels/sea_causal_mix.py inside the layer, whole and in query blocks (the running sum of v carried through the
kernel), against the tensor-op mix of the same layer; refusals. The kernel runs under TRITON_INTERPRET=1 on CPU
(tests/conftest.py)."""
from __future__ import annotations

import pytest
import torch

import kernels.sea_causal_mix as cm
from methods.base import Problem, get
from tests.helpers import gaussian_qkv, sea_case
from tests.helpers import untie_sea_decoder as untie

B, H, Hkv, T, D = 2, 4, 2, 70, 16


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    monkeypatch.setattr(cm, "POISON_OUTPUTS", True)
    monkeypatch.setattr(cm, "CHUNK", 16)                 # several chunks and scan steps at T = 70


def build(causal=True, **opts):
    return sea_case(B, H, Hkv, T, D, causal=causal, **dict(dict(backend="torch", max_len=256), **opts))


def qkv(seed=0):
    return gaussian_qkv(B, H, Hkv, T, D, seed=seed, dtype=torch.float32)


@pytest.mark.parametrize("query_chunk", [0, 24])
def test_layer_mix_kernel_matches_tensor_ops(query_chunk):
    M, cfg, prob = build(mix_backend="kernel", query_chunk=query_chunk)
    assert M.supports(prob, cfg) == []
    got_mod = untie(M.build(cfg, prob, seed=2))
    M2, cfg2, _ = build()
    want_mod = M2.build(cfg2, prob, seed=2)
    want_mod.load_state_dict(got_mod.state_dict())
    q, k, v = qkv(3)
    with torch.no_grad():
        got = got_mod(q, k, v, causal=True)
        want = want_mod(q, k, v, causal=True)
    assert "mix=kernel" in got_mod.impl and "mix=" not in want_mod.impl
    if query_chunk:
        assert "query_blocks=3x24" in got_mod.impl
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_layer_mix_kernel_gradients_match_tensor_ops():
    """With gradients the kernel's backward (kernels/sea_causal_mix_grad.py) runs in the layer: the output and the
    gradients to q, k, v and the estimator's parameters are the tensor-op mix's, up to summation order."""
    M, cfg, prob = build(mix_backend="kernel")
    got_mod = M.build(cfg, prob, seed=2)
    M2, cfg2, _ = build()
    want_mod = M2.build(cfg2, prob, seed=2)
    want_mod.load_state_dict(got_mod.state_dict())
    results = []
    for mod in (got_mod, want_mod):
        q, k, v = (x.requires_grad_() for x in qkv(6))
        out = mod(q, k, v, causal=True)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(7)))
        params = {n: p.grad for n, p in mod.estimator.named_parameters() if p.grad is not None}
        results.append((out.detach(), q.grad, k.grad, v.grad, params))
    assert "mix=kernel" in got_mod.impl and "mix=" not in want_mod.impl
    (*got, got_p), (*want, want_p) = results
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert set(got_p) == set(want_p) and {"scaler.weight", "enc.0.weight"} <= set(got_p)
    for name in want_p:
        torch.testing.assert_close(got_p[name], want_p[name], rtol=1e-4, atol=1e-5, msg=name)


def test_stage_profile_runs_the_kernel():
    M, cfg, prob = build(mix_backend="kernel")
    mod = M.build(cfg, prob, seed=2)
    q, k, v = qkv(4)
    ms = mod.stage_profile(q, k, v, causal=True, timer=lambda fn: (fn(), 1.0)[1])
    assert set(ms) >= {"estimator", "topk", "interpolate", "sparse_attention", "mix"}
    assert "mix=kernel" in mod.impl


def test_refusals(monkeypatch):
    M, cfg, _ = build(mix_backend="kernel")
    bidir = Problem(B, H, Hkv, T, D, dtype="fp32", causal=False, device="cpu")
    assert any("mix_backend=kernel" in r and "bidirectional" in r for r in M.supports(bidir, cfg))
    back = Problem(B, H, Hkv, T, D, dtype="fp32", causal=True, device="cpu", backward=True)
    assert M.supports(back, cfg) == []                   # the kernel has a backward
    wide = Problem(B, H, Hkv, T, 288, dtype="fp32", causal=True, device="cpu", backward=True)
    assert any("mix_backend=kernel's backward" in r and "288" in r for r in M.supports(wide, cfg))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    cpu = Problem(B, H, Hkv, T, D, dtype="fp32", causal=True, device="cpu")
    assert any("mix_backend=kernel needs a CUDA device" in r for r in M.supports(cpu, cfg))


def test_auto_is_the_kernel_on_cuda_only():
    """mix_backend=auto (the default): the kernel on CUDA, the tensor ops on the CPU even under the interpreter,
    and never a refusal (bidirectional calls take the tensor ops)."""
    M, cfg, prob = build()
    assert cfg["mix_backend"] == "auto"
    mod = M.build(cfg, prob, seed=2)
    assert mod.mix_kernel_usable("cuda") and not mod.mix_kernel_usable("cpu")
    q, k, v = qkv(5)
    with torch.no_grad():
        mod(q, k, v, causal=True)
    assert "mix=" not in mod.impl
    for causal, backward in ((False, False), (True, True)):
        other = Problem(B, H, Hkv, T, D, dtype="fp32", causal=causal, device="cpu", backward=backward)
        assert M.supports(other, cfg) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_defaults_run_rows_kernel_and_mix_kernel():
    """On CUDA the defaults (backend=auto, mix_backend=auto) run the rows kernel and the mix kernel in a forward
    without gradients, and give the tensor-op mix on the row kernel's output up to summation order."""
    M = get("sea")
    T2 = 4096
    prob = Problem(1, 4, 4, T2, 64, dtype="bf16", causal=True, device="cuda")
    cfg = M.resolve_config({})
    ref_cfg = M.resolve_config(dict(backend="triton", mix_backend="torch"))
    mod = M.build(cfg, prob, seed=0).cuda()
    ref = M.build(ref_cfg, prob, seed=0).cuda()
    ref.load_state_dict(mod.state_dict())
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 4, T2, 64, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    with torch.no_grad():
        got = mod(q, k, v, causal=True)
        want = ref(q, k, v, causal=True)
    assert "sparse=triton_rows" in mod.impl and "mix=kernel" in mod.impl, mod.impl
    assert "mix=" not in ref.impl
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)
