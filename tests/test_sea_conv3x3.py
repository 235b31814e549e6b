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
    cuDNN's fused convolution: at most one bf16 step apart; then SEA's 8k forward with CONV_BACKEND triton, with
    CONV_TAIL (cuDNN's first two convolutions) and with neither: errors against exact attention within 1 % of each
    other (the estimate's roundings may move a few selections)."""
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
        for backend, tail in (("triton", False), ("cudnn", True), ("cudnn", False)):
            monkeypatch.setattr(est_mod, "CONV_BACKEND", backend)
            monkeypatch.setattr(est_mod, "CONV_TAIL", tail)
            torch._dynamo.reset()
            out[backend, tail] = layer(q, k, v, causal=False).float()
            assert ("tail=conv-fused" in layer.impl) is tail
    exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    err = {n: ((o - exact).norm() / exact.norm()).item() for n, o in out.items()}
    base = err["cudnn", False]
    assert all(abs(e - base) <= 0.01 * base for e in err.values()), err


@pytest.mark.parametrize("B,H,C,T2,W,R,split,block_r", [
    (1, 2, 8, 8, 8, 4, 1, 2),          # one program a block
    (2, 3, 12, 12, 5, 8, 2, 2),        # two parts a block, W and H not 2^n, two batches
    (1, 2, 8, 6, 8, 6, 3, 1),          # RH = 3: three parts of one half-row
    (1, 2, 8, 8, 8, 8, 3, 2),          # TAIL_SPLIT 3 does not divide RH = 4: two parts
    (1, 16, 64, 32, 64, 64, 4, 2),     # SEA's widths
])
def test_conv_pooled_scores_equal_the_two_kernels_and_the_statement(monkeypatch, B, H, C, T2, W, R, split, block_r):
    """conv_pooled_scores against the unfused chain (conv3x3, then kernels/sea_bidir_tail.py's pooled_scores) with
    the same tiles (the same fp32 sums for each logit): equal within fp32 rounding of the block sums; against the
    float64 convolution rounded to bf16 and sea_bidir_tail's reference within a bf16 step of a few logits (a sum
    near a rounding boundary may round the other way in fp32)."""
    import kernels.sea_bidir_tail as bt

    monkeypatch.setattr(kc, "POISON_OUTPUTS", True)
    monkeypatch.setattr(kc, "TAIL_SPLIT", split)
    monkeypatch.setattr(kc, "TAIL_BLOCK_R", block_r)
    monkeypatch.setattr(kc, "BLOCK_R", block_r)
    g = torch.Generator().manual_seed(B + H + C + T2 + W + R)
    x = torch.randn(B, T2, W, C, generator=g).to(torch.bfloat16).permute(0, 3, 1, 2)
    w = torch.randn(2 * H, C, 3, 3, generator=g) / 4
    wp = kc.pack_weight(w, torch.bfloat16)
    for _ in range(2):                                                   # the second call: tickets back at 0
        got = kc.conv_pooled_scores(x, wp, heads=H, rows=R)
        assert got.shape == (B, H, 2 * T2 // R, 2 * W) and got.dtype == torch.float32
        two = bt.pooled_scores(kc.conv3x3(x, wp, None), heads=H, rows=R)
        torch.testing.assert_close(got, two, rtol=1e-5, atol=1e-6)
    y64 = F.conv2d(x.double(), wp.double().reshape(3, 3, C, 2 * H).permute(3, 2, 0, 1), padding=1)
    want = bt.pooled_scores_reference(y64.to(torch.bfloat16), heads=H, rows=R)
    torch.testing.assert_close(got, want, rtol=0, atol=5e-3)
    torch.testing.assert_close(got.sum(-1), torch.full_like(got[..., 0], float(R)), rtol=1e-5, atol=1e-5)
    moved = w.clone()
    moved[H, 0, 1, 1] += 1.0                                             # head 0's odd rows only
    other = kc.conv_pooled_scores(x, kc.pack_weight(moved, torch.bfloat16), heads=H, rows=R)
    assert not torch.allclose(other[:, 0], got[:, 0]) and torch.equal(other[:, 1:], got[:, 1:])


def test_conv_pooled_scores_refusals():
    x = torch.randn(1, 8, 4, 8).to(torch.bfloat16)
    wp = kc.pack_weight(torch.randn(4, 8, 3, 3), torch.bfloat16)
    with pytest.raises(ValueError, match="2H"):
        kc.conv_pooled_scores(x, wp, heads=3, rows=4)
    with pytest.raises(ValueError, match="rows=3"):
        kc.conv_pooled_scores(x, wp, heads=2, rows=3)
    with pytest.raises(ValueError, match="rows=16"):
        kc.conv_pooled_scores(x, wp, heads=2, rows=16)
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        kc.conv_pooled_scores(x.float(), wp, heads=2, rows=4)


def test_estimator_conv_tail_gives_the_block_scores_of_the_two_kernels(monkeypatch):
    """SEA's bidirectional estimator with shared keys (pooled block scores), the decoder on the Triton convolutions
    (CONV_BACKEND=triton; conv_relu's path forced onto the CPU, where the interpreter runs the kernels): the last
    convolution and the tail in one kernel (CONV_TAIL) against the two kernels, the same call and weights; the
    layer's impl says which ran."""
    from tests.helpers import pooled_bidir_sea

    monkeypatch.setattr(est_mod, "BIDIR_TAIL", True)
    monkeypatch.setattr(est_mod, "CONV_BACKEND", "triton")
    monkeypatch.setattr(est_mod, "uses_conv_relu", lambda x, *m: x.dtype == torch.bfloat16)
    layer, q, k, v = pooled_bidir_sea(monkeypatch)
    outs = {}
    with torch.no_grad():
        for fused in (True, False):
            monkeypatch.setattr(est_mod, "CONV_TAIL", fused)
            outs[fused] = layer.estimator(q, k, v, valid=None, probs=True, pool=16)
            assert layer.estimator.last_tail == ("conv-fused" if fused else "kernel")
            layer(q, k, v, causal=False)
            assert ("tail=conv-fused" in layer.impl) is fused
    (lf, af, sf, mf), (lw, aw, sw, mw) = outs[True], outs[False]
    assert lf is None and lw is None and af.shape == aw.shape == (1, 4, 4, 16)
    torch.testing.assert_close(af, aw, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sf, sw, atol=0, rtol=0)
    torch.testing.assert_close(mf, mw, atol=0, rtol=0)
