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


@pytest.mark.parametrize("backend", ["triton", "torch", "triton-sequential"])
@pytest.mark.parametrize("T", [37, 32, 5])
def test_matches_prefix_sum_formula(backend, T):
    # T=37: not a multiple of the chunk (16); T=32: exact multiple; T=5: shorter than one chunk
    kw = dict(backend="triton", algo="sequential") if backend == "triton-sequential" else dict(backend=backend)
    _check(*_inputs(T, 16, 16), chunk=16, **kw)


def test_parallel_groups_of_chunks():
    # chunks of 16: T=77 -> 5 chunks, group=2 -> 3 stored states (the last group has one chunk).
    # Exercises the scan over groups, the in-group chunks
    # before/after the current one (forward, and the reverse passes of backward), GQA and split feature /
    # value blocks (M=20 -> 2 blocks of 16, the second partial; E=24 -> 2)
    _check(*_inputs(77, 20, 24, seed=10), backend="triton", chunk=16, group=2, block_m=16, block_e=16)


def test_parallel_auto_group_bounds_the_stored_states():
    assert la._auto_group(1) == 1
    assert la._auto_group(la.MAX_CHECKPOINTS) == 1
    assert la._auto_group(la.MAX_CHECKPOINTS + 1) == 2
    assert la._auto_group(1024) == 4                    # T=65536, chunk 64
    for n in (1, 7, 300, 1024, 5000):
        g = la._auto_group(n)
        assert -(-n // g) <= la.MAX_CHECKPOINTS and (g == 1 or -(-n // (g // 2)) > la.MAX_CHECKPOINTS)


def test_parallel_state_memory_is_per_group(monkeypatch):
    # the stored states are [B, Hs, cdiv(chunks, group), K, N]: record the buffers the forward allocates
    shapes = []
    real = la._new_buffer

    def spy(shape, device):
        shapes.append(tuple(shape))
        return real(shape, device)

    monkeypatch.setattr(la, "_new_buffer", spy)
    fq, fk, v = (t.float() for t in _inputs(77, 16, 24))
    causal_linear_attention(fq, fk, v, backend="triton", chunk=16, group=2)
    assert (B, HKV, 3, 16, 24) in shapes                 # states per kv head, 3 groups of 2 chunks
    assert (B, HKV, 3, 16) in shapes                     # key sums
    assert (B, H, 77, 24) in shapes and (B, H, 77) in shapes


def test_triton_sequential_split_feature_and_value_blocks():
    # algo="sequential": M=40 over blocks of 16 -> 3 feature blocks (partial sums), E=24 -> 2 value blocks
    # (den written once). The parallel form's split blocks: test_parallel_groups_of_chunks
    _check(*_inputs(21, 40, 24, seed=3), backend="triton", chunk=16, block_m=16, block_e=16, algo="sequential")


def test_triton_chunk_32_and_no_gqa():
    # T=77 -> 3 chunks of 32 in one group of 3: the in-group loop visits up to 3 chunks, no scan carry
    _check(*_inputs(77, 16, 20, hkv=H, seed=4), backend="triton", chunk=32, group=3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_half_inputs_accumulate_in_fp32(backend, dtype):
    # the reference sees the same rounded inputs, so only accumulation error remains (fp32) - plus the
    # rounding of the half gradients themselves
    # (Triton: all-half inputs -> half tensor-core dots, the intra-chunk scores and the states rounded to
    # the half dtype before their matmuls; group=2 so the in-group path runs too)
    kw = dict(group=2) if backend == "triton" else {}
    _check(*_inputs(53, 16, 16, seed=5), backend=backend, dtype=dtype, chunk=16,
           rtol=1e-2 if dtype == torch.bfloat16 else 2e-3, **kw)


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
    with pytest.raises(ValueError):
        causal_linear_attention(fq, fk, v, backend="triton", chunk=16, group=0)
    with pytest.raises(ValueError):
        causal_linear_attention(fq, fk, v, backend="triton", chunk=16, algo="scan")


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
        # bf16: the kernel multiplies bf16 operands (fp32 accumulation) where the torch path upcasts, so the
        # outputs carry bf16 rounding (2^-8 relative) too; grads also the rounding of the result
        rtol = 1e-4 if dtype == torch.float32 else (4e-3 if i < 2 else 1e-2)
        assert torch.isfinite(a).all()
        assert (a - r).abs().max() <= rtol * r.abs().max() + 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tf32", [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False),
                                        (torch.float16, False)])
def test_cuda_parallel_matches_torch_at_t4096(dtype, tf32):
    # benchmark sizes, one head group: T=4096 (64 chunks; group=4 forces 16 stored states + in-group work),
    # M=266 (5 feature blocks), E=64, H=16 over Hkv=4; fwd and all grads vs the fp32 torch chunked path
    g = torch.Generator(device="cuda").manual_seed(0)
    fq = torch.rand(1, 16, 4096, 266, device="cuda", generator=g)
    fk = torch.rand(1, 4, 4096, 266, device="cuda", generator=g)
    v = torch.randn(1, 4, 4096, 64, device="cuda", generator=g)
    fq, fk, v = (t.to(dtype) for t in (fq, fk, v))
    xr = [t.float().clone().requires_grad_() for t in (fq, fk, v)]          # same rounded inputs, own leaves
    ref = causal_linear_attention(*xr, backend="torch")
    gn, gd = torch.randn_like(ref[0]), torch.randn_like(ref[1])
    ((ref[0] * gn).sum() + (ref[1] * gd).sum()).backward()
    for group in (None, 4):
        x = [t.detach().clone().requires_grad_() for t in (fq, fk, v)]
        out = causal_linear_attention(*x, backend="triton", tf32=tf32, group=group)
        ((out[0] * gn).sum() + (out[1] * gd).sum()).backward()
        pairs = list(zip(out, ref)) + [(p.grad, pr.grad) for p, pr in zip(x, xr)]
        for name, (a, r) in zip(("num", "den", "dfq", "dfk", "dv"), pairs):
            a, r = a.double(), r.double()
            assert torch.isfinite(a).all(), name
            rel = ((a - r).norm() / r.norm()).item()
            # IEEE fp32: accumulation order only; TF32 / half operands: 10- / 8-bit mantissas in the dots
            lim = 1e-5 if (dtype == torch.float32 and not tf32) else (3e-3 if dtype != torch.bfloat16 else 2e-2)
            assert rel <= lim, f"{name} group={group}: rel L2 {rel:.3g} > {lim:g}"
