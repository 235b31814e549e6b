"""kernels/sea_conv3x3.py: the 3x3 convolution over channels-last 16-bit activations (Triton under TRITON_INTERPRET=1
on CPU, tests/conftest.py) against a float64 statement rounded once, with a bound from the fp32 sums' error; time
strides 1 and 2, widths and channel counts not powers of two, odd T, batches, bias / no bias, ReLU / none, the
packed weights' layout, inputs in another layout, refusals; the decoder's body through it (CONV_BACKEND=triton);
on the GPU against cuDNN's fused convolution and in SEA's estimator."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import kernels.sea_conv3x3 as kc
import methods.sea.estimator as est_mod


def _statement(x, w, b, stride, relu):
    """float64 conv2d of x with the 16-bit-rounded weights (what the kernel multiplies), and the sum of |terms|
    (the scale of the fp32 sums' error)."""
    wq = w.to(x.dtype).double()
    want = F.conv2d(x.double(), wq, None if b is None else b.double(), stride=(stride, 1), padding=1)
    scale = F.conv2d(x.double().abs(), wq.abs(), None if b is None else b.double().abs(), stride=(stride, 1),
                     padding=1)
    return (want.relu() if relu else want), scale


def _check(got, want, scale, dtype):
    """got must be want rounded once to dtype, up to the fp32 sums' error: |got - want| <= half a step of got's
    dtype at |want| + 1e-4 x sum |terms| (576 fp32 additions: ~3.4e-5)."""
    eps = torch.finfo(dtype).eps
    tiny = torch.finfo(dtype).tiny
    bound = 0.5 * eps * torch.maximum(want.abs(), torch.full_like(want, tiny)) * 1.0001 + 1e-4 * scale
    assert not torch.isnan(got).any()
    err = (got.double() - want).abs()
    assert (err <= bound).all(), float((err - bound).max())


@pytest.mark.parametrize("B,C,N,T,W,stride,relu,bias,dtype,block_r", [
    (1, 16, 16, 10, 8, 2, True, True, torch.bfloat16, 2),      # stride 2, even T
    (2, 8, 12, 7, 5, 1, False, True, torch.bfloat16, 2),       # widths / channels not 2^n, odd T, two batches
    (1, 12, 6, 9, 13, 2, True, False, torch.float16, 1),       # fp16, odd T at stride 2, no bias
    (1, 64, 32, 6, 64, 1, False, False, torch.bfloat16, 4),    # SEA's widths (parity conv3), a short last block
    (1, 20, 16, 1, 3, 1, True, True, torch.bfloat16, 2),       # one row: both time taps outside the image
])
def test_conv_equals_the_float64_statement(monkeypatch, B, C, N, T, W, stride, relu, bias, dtype, block_r):
    monkeypatch.setattr(kc, "POISON_OUTPUTS", True)                 # a skipped write is NaN
    monkeypatch.setattr(kc, "BLOCK_R", block_r)
    g = torch.Generator().manual_seed(B + C + N + T + W)
    x = torch.randn(B, T, W, C, generator=g).to(dtype).permute(0, 3, 1, 2)    # channels-last [B, C, T, W]
    w = torch.randn(N, C, 3, 3, generator=g) / 6
    b = torch.randn(N, generator=g) if bias else None
    got = kc.conv3x3(x, kc.pack_weight(w, dtype), b, stride=stride, relu=relu)
    T_out = (T - 1) // stride + 1
    assert got.shape == (B, N, T_out, W) and got.dtype == dtype
    assert got.is_contiguous(memory_format=torch.channels_last)
    want, scale = _statement(x, w, b, stride, relu)
    _check(got, want, scale, dtype)
    if relu:                                                             # the ReLU clipped something
        pre, _ = _statement(x, w, b, stride, False)
        assert (got >= 0).all() and (pre < 0).any()
    moved = w.clone()
    moved[0, 0, 1, 2] += 1.0                                             # one tap of one channel pair
    assert not torch.equal(kc.conv3x3(x, kc.pack_weight(moved, dtype), b, stride=stride, relu=relu)[:, 0], got[:, 0])


def test_pack_weight_layout():
    w = torch.arange(5 * 4 * 9, dtype=torch.float32).reshape(5, 4, 3, 3)
    p = kc.pack_weight(w, torch.bfloat16)
    assert p.shape == (9, 4, 5) and p.dtype == torch.bfloat16 and p.is_contiguous()
    for dy in range(3):
        for dx in range(3):
            assert torch.equal(p[dy * 3 + dx], w[:, :, dy, dx].t().to(torch.bfloat16))


def test_other_layouts_are_copied_and_give_the_same_values():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 8, 6, 5, generator=g).to(torch.bfloat16)       # contiguous NCHW
    wp = kc.pack_weight(torch.randn(8, 8, 3, 3, generator=g), torch.bfloat16)
    got = kc.conv3x3(x, wp, None, stride=2, relu=False)
    assert torch.equal(got, kc.conv3x3(x.contiguous(memory_format=torch.channels_last), wp, None, stride=2))


def test_refusals():
    x = torch.randn(1, 8, 6, 5).to(torch.bfloat16)
    wp = kc.pack_weight(torch.randn(4, 8, 3, 3), torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        kc.conv3x3(x.float(), wp)
    with pytest.raises(ValueError, match="pack_weight"):
        kc.conv3x3(x, wp[:, :4])
    with pytest.raises(ValueError, match="pack_weight"):
        kc.conv3x3(x, wp.half())
    with pytest.raises(ValueError, match="bias"):
        kc.conv3x3(x, wp, torch.zeros(5))
    with pytest.raises(ValueError, match="stride"):
        kc.conv3x3(x, wp, stride=3)
    with pytest.raises(ValueError, match=r"\[N, C, 3, 3\]"):
        kc.pack_weight(torch.randn(4, 8, 5, 5), torch.bfloat16)
    with pytest.raises(RuntimeError, match="forward-only"):
        kc.conv3x3(x.requires_grad_(), wp)


def test_the_decoder_body_through_the_kernel(monkeypatch):
    """BidirectionalDecoder.body with CONV_BACKEND=triton (forced onto the CPU path: the interpreter runs the kernel)
    against a float64 statement of the same three convolutions: bf16 weights and biases, each ReLU output rounded
    to bf16 once; parity=True (no conv3 bias) and the full logits."""
    monkeypatch.setattr(est_mod, "CONV_BACKEND", "triton")
    monkeypatch.setattr(est_mod, "uses_conv_relu", lambda x, *m: True)
    torch.manual_seed(0)
    H, K, T = 2, 16, 10
    dec = est_mod.BidirectionalDecoder(8, H, K)
    x = torch.randn(1, T, K // 2, 4 * H).to(torch.bfloat16).permute(0, 3, 1, 2)

    def q(t):
        return t.to(torch.bfloat16).double()

    with torch.no_grad():
        h = q(F.conv2d(x.double(), q(dec.conv1.weight), q(dec.conv1.bias), stride=(2, 1), padding=1).relu())
        h = q(F.conv2d(h, q(dec.conv2.weight), q(dec.conv2.bias), padding=1).relu())
        w3, b3 = dec.parity_weight()
        want = F.conv2d(h, q(w3), None, padding=1)
        got = dec.body(x, parity=True)
        assert got.shape == (1, 2 * H, T // 2, K // 2) and got.dtype == torch.bfloat16
        scale = F.conv2d(h.abs(), q(w3).abs(), None, padding=1)
        _check(got, want, scale, torch.bfloat16)
        full = dec.body(x)                                                # bias, interleave, width resize
        want_full = est_mod.nearest_resize(est_mod.interleave_parity(q(want + q(b3)[None, :, None, None]), H),
                                           T, K)
        assert full.shape == (1, H, T, K)
        torch.testing.assert_close(full.double(), want_full, atol=0.02, rtol=0.01)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_conv_on_the_gpu_against_cudnn(monkeypatch):
    """At SEA's widths (64 channels, 64 columns, 8k rows) the kernel against the float64 statement, and against
    cuDNN's fused convolution: at most one bf16 step apart; then SEA's 8k forward with CONV_BACKEND triton and cudnn
    as close to each other as the estimate's rounding allows (the same selection almost everywhere)."""
    from methods.sea.estimator import conv_relu
    from tests.helpers import gaussian_qkv, sea_case

    torch.manual_seed(0)
    dt, cl = torch.bfloat16, torch.channels_last
    x = torch.randn(1, 64, 8192, 64, device="cuda").to(dt, memory_format=cl)
    w, b = torch.randn(64, 64, 3, 3, device="cuda") / 24, torch.randn(64, device="cuda") * 0.1
    for stride in (2, 1):
        got = kc.conv3x3(x, kc.pack_weight(w, dt), b.to(dt), stride=stride, relu=True)
        want, scale = _statement(x.cpu(), w.cpu(), b.to(dt).cpu(), stride, True)
        _check(got.cpu(), want, scale, dt)
        ref = conv_relu(x, w.to(dt, memory_format=cl), b.to(dt), [stride, 1], [1, 1])
        step = torch.finfo(dt).eps * ref.float().abs().max()
        assert (got.float() - ref.float()).abs().max() <= step
    M_, cfg, problem = sea_case(1, 16, 16, 8192, 64, causal=False, K=128, performer_dtype="bf16",
                                estimator_precision="tf32", estimator_dtype="bf16", compile="estimator",
                                shared_keys=64)
    layer = M_.build(cfg, dataclasses.replace(problem, device="cuda", dtype="bf16")).cuda()
    q, k, v = (t.cuda() for t in gaussian_qkv(1, 16, 16, 8192, 64, seed=2, dtype=dt))
    out = {}
    with torch.no_grad():
        for backend in ("triton", "cudnn"):
            monkeypatch.setattr(est_mod, "CONV_BACKEND", backend)
            torch._dynamo.reset()
            out[backend] = layer(q, k, v, causal=False).float()
    exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    err = {n: ((o - exact).norm() / exact.norm()).item() for n, o in out.items()}
    assert abs(err["triton"] - err["cudnn"]) <= 0.01 * err["cudnn"], err
