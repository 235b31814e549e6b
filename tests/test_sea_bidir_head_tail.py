"""The bidirectional estimator's fused head (kernels/sea_bidir_head.py: encoder, scaler head and the decoder's row
projection into channels-last memory), its parity-form last convolution (BidirectionalDecoder.parity_weight) and
its fused tail (kernels/sea_bidir_tail.py: the row softmax and block sums) against what each replaces. CPU under
TRITON_INTERPRET=1 at small sizes; on CUDA at SEA's widths."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

import methods.sea.estimator as est_mod  # noqa: E402
from kernels import sea_bidir_head as bh  # noqa: E402
from kernels import sea_bidir_tail as bt  # noqa: E402
from kernels.sea_encoder import encoder_forward  # noqa: E402
from methods.sea.bidir_blocks import decode_window, decoder_window  # noqa: E402


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(bh, "POISON_OUTPUTS", True)
    monkeypatch.setattr(bt, "POISON_OUTPUTS", True)


# --- the tail -----------------------------------------------------------------------------------------------------
def _tail_reference(y, H, R):
    """Written out from the decoder's definition: interleave the parities to T rows, nearest x2 width resize
    (F.interpolate), softmax over the K columns in float64, sums over blocks of R rows."""
    B, C, T2, W = y.shape
    logits = torch.empty(B, H, 2 * T2, W, dtype=torch.float64)
    logits[:, :, 0::2] = y[:, :H].double()
    logits[:, :, 1::2] = y[:, H:].double()
    logits = F.interpolate(logits, size=(2 * T2, 2 * W), mode="nearest")
    return torch.softmax(logits, dim=-1).reshape(B, H, 2 * T2 // R, R, 2 * W).sum(3)


@pytest.mark.parametrize("B,H,T2,W,R", [(1, 2, 8, 8, 4), (2, 3, 12, 5, 8), (1, 4, 16, 16, 32), (1, 2, 9, 4, 6),
                                        (1, 16, 8, 4, 8), (1, 12, 6, 4, 4)])   # few blocks: up to a head a program
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_tail_equals_the_softmax_block_sums(B, H, T2, W, R, layout):
    g = torch.Generator().manual_seed(B * 100 + H * 10 + W)
    y = 3 * torch.randn(B, 2 * H, T2, W, generator=g)
    y[0, 0, 0, 0] = 30.0                                                 # a dominant logit (the maximum matters)
    y = y.to(torch.bfloat16)
    if layout == "channels_last":
        y = y.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    got = bt.pooled_scores(y, heads=H, rows=R)
    want = _tail_reference(y, H, R)
    assert got.dtype == torch.float32 and got.shape == (B, H, 2 * T2 // R, 2 * W)
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(got.sum(-1).double(), torch.full_like(want.sum(-1), float(R)), atol=1e-4, rtol=0)
    torch.testing.assert_close(got, bt.pooled_scores_reference(y, heads=H, rows=R), atol=2e-6, rtol=2e-6)


def test_tail_writes_into_a_slice_in_place():
    """out=: a slice of a longer [B, H, NB, K] tensor gets bit for bit the fresh call's sums; the rest is untouched;
    an out of the wrong shape, dtype or last stride is refused."""
    g = torch.Generator().manual_seed(11)
    y = (3 * torch.randn(1, 6, 12, 5, generator=g)).to(torch.bfloat16)
    fresh = bt.pooled_scores(y, heads=3, rows=8)                         # [1, 3, 3, 10]
    longer = torch.full((1, 3, 7, 10), float("nan"))
    got = bt.pooled_scores(y, heads=3, rows=8, out=longer[:, :, 2:5])
    assert got.data_ptr() == longer[:, :, 2:5].data_ptr()
    assert torch.equal(longer[:, :, 2:5], fresh)
    assert longer[:, :, :2].isnan().all() and longer[:, :, 5:].isnan().all()
    for bad in (torch.empty(1, 3, 2, 10), torch.empty(1, 3, 3, 10, dtype=torch.float64),
                torch.empty(1, 3, 10, 3).transpose(2, 3)):
        with pytest.raises(ValueError, match="out must be"):
            bt.pooled_scores(y, heads=3, rows=8, out=bad)


def test_tail_refuses_bad_input():
    y = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="2H = 6"):
        bt.pooled_scores(y, heads=3, rows=4)
    with pytest.raises(ValueError, match="rows=3"):
        bt.pooled_scores(y, heads=2, rows=3)
    with pytest.raises(ValueError, match="rows=32"):
        bt.pooled_scores(y, heads=2, rows=32)
    with pytest.raises(ValueError, match="floating"):
        bt.pooled_scores(torch.zeros(1, 4, 8, 8, dtype=torch.int32), heads=2, rows=4)
    with torch.enable_grad(), pytest.raises(RuntimeError, match="forward-only"):
        bt.pooled_scores(y.clone().requires_grad_(), heads=2, rows=4)


# --- the parity-form last convolution -----------------------------------------------------------------------------
@pytest.mark.parametrize("T", [32, 33, 17])
@pytest.mark.parametrize("last", [False, True])
def test_parity_conv3_is_the_upsampled_convolution(monkeypatch, T, last):
    torch.manual_seed(T)
    dec = est_mod.BidirectionalDecoder(8, 3, 16)
    z = torch.randn(2, 3, T, 16)
    monkeypatch.setattr(est_mod, "BIDIR_CHANNELS_LAST", last)
    out = {}
    for parity in (False, True):
        monkeypatch.setattr(est_mod, "PARITY_CONV3", parity)
        with torch.no_grad():
            out[parity] = dec(z)
    torch.testing.assert_close(out[True], out[False], atol=1e-6, rtol=1e-5)
    # written out: x2 nearest upsampling of the relu'd conv2 output, then conv3 with padding 1
    with torch.no_grad():
        x = F.relu(dec.conv2(F.relu(dec.conv1(dec.head(z).contiguous()))))
        y = dec.conv3(x.repeat_interleave(2, dim=2))
        parity_y = dec.body(dec.head(z), parity=True)
    bias = dec.conv3.bias[None, :, None, None]                          # left out of the parity form
    torch.testing.assert_close(parity_y[:, :3] + bias, y[:, :, 0::2], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(parity_y[:, 3:] + bias, y[:, :, 1::2], atol=1e-6, rtol=1e-5)
    # rows of a window (query blocks) equal the whole decoder's in the parity form too
    monkeypatch.setattr(est_mod, "PARITY_CONV3", True)
    for s, e in [(0, 5), (3, 11), (T - 7, T), (5, 6)]:
        z0, z1 = decoder_window(T, s, e)
        with torch.no_grad():
            got = decode_window(dec, z[:, :, z0:z1], T=T, s=s, e=e)
        torch.testing.assert_close(got, out[True][:, :, s:e], atol=1e-6, rtol=1e-5)


def test_parity_conv3_under_bf16_autocast_moves_the_logits_by_bf16_roundings(monkeypatch):
    """Under autocast the folded weights (w1 + w2, w0 + w1) round to bf16 once instead of per term."""
    torch.manual_seed(0)
    dec = est_mod.BidirectionalDecoder(16, 4, 32)
    z = torch.randn(1, 4, 64, 32)
    out = {}
    for parity in (False, True):
        monkeypatch.setattr(est_mod, "PARITY_CONV3", parity)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out[parity] = dec(z).float()
    with torch.no_grad():
        exact = dec(z)                                                   # PARITY_CONV3 True, fp32
    err_new, err_old = ((out[p] - exact).abs().mean() for p in (True, False))
    assert err_new < 1.5 * err_old and err_new < 2e-2 * exact.abs().mean()
    with pytest.raises(ValueError, match="PARITY_CONV3"):
        monkeypatch.setattr(est_mod, "PARITY_CONV3", False)
        dec.body(dec.head(z), parity=True)


# --- the head -----------------------------------------------------------------------------------------------------
def _weights(d, K, g):
    return dict(lin_w=torch.randn(2 * d, 3 * d, generator=g) / (3 * d) ** 0.5,
                lin_b=0.1 * torch.randn(2 * d, generator=g),
                ln_w=1 + 0.1 * torch.randn(2 * d, generator=g), ln_b=0.1 * torch.randn(2 * d, generator=g),
                sc_w=torch.randn(2, 2 * d, generator=g) / (2 * d) ** 0.5, sc_b=0.1 * torch.randn(2, generator=g),
                row_w=torch.randn(2 * K, 2 * d, generator=g) / (2 * d) ** 0.5,
                row_b=0.1 * torch.randn(2 * K, generator=g))


def _head(c, v, w, K, precision="tf32x3"):
    return bh.encoder_head(c, v, w["lin_w"], w["lin_b"], w["ln_w"], w["ln_b"], 1e-5, w["sc_w"], w["sc_b"],
                           w["row_w"], w["row_b"], K=K, precision=precision)


def _head_composed(c, v, w, K):
    """What the head replaces: the encoder kernel writing bf16 z, the row projection as a bf16 GEMM (fp32 sums, one
    rounding; bf16 weight and bias, as under autocast) and the permute into [B, T, K/2, 4H]."""
    B, H, T, _ = c.shape
    z, scales = encoder_forward(c, v, w["lin_w"], w["lin_b"], w["ln_w"], w["ln_b"], 1e-5, w["sc_w"], w["sc_b"],
                                z_dtype=torch.bfloat16)
    bf16 = lambda t: t.to(torch.bfloat16).float()  # noqa: E731
    y = bf16(z.double() @ bf16(w["row_w"]).double().T + bf16(w["row_b"]).double())
    # what one bf16 step of every z entry (the two kernels' encoder sums may round z to either neighbour) can move
    # an output by: 2^-8 sum_j |z_j| |w_j|
    slack = 2.0 ** -8 * (z.double().abs() @ w["row_w"].double().abs().T)
    return tuple(t.view(B, H, T, 4, K // 2).permute(0, 2, 4, 1, 3).reshape(B, T, K // 2, 4 * H) for t in (y, slack)) \
        + (scales,)


def _check_head(x, want_x, slack):
    """At most one bf16 step of the output (<= 2^-7 relative) plus what one-step changes of z can do; most equal."""
    diff = (x.permute(0, 2, 3, 1).double() - want_x).abs()
    assert (diff <= 2.0 ** -7 * want_x.abs() + slack + 1e-6).all()
    assert (diff > 0).float().mean() < 0.05


@pytest.mark.parametrize("B,H,T,d,K", [(1, 2, 10, 16, 16), (2, 3, 9, 8, 10), (1, 12, 7, 32, 64), (1, 16, 6, 64, 128)])
def test_head_equals_the_encoder_row_projection_and_permute(B, H, T, d, K):
    g = torch.Generator().manual_seed(B + H + T + d)
    c = torch.randn(B, H, T, 2 * d, generator=g)
    v = torch.randn(B, T, H, d, generator=g).to(torch.bfloat16).transpose(1, 2)   # a strided view, as SEA's v
    w = _weights(d, K, g)
    x, scales = _head(c, v, w, K)
    want_x, slack, want_scales = _head_composed(c, v, w, K)
    assert x.dtype == torch.bfloat16 and x.shape == (B, 4 * H, T, K // 2)
    assert x.permute(0, 2, 3, 1).is_contiguous()                          # channels-last memory
    torch.testing.assert_close(scales, want_scales, atol=1e-6, rtol=1e-6)
    _check_head(x, want_x, slack)


@pytest.mark.parametrize("B,H,T,d,K", [(1, 2, 10, 16, 16), (1, 16, 6, 64, 128)])
@pytest.mark.parametrize("c_dtype", [torch.bfloat16, torch.float32])
def test_head_bf16_operands_equal_the_encoder_on_rounded_operands(B, H, T, d, K, c_dtype):
    """precision="bf16" (SEA's encoder_operands=bf16): the kernel rounds [c ; v] and lin_w to bf16 and sums in fp32;
    the same as the composed path given those rounded values (exact products in fp32 either way, sums in another
    order), and not the same as the fp32-operand head on fp32 c."""
    g = torch.Generator().manual_seed(B + H + T + d + 7)
    c32 = torch.randn(B, H, T, 2 * d, generator=g)
    c = c32.to(c_dtype)
    v = torch.randn(B, T, H, d, generator=g).to(torch.bfloat16).transpose(1, 2)
    w = _weights(d, K, g)
    x, scales = _head(c, v, w, K, precision="bf16")
    rounded = {**w, "lin_w": w["lin_w"].to(torch.bfloat16).float()}
    want_x, slack, want_scales = _head_composed(c32.to(torch.bfloat16).float(), v, rounded, K)
    torch.testing.assert_close(scales, want_scales, atol=1e-6, rtol=1e-6)
    _check_head(x, want_x, slack)
    _, scales32 = _head(c32, v, w, K, precision="ieee")
    assert (scales - scales32).abs().max() > 1e-6                         # the operands were rounded


def test_head_refuses_bad_input():
    g = torch.Generator().manual_seed(0)
    c, v, w = torch.randn(1, 2, 8, 32, generator=g), torch.randn(1, 2, 8, 16, generator=g), _weights(16, 16, g)
    with pytest.raises(ValueError, match="K=15"):
        _head(c, v, w, 15)
    with pytest.raises(ValueError, match="row_w"):
        _head(c, v, w, 32)
    with pytest.raises(ValueError, match="v"):
        _head(c, v[:, :, :4], w, 16)
    with pytest.raises(ValueError, match="float32"):
        _head(c.double(), v, w, 16)
    with pytest.raises(ValueError, match="precision"):
        _head(c, v, w, 16, precision="fp16")
    with torch.enable_grad(), pytest.raises(RuntimeError, match="forward-only"):
        _head(c, v, {**w, "row_b": w["row_b"].clone().requires_grad_()}, 16)


# --- in SEA's estimator -------------------------------------------------------------------------------------------
def test_estimator_head_and_tail_give_the_block_scores_of_the_module_path(monkeypatch):
    """SEA's bidirectional estimator with shared keys (pooled block scores): the fused head and tail against the
    encoder kernel, the PyTorch row projection and the compiled-away softmax sums, the same call, same weights."""
    from tests.helpers import gaussian_qkv, sea_case

    monkeypatch.setattr(est_mod, "BIDIR_CHANNELS_LAST", True)
    M_, cfg, problem = sea_case(1, 4, 4, 64, 16, causal=False, K=16, performer_backend="triton",
                                encoder_backend="triton", estimator_dtype="bf16", shared_keys=16)
    layer = M_.build(cfg, problem)
    q, k, v = gaussian_qkv(1, 4, 4, 64, 16, seed=5, dtype=torch.bfloat16)
    outs = {}
    with torch.no_grad():
        for fused in (True, False):
            monkeypatch.setattr(est_mod, "BIDIR_HEAD", fused)
            monkeypatch.setattr(est_mod, "BIDIR_TAIL", fused)
            outs[fused] = layer.estimator(q, k, v, valid=None, probs=True, pool=16)
            assert layer.estimator.last_encoder == ("triton-head" if fused else "triton")
            assert layer.estimator.last_decoder == ("head-fused" if fused else "torch")
        layer(q, k, v, causal=False)
        assert "encoder=triton-head" not in layer.impl
        monkeypatch.setattr(est_mod, "BIDIR_HEAD", True)
        monkeypatch.setattr(est_mod, "BIDIR_TAIL", True)
        layer(q, k, v, causal=False)
        assert "encoder=triton-head" in layer.impl
    (lf, af, sf, mf), (lw, aw, sw, mw) = outs[True], outs[False]
    assert lf is None and lw is None and af.shape == aw.shape == (1, 4, 4, 16)
    torch.testing.assert_close(sf, sw, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mf, mw, atol=1e-6, rtol=1e-6)
    # the row projection's sums in another order move a bf16 value by one step here and there
    torch.testing.assert_close(af, aw, atol=2e-3, rtol=2e-2)
    assert (af - aw).abs().mean() < 1e-3 * aw.abs().mean()


def test_estimator_bf16_encoder_operands_head_equals_the_torch_restatement(monkeypatch):
    """encoder_operands=bf16: the Performer's output stored in bf16 and the head kernel's bf16 encoder products
    against the PyTorch encoder on the same rounded operands (BIDIR_HEAD off), the same call and weights; and the
    option moves the estimate only by such roundings from the fp32 one. Causal estimators refuse it in words."""
    from tests.helpers import gaussian_qkv, sea_case

    monkeypatch.setattr(est_mod, "BIDIR_CHANNELS_LAST", True)
    q, k, v = gaussian_qkv(1, 4, 4, 64, 16, seed=6, dtype=torch.bfloat16)
    outs = {}
    for operands in ("bf16", "fp32"):
        M_, cfg, problem = sea_case(1, 4, 4, 64, 16, causal=False, K=16, performer_backend="triton",
                                    encoder_backend="triton", estimator_dtype="bf16", shared_keys=16,
                                    encoder_operands=operands)
        layer = M_.build(cfg, problem)
        with torch.no_grad():
            for fused in ((True, False) if operands == "bf16" else (True,)):
                monkeypatch.setattr(est_mod, "BIDIR_HEAD", fused)
                outs[operands, fused] = layer.estimator(q, k, v, valid=None, probs=True, pool=16)
                assert layer.estimator.last_encoder == ("triton-head" if fused else "torch")
            layer(q, k, v, causal=False)
            assert "encoder_operands=bf16" in layer.impl or operands == "fp32"
            ran = []                                                     # the stage profile takes the same path
            parts = layer.estimator.stage_profile(q, k, v, timer=lambda f: (ran.append(f()), 1.0)[1])
            assert set(parts) == {"inputs", "performer", "encoder", "decoder", "scaler"}
            assert len(ran) == sum(t > 0 for t in parts.values()) >= 4
    (_, af, sf, mf), (_, aw, sw, mw), (_, _, s32, _) = outs["bf16", True], outs["bf16", False], outs["fp32", True]
    torch.testing.assert_close(sf, sw, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mf, mw, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(af, aw, atol=2e-3, rtol=2e-2)
    assert (af - aw).abs().mean() < 1e-3 * aw.abs().mean()
    assert 0 < (sf - s32).abs().max() < 2e-2                               # bf16 operands: rounding-sized moves
    M_, cfg, problem = sea_case(1, 4, 4, 64, 16, causal=True, K=16, encoder_operands="bf16")
    assert any("encoder_operands=bf16" in r for r in M_.supports(problem, cfg))   # an unsupported cell in a sweep
    with pytest.raises(ValueError, match="bidirectional"):
        M_.build(cfg, problem)


@pytest.mark.parametrize("performer_dtype", ["bf16", "fp32"])
def test_estimator_identity_values_made_in_the_key_pass(performer_dtype):
    """identity_values=kernel: without a padding mask the fused Performer kernel makes the identity values itself
    (identity_cols); the estimate equals the concatenating form's exactly, and impl says which ran. The block form (a
    carry) concatenates, and favor_attention refuses identity_cols on its other Performer paths. (A padding mask
    always concatenates: the identity values then follow the mask, and only the no-mask call reaches this choice.)"""
    from methods.sea.favor import favor_attention
    from tests.helpers import gaussian_qkv, sea_case

    q, k, v = gaussian_qkv(1, 4, 4, 64, 16, seed=8, dtype=torch.bfloat16)
    outs, used, layers = {}, {}, {}
    for mode in ("kernel", "concat"):
        M_, cfg, problem = sea_case(1, 4, 4, 64, 16, causal=False, K=16, performer_backend="triton",
                                    performer_dtype=performer_dtype, estimator_dtype="bf16", identity_values=mode)
        layers[mode] = layer = M_.build(cfg, problem)
        with torch.no_grad():
            used[mode] = layer.estimator.identity_in_kernel(q, k, v, None)
            outs[mode] = layer.estimator(q, k, v, valid=None, probs=True)
            layer(q, k, v, causal=False)
        assert ("/identity=kernel" in layer.impl) is (mode == "kernel")
    assert used == {"kernel": True, "concat": False}
    for a, b in zip(outs["kernel"], outs["concat"]):
        assert (a is None and b is None) or torch.equal(a, b)
    assert not layers["kernel"].estimator.identity_in_kernel(q, k, v, {})   # the block form concatenates
    with pytest.raises(ValueError, match="identity_cols"):
        favor_attention(q, k, v, layers["kernel"].estimator.proj, kernel="softmax", causal=False, backend="torch",
                        identity_cols=16)


def test_estimator_fp16_dash_option(monkeypatch):
    """performer_dash=fp16 (estimator_precision=tf32): the fused kernel's projections as fp16 products, named in impl,
    moving the estimate by rounding-sized amounts; refused without one-pass TF32, on causal problems and beside
    identity_values=kernel (an unsupported cell with its reason)."""
    from tests.helpers import gaussian_qkv, sea_case

    q, k, v = gaussian_qkv(1, 4, 4, 64, 16, seed=9, dtype=torch.bfloat16)
    outs = {}
    for dash in ("fp16", "auto"):
        M_, cfg, problem = sea_case(1, 4, 4, 64, 16, causal=False, K=16, performer_backend="triton",
                                    estimator_precision="tf32", estimator_dtype="bf16", performer_dash=dash)
        layer = M_.build(cfg, problem)
        with torch.no_grad():
            outs[dash] = layer.estimator(q, k, v, valid=None, probs=True)[1]
            layer(q, k, v, causal=False)
        assert ("/fp16dash" in layer.impl) is (dash == "fp16")
    assert 0 < (outs["fp16"] - outs["auto"]).abs().max() < 1e-2
    M_, cfg, problem = sea_case(1, 4, 4, 64, 16, causal=False, K=16, performer_dash="fp16")
    assert any("estimator_precision=tf32" in r for r in M_.supports(problem, cfg))
    with pytest.raises(ValueError, match="estimator_precision=tf32"):
        M_.build(cfg, problem)
    M_, cfg, problem = sea_case(1, 4, 4, 64, 16, causal=True, K=16, estimator_precision="tf32", performer_dash="fp16")
    assert any("bidirectional fused Performer" in r for r in M_.supports(problem, cfg))
    M_, cfg, problem = sea_case(1, 4, 4, 64, 16, causal=False, K=16, estimator_precision="tf32", performer_dash="fp16",
                                identity_values="kernel")                # crashed on an H200 at 64k: refused
    assert any("illegal memory access" in r for r in M_.supports(problem, cfg))
    with pytest.raises(ValueError, match="identity_values=kernel"):
        M_.build(cfg, problem)
    monkeypatch.setattr(est_mod, "REFUSE_FP16_DASH_WITH_IDENTITY", False)   # the diagnosis switch lets it build
    assert not M_.supports(problem, cfg)
    est = M_.build(cfg, problem).estimator
    assert (est.performer_dash, est.identity_values) == ("fp16", "kernel")


# --- on the GPU ---------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["tf32x3", "bf16"])
def test_head_and_tail_on_the_gpu_at_sea_widths(precision):
    g = torch.Generator().manual_seed(3)
    B, H, T, d, K = 1, 16, 3000, 64, 128
    c = torch.randn(B, H, T, 2 * d, generator=g)
    v = torch.randn(B, T, H, d, generator=g).to(torch.bfloat16).transpose(1, 2)
    w = _weights(d, K, g)
    if precision == "bf16":                                 # bf16 c, as the query pass stores it; lin_w rounded
        c = c.to(torch.bfloat16)
        ref_w = {**w, "lin_w": w["lin_w"].to(torch.bfloat16).float()}
    else:
        ref_w = w
    want_x, slack, want_scales = _head_composed(c.float().cuda(), v.cuda(), {n: t.cuda() for n, t in ref_w.items()},
                                                K)
    x, scales = _head(c.cuda(), v.cuda(), {n: t.cuda() for n, t in w.items()}, K, precision=precision)
    torch.testing.assert_close(scales, want_scales, atol=1e-5, rtol=1e-5)
    _check_head(x, want_x, slack)
    y = (3 * torch.randn(1, 2 * H, 4096, K // 2, generator=g)).to(torch.bfloat16).cuda()
    y = y.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)              # cuDNN's channels-last output
    got = bt.pooled_scores(y, heads=H, rows=64)
    torch.testing.assert_close(got.double().cpu(), _tail_reference(y.cpu(), H, 64), atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_head_reads_rows_of_a_tensor_past_2_31_elements():
    """c and v as a few rows of [1, 16, 4M, .] tensors (head strides 2^29 and 2^28 elements, as SEA's blocks of
    rows at T = 4M read them): the same output as from contiguous copies (a 32-bit head offset read other memory
    there: results/nvidia-h200/sea-rows/call5/)."""
    if torch.cuda.get_device_properties(0).total_memory < 40 * 2 ** 30:
        pytest.skip("needs 24 GiB of device memory for the two long tensors")
    g = torch.Generator(device="cuda").manual_seed(5)
    H, T, d, K = 16, 1 << 22, 64, 128
    v_big = torch.empty(1, H, T, d, dtype=torch.bfloat16, device="cuda")
    c_big = torch.empty(1, H, T, 2 * d, dtype=torch.bfloat16, device="cuda")
    c, v = c_big[:, :, -200:], v_big[:, :, -200:]
    c.copy_(torch.randn(c.shape, generator=g, device="cuda"))
    v.copy_(torch.randn(v.shape, generator=g, device="cuda"))
    w = {n: t.cuda() for n, t in _weights(d, K, torch.Generator().manual_seed(6)).items()}
    x, scales = _head(c, v, w, K, precision="bf16")
    want_x, want_scales = _head(c.contiguous(), v.contiguous(), w, K, precision="bf16")
    assert torch.equal(x, want_x) and torch.equal(scales, want_scales)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_conv_relu_on_the_gpu(monkeypatch):
    """The decoder's conv + ReLU pairs as cuDNN's fused kernel (CONV_RELU) against the separate ops, eager and in
    SEA's compiled estimator. The fused kernel rounds each convolution's output once after bias and ReLU, the separate
    ops after the convolution and again after the bias, so neither is the other's exact value: both are compared with
    the same body in fp32 on the same bf16 inputs and bf16-rounded weights, and the fused one must be as close."""
    from tests.helpers import gaussian_qkv, sea_case

    torch.manual_seed(0)
    dec = est_mod.BidirectionalDecoder(64, 16, 128).cuda()
    x = torch.randn(1, 64, 2048, 64, device="cuda").to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    out = {}
    for fused in (True, False):
        monkeypatch.setattr(est_mod, "CONV_RELU", fused)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            assert est_mod.uses_conv_relu(x, dec.conv1, dec.conv2) is fused
            out[fused] = dec.body(x, parity=True).float()
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        for p in dec.parameters():
            p.copy_(p.to(torch.bfloat16).float())
        ref = dec.body(x.float(), parity=True)                           # fp32 products and activations
    err = {fused: (out[fused] - ref).abs().mean().item() for fused in out}
    assert err[True] <= 1.1 * err[False] and err[True] < 2e-2 * ref.abs().mean().item(), err
    M_, cfg, problem = sea_case(1, 16, 16, 4096, 64, causal=False, K=128, performer_dtype="bf16",
                                estimator_precision="tf32", estimator_dtype="bf16", compile="estimator",
                                shared_keys=64)
    layer = M_.build(cfg, dataclasses.replace(problem, device="cuda", dtype="bf16")).cuda()
    q, k, v = (t.cuda() for t in gaussian_qkv(1, 16, 16, 4096, 64, seed=2, dtype=torch.bfloat16))
    sums = {}
    with torch.no_grad():
        for fused in (True, False):
            monkeypatch.setattr(est_mod, "CONV_RELU", fused)
            layer.estimator._compiled = None                             # recompile with the switch
            sums[fused] = layer.estimator(q, k, v, valid=None, probs=True, pool=64)[1]
    # block sums of softmax rows (each block's K sums add to 64): a bf16 step here and there in the logits
    torch.testing.assert_close(sums[True].sum(-1), torch.full_like(sums[True].sum(-1), 64.0), atol=1e-3, rtol=0)
    assert (sums[True] - sums[False]).abs().mean() < 5e-3 * sums[False].abs().mean()



@pytest.mark.parametrize("precision", ["bf16", "tf32x3"])
def test_head_with_weights_cast_once_is_the_same_call(precision):
    """cast=cast_weights(...) (made once by a caller running many blocks of rows): bit for bit the call that casts
    them itself; weights cast for another precision are refused."""
    g = torch.Generator().manual_seed(13)
    c, v, w = torch.randn(1, 3, 9, 32, generator=g), torch.randn(1, 3, 9, 16, generator=g), _weights(16, 16, g)
    args = (c, v, w["lin_w"], w["lin_b"], w["ln_w"], w["ln_b"], 1e-5, w["sc_w"], w["sc_b"], w["row_w"], w["row_b"])
    x, scales = bh.encoder_head(*args, K=16, precision=precision)
    cast = bh.cast_weights(w["lin_w"], w["row_w"], precision)
    x2, scales2 = bh.encoder_head(*args, K=16, precision=precision, cast=cast)
    assert torch.equal(x2, x) and torch.equal(scales2, scales)
    other = bh.cast_weights(w["lin_w"], w["row_w"], "tf32x3" if precision == "bf16" else "bf16")
    with pytest.raises(ValueError, match="cast must be"):
        bh.encoder_head(*args, K=16, precision=precision, cast=other)
