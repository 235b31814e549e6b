"""kernels/sea_causal_mix.py: SEA's causal mix (cumulative mean of v, mixed with c and the two scalers) in three
Triton launches. Checked against a float64 re-statement (causal_mix_ref on the same, already rounded, inputs) and
against SEA's own torch path (methods.sea.layer: stage_mix -> average_context -> causal_mean -> chunked_cumsum, then
the addcmul). Triton interpreter on CPU (tests/conftest.py); CHUNK etc. shrunk so T=130 has 9 chunks and the prefix
scan 5 dependent steps, and D=24 splits over two column blocks (and three in the scan)."""
from __future__ import annotations

import types

import pytest
import torch

import kernels.sea_causal_mix as scm
from kernels.sea_causal_mix import causal_mix, causal_mix_ref
from methods.sea.layer import SEAAttention, causal_mean

B, H = 2, 3
SHIPPED = {name: getattr(scm, name) for name in ("CHUNK", "BLOCK_D_MAX", "SCAN_BLOCK_D", "SCAN_STEPS")}
# kernel fp32 sums vs float64 (summation order differs, fp32 rounding): tight; bf16 outputs: one bf16 step (the
# interpreter's cast truncates, CUDA rounds to nearest) -> rtol 2^-7
TOL = {torch.float32: dict(rtol=2e-6, atol=2e-6), torch.bfloat16: dict(rtol=8e-3, atol=1e-5),
       torch.float16: dict(rtol=1e-3, atol=1e-5)}


@pytest.fixture(autouse=True)
def small(monkeypatch):
    monkeypatch.setattr(scm, "CHUNK", 16)
    monkeypatch.setattr(scm, "BLOCK_D_MAX", 16)
    monkeypatch.setattr(scm, "SCAN_BLOCK_D", 8)
    monkeypatch.setattr(scm, "SCAN_STEPS", 2)
    monkeypatch.setattr(scm, "POISON_OUTPUTS", True)


def inputs(T, D, dtype, seed=0, b=B, h=H, device="cpu"):
    """c, v [b, h, T, D] in dtype (v offset from zero so the running sums grow), s_prob, s_mix fp32 [b, h, T, 1]."""
    g = torch.Generator(device=device).manual_seed(seed)
    c = torch.randn(b, h, T, D, generator=g, device=device).to(dtype)
    v = (torch.randn(b, h, T, D, generator=g, device=device) + 0.5).to(dtype)
    sp = torch.rand(b, h, T, 1, generator=g, device=device)
    sm = torch.rand(b, h, T, 1, generator=g, device=device)
    return c, v, sp, sm


def sea_torch_path(c, v, sp, sm, out_dtype):
    """SEA's own causal mix: SEAAttention.stage_mix (average_context -> causal_mean(vr.float(), None), addcmul)."""
    layer = types.SimpleNamespace()
    layer.average_context = lambda *a, **kw: SEAAttention.average_context(layer, *a, **kw)
    layer.mix_kernel = lambda *a, **kw: False          # the tensor ops, not mix_backend=kernel
    out, c_avg, avg_w = SEAAttention.stage_mix(layer, c, None, sp, sm, v, causal=True, valid=None,
                                               out_dtype=out_dtype)
    assert avg_w is None
    return out, c_avg


@pytest.mark.parametrize("T, D", [(37, 16), (130, 24)])
@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_matches_float64_reference(T, D, in_dtype, out_dtype):
    c, v, sp, sm = inputs(T, D, in_dtype, seed=T + D)
    out, c_avg, v_sum = causal_mix(c, v, sp, sm, out_dtype=out_dtype, want_c_avg=True, want_v_sum=True)
    want, want_avg, want_sum = causal_mix_ref(c.double(), v.double(), sp.double(), sm.double(),
                                              out_dtype=torch.float64, want_c_avg=True, want_v_sum=True)
    assert out.shape == (B, H, T, D) and out.dtype == out_dtype
    assert c_avg.shape == (B, H, T, D) and c_avg.dtype == torch.float32
    assert v_sum.shape == (B, H, D) and v_sum.dtype == torch.float32
    torch.testing.assert_close(out.double(), want, **TOL[out_dtype])
    torch.testing.assert_close(c_avg.double(), want_avg, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(v_sum.double(), want_sum, rtol=2e-6, atol=1e-5)
    # the plain call returns out alone, the same values
    torch.testing.assert_close(causal_mix(c, v, sp, sm, out_dtype=out_dtype), out, rtol=0, atol=0)


def test_reference_is_the_formula():
    """causal_mix_ref in float64 against the formula written with an explicit loop over rows (row0, v_sum0 set)."""
    T, D, row0 = 7, 5, 11
    c, v, sp, sm = (x.double() for x in inputs(T, D, torch.float32, seed=3))
    v0 = torch.randn(B, H, D, dtype=torch.float64)
    out, c_avg, v_sum = causal_mix_ref(c, v, sp, sm, out_dtype=torch.float64, row0=row0, v_sum0=v0,
                                       want_c_avg=True, want_v_sum=True)
    run = v0.clone()                                                      # [B, H, D]
    for t in range(T):
        run = run + v[:, :, t]
        avg = run / (row0 + t + 1)                                        # [B, H, D]
        want = (1 - sm[:, :, t]) * avg + sm[:, :, t] * sp[:, :, t] * c[:, :, t]
        torch.testing.assert_close(c_avg[:, :, t], avg, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out[:, :, t], want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(v_sum, run, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_sea_torch_path(dtype):
    """Against SEA's stage_mix itself (T=130 > 64: its chunked_cumsum chunks), out in the layer's dtype (q's)."""
    T, D = 130, 24
    c, v, sp, sm = inputs(T, D, dtype, seed=7)
    want, want_avg = sea_torch_path(c, v, sp, sm, dtype)
    out, c_avg, v_sum = causal_mix(c, v, sp, sm, out_dtype=dtype, want_c_avg=True)
    assert v_sum is None and out.dtype == dtype
    torch.testing.assert_close(c_avg, want_avg, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(c_avg, causal_mean(v.float(), None), rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(out.float(), want.float(), **TOL[dtype])


@pytest.mark.parametrize("split", [45, 64])
def test_query_blocks_equal_one_call(split):
    """Rows 0..split-1 then split..T-1 (v_sum0 = the first call's v_sum) equal the whole call; split=64 is on a
    chunk boundary, 45 is not. A third call of zero rows passes v_sum through."""
    T, D = 130, 24
    c, v, sp, sm = inputs(T, D, torch.float32, seed=11)
    whole, whole_avg, whole_sum = causal_mix(c, v, sp, sm, out_dtype=torch.float32, want_c_avg=True,
                                             want_v_sum=True)
    a, a_avg, a_sum = causal_mix(c[:, :, :split], v[:, :, :split], sp[:, :, :split], sm[:, :, :split],
                                 out_dtype=torch.float32, want_c_avg=True, want_v_sum=True)
    b, b_avg, b_sum = causal_mix(c[:, :, split:], v[:, :, split:], sp[:, :, split:], sm[:, :, split:],
                                 out_dtype=torch.float32, row0=split, v_sum0=a_sum, want_c_avg=True,
                                 want_v_sum=True)
    torch.testing.assert_close(torch.cat([a, b], 2), whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.cat([a_avg, b_avg], 2), whole_avg, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b_sum, whole_sum, rtol=1e-6, atol=1e-5)
    # and the blocks against the float64 statement of the whole sequence
    want = causal_mix_ref(c.double(), v.double(), sp.double(), sm.double(), out_dtype=torch.float64)
    torch.testing.assert_close(b.double(), want[:, :, split:], **TOL[torch.float32])
    e, _, e_sum = causal_mix(c[:, :, :0], v[:, :, :0], sp[:, :, :0], sm[:, :, :0], out_dtype=torch.float32,
                             row0=T, v_sum0=b_sum, want_v_sum=True)
    assert e.shape == (B, H, 0, D)
    torch.testing.assert_close(e_sum, b_sum, rtol=0, atol=0)


def test_bf16_query_blocks_with_v_sum0_and_row0():
    """bf16 c / v, a block starting at row0 with a given v_sum0, against the float64 statement."""
    T, D, row0 = 37, 16, 1000
    c, v, sp, sm = inputs(T, D, torch.bfloat16, seed=5)
    v0 = torch.randn(B, H, D) * 30                                        # [B, H, D]
    out, _, v_sum = causal_mix(c, v, sp, sm, out_dtype=torch.bfloat16, row0=row0, v_sum0=v0, want_v_sum=True)
    want, _, want_sum = causal_mix_ref(c.double(), v.double(), sp.double(), sm.double(), out_dtype=torch.float64,
                                       row0=row0, v_sum0=v0.double(), want_v_sum=True)
    torch.testing.assert_close(out.double(), want, **TOL[torch.bfloat16])
    torch.testing.assert_close(v_sum.double(), want_sum, rtol=2e-6, atol=1e-5)


def test_strided_inputs():
    """v an expanded GQA view (stride 0 over heads), c a transposed copy, scalers slices of a wider tensor."""
    T, D = 37, 24
    c, _, sp, sm = inputs(T, D, torch.float32, seed=2)
    g = torch.Generator().manual_seed(9)
    vk = torch.randn(B, 1, T, D, generator=g)
    v = vk.expand(B, H, T, D)                                             # [B, H, T, D], stride 0 on H
    ct = c.transpose(2, 3).contiguous().transpose(2, 3)                   # [B, H, T, D], D stride T
    spw = torch.cat([sp, torch.full_like(sp, float("nan"))], -1)[..., :1]  # [B, H, T, 1], stride 2 on T
    out = causal_mix(ct, v, spw, sm, out_dtype=torch.float32)
    want = causal_mix_ref(c.double(), v.double(), sp.double(), sm.double(), out_dtype=torch.float64)
    torch.testing.assert_close(out.double(), want, **TOL[torch.float32])


def test_outputs_start_poisoned_and_every_element_is_written():
    """With POISON_OUTPUTS the fresh buffers are NaN; after the call no NaN is left (T=130: a partial last chunk,
    D=24: a partial last column block)."""
    assert torch.isnan(scm.fresh((2,), torch.bfloat16, "cpu", poison=scm.POISON_OUTPUTS)).all()
    c, v, sp, sm = inputs(130, 24, torch.bfloat16, seed=1)
    out, c_avg, v_sum = causal_mix(c, v, sp, sm, out_dtype=torch.bfloat16, want_c_avg=True, want_v_sum=True)
    for x in (out, c_avg, v_sum):
        assert torch.isfinite(x).all()


def test_refuses_gradients():
    c, v, sp, sm = inputs(37, 16, torch.float32)
    for i in range(4):
        args = [c, v, sp, sm]
        args[i] = args[i].clone().requires_grad_(True)
        with pytest.raises(RuntimeError, match="forward-only"):
            causal_mix(*args, out_dtype=torch.float32)
    with torch.no_grad():                                                 # no gradient wanted: runs
        out = causal_mix(c.clone().requires_grad_(True), v, sp, sm, out_dtype=torch.float32)
    assert out.shape == c.shape


def test_refuses_bad_arguments(monkeypatch):
    c, v, sp, sm = inputs(37, 16, torch.float32)
    bad = [
        (dict(v=v[:, :2]), "c and v must both be"),
        (dict(c=c[0]), "c and v must both be"),
        (dict(c=c.double()), "float64"),
        (dict(v=v.int()), "v dtype"),
        (dict(out_dtype=torch.int32), "out_dtype"),
        (dict(out_dtype="bf16"), "out_dtype"),
        (dict(s_prob=sp.bfloat16()), "s_prob must be float32"),
        (dict(s_mix=sm[:, :, :-1]), "s_mix must be float32"),
        (dict(row0=-1), "row0"),
        (dict(row0=True), "row0"),
        (dict(v_sum0=torch.zeros(B, H, 15)), "v_sum0 must be"),
        (dict(v_sum0=torch.zeros(B, H, 16, dtype=torch.bfloat16)), "v_sum0 must be"),
    ]
    for change, words in bad:
        kw = dict(c=c, v=v, s_prob=sp, s_mix=sm, out_dtype=torch.float32)
        kw.update(change)
        with pytest.raises(ValueError, match=words):
            causal_mix(kw.pop("c"), kw.pop("v"), kw.pop("s_prob"), kw.pop("s_mix"), **kw)
    big = torch.zeros(1, 65536, 1, 1)                                     # B * H past the grid's second axis
    with pytest.raises(ValueError, match="at most 65535"):
        causal_mix(big, big, big, big, out_dtype=torch.float32)
    monkeypatch.setattr(scm, "CHUNK", 24)
    with pytest.raises(ValueError, match="CHUNK=24 must be a power of two"):
        causal_mix(c, v, sp, sm, out_dtype=torch.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [65536, 262144])
def test_gpu_against_sea_torch_path_and_timing(monkeypatch, T):
    """H200-size call (B=1, H=16, D=64, bf16) against SEA's torch path; prints both times (ms per call)."""
    from harness.measure import time_cuda

    for name, val in SHIPPED.items():                                    # the shipped constants, not the small ones
        monkeypatch.setattr(scm, name, val)
    monkeypatch.setattr(scm, "POISON_OUTPUTS", False)
    c, v, sp, sm = inputs(T, 64, torch.bfloat16, seed=0, b=1, h=16, device="cuda")
    with torch.no_grad():
        want, want_avg = sea_torch_path(c, v, sp, sm, torch.bfloat16)
        out, c_avg, v_sum = causal_mix(c, v, sp, sm, out_dtype=torch.bfloat16, want_c_avg=True, want_v_sum=True)
        torch.testing.assert_close(c_avg, want_avg, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.float(), want.float(), rtol=8e-3, atol=1e-4)
        torch.testing.assert_close(v_sum, v.float().sum(2), rtol=1e-4, atol=1e-2)
        s = T // 3                                                        # a query block against the whole call
        b = causal_mix(c[:, :, s:], v[:, :, s:], sp[:, :, s:], sm[:, :, s:], out_dtype=torch.float32, row0=s,
                       v_sum0=v[:, :, :s].float().sum(2))
        torch.testing.assert_close(b, causal_mix(c, v, sp, sm, out_dtype=torch.float32)[:, :, s:], rtol=1e-4,
                                   atol=1e-5)

        def ms(fn):                                                  # the harness's timer (median, L2 flushed)
            return time_cuda(fn, rep_ms=50).median_ms

        t_torch = ms(lambda: sea_torch_path(c, v, sp, sm, torch.bfloat16))
        t_kernel = ms(lambda: causal_mix(c, v, sp, sm, out_dtype=torch.bfloat16))
        t_kernel_avg = ms(lambda: causal_mix(c, v, sp, sm, out_dtype=torch.bfloat16, want_c_avg=True))
    print(f"\ncausal mix T={T}: SEA torch path {t_torch:.3f} ms, causal_mix {t_kernel:.3f} ms, "
          f"with c_avg {t_kernel_avg:.3f} ms")
