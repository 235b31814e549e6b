"""kernels/sea_bidir_front.py: the bidirectional estimator's front (Performer query pass, encoder and scaler head,
the decoder's row projection into channels-last memory) against the kernels and modules it replaces, run one after
another. CPU under TRITON_INTERPRET=1 with small tiles; on CUDA at SEA's widths."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from kernels import favor_dense as fd  # noqa: E402
from kernels import sea_bidir_front as bf  # noqa: E402
from kernels.sea_encoder import encoder_forward  # noqa: E402
from methods.sea.estimator import identity_values  # noqa: E402
from methods.sea.favor import orthogonal_random_features  # noqa: E402


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    if not torch.cuda.is_available():
        for mod, name, val in ((fd, "KEY_BLOCK_T", 16), (fd, "KEY_PF_BLOCK_T", 16), (fd, "KEY_PF_FP32_BLOCK_T", 16),
                               (fd, "KEY_BLOCK_F", 16), (fd, "KEY_SPLIT_ROWS", 32), (fd, "QUERY_BLOCK_F", 16),
                               (bf, "BLOCK_T", 16), (bf, "ROW_CHUNK", 16)):
            monkeypatch.setattr(mod, name, val)
    monkeypatch.setattr(fd, "POISON_OUTPUTS", True)
    monkeypatch.setattr(bf, "POISON_OUTPUTS", True)


def _case(B, H, T, d, m, K, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (1.5 * torch.randn(B, H, T, d, generator=g) for _ in range(3))
    proj = orthogonal_random_features(m, d, g)
    w = dict(lin_w=torch.randn(2 * d, 3 * d, generator=g) / (3 * d) ** 0.5, lin_b=0.1 * torch.randn(2 * d, generator=g),
             ln_w=1 + 0.1 * torch.randn(2 * d, generator=g), ln_b=0.1 * torch.randn(2 * d, generator=g),
             sc_w=torch.randn(2, 2 * d, generator=g) / (2 * d) ** 0.5, sc_b=0.1 * torch.randn(2, generator=g),
             row_w=torch.randn(2 * K, 2 * d, generator=g) / (2 * d) ** 0.5, row_b=0.1 * torch.randn(2 * K, generator=g))
    to = dict(device=device)
    return (q.to(torch.bfloat16).to(**to), k.to(torch.bfloat16).to(**to), v.to(torch.bfloat16).to(**to),
            proj.to(**to), {key: t.to(**to) for key, t in w.items()})


def _composed(q, k, v, proj, w, *, K, operands, precision, enc_precision):
    """What the front replaces: the fused Performer on the concatenated values, the encoder kernel writing bf16 z,
    the row projection as a bf16 GEMM (fp32 sums, one rounding) and the permute into [B, T, K/2, 4H]."""
    B, H, T, d = q.shape
    c = fd.favor_softmax_dense(q, k, _values(v), proj, operands=operands, precision=precision)
    z, scales = encoder_forward(c, v, w["lin_w"], w["lin_b"], w["ln_w"], w["ln_b"], 1e-5, w["sc_w"], w["sc_b"],
                                precision=enc_precision, z_dtype=torch.bfloat16)
    bf16 = lambda t: t.to(torch.bfloat16).float()  # noqa: E731
    y = bf16(z.float() @ bf16(w["row_w"]).T + bf16(w["row_b"]))                 # [B, H, T, 2K]
    x = y.view(B, H, T, 4, K // 2).permute(0, 2, 4, 1, 3).reshape(B, T, K // 2, 4 * H)
    return x, scales, z


def _values(v):
    B, H, T, d = v.shape
    return torch.cat([identity_values(None, B, T, d, v.device)[:, None].expand(B, H, T, d), v.float()], -1)


def _front(q, k, v, proj, w, *, K, operands, precision, enc_precision):
    return bf.bidir_front(q, k, v, _values(v), proj, w["lin_w"], w["lin_b"], w["ln_w"], w["ln_b"], 1e-5,
                          w["sc_w"], w["sc_b"], w["row_w"], w["row_b"], K=K, operands=operands, precision=precision,
                          enc_precision=enc_precision)


def _check_against_composed(x, scales, want_x, want_scales, z):
    B, T, KH, C = want_x.shape
    assert x.dtype == torch.bfloat16 and x.shape == (B, C, T, KH)
    xl = x.permute(0, 2, 3, 1)                                                   # the memory: [B, T, K/2, 4H]
    assert xl.is_contiguous()
    torch.testing.assert_close(scales, want_scales, atol=1e-5, rtol=1e-5)
    # z may round to the other bf16 neighbour where the encoder's sums differ in the last fp32 bits: one bf16 step
    # of z (2^-8 relative) moves an output by at most 2^-8 sum |z||w| plus its own rounding
    torch.testing.assert_close(xl.float(), want_x, atol=2.0 ** -7, rtol=2.0 ** -7)
    assert (xl.float() - want_x).abs().mean() < 1e-3 * want_x.abs().mean()


@pytest.mark.parametrize("operands", ["bf16", "fp32"])
def test_front_equals_the_performer_encoder_and_row_projection_in_turn(operands):
    q, k, v, proj, w = _case(1, 2, 40, 16, 19, 16, "cpu")
    args = dict(K=16, operands=operands, precision=None, enc_precision="ieee")
    x, scales = _front(q, k, v, proj, w, **args)
    _check_against_composed(x, scales, *_composed(q, k, v, proj, w, **args))


def test_front_refuses_what_it_cannot_serve():
    q, k, v, proj, w = _case(1, 2, 16, 16, 19, 16, "cpu")
    with pytest.raises(ValueError, match="even"):
        _front(q, k, v, proj, w, K=15, operands="bf16", precision=None, enc_precision="ieee")
    with pytest.raises(ValueError, match="row_w"):
        _front(q, k, v, proj, w, K=32, operands="bf16", precision=None, enc_precision="ieee")
    with pytest.raises(ValueError, match="enc_precision"):
        _front(q, k, v, proj, w, K=16, operands="bf16", precision=None, enc_precision="bf16")
    with pytest.raises(ValueError, match="values"):
        bf.bidir_front(q, k, v, v.float(), proj, *(w[n] for n in ("lin_w", "lin_b", "ln_w", "ln_b")), 1e-5,
                       w["sc_w"], w["sc_b"], w["row_w"], w["row_b"], K=16)
    wide = _case(1, 1, 16, 80, 19, 16, "cpu")
    with pytest.raises(ValueError, match="d=80"):
        _front(*wide, K=16, operands="bf16", precision=None, enc_precision="ieee")
    with torch.enable_grad(), pytest.raises(RuntimeError, match="forward-only"):
        _front(q, k, v, proj, {**w, "row_b": w["row_b"].clone().requires_grad_()}, K=16, operands="bf16",
               precision=None, enc_precision="ieee")


def test_estimator_front_gives_the_logits_and_scalers_of_the_separate_kernels(monkeypatch):
    """SEA's bidirectional estimator (fused Performer and encoder kernels, bf16 decoder, channels-last): with the
    front its logits and scalers equal those of the kernels it replaces, to the bf16 rounding of z."""
    import methods.sea.estimator as est_mod
    from tests.helpers import gaussian_qkv, sea_case

    monkeypatch.setattr(est_mod, "BIDIR_CHANNELS_LAST", True)
    monkeypatch.setattr(est_mod, "BIDIR_HEAD", False)                   # the encoder kernel when the front is off
    M_, cfg, problem = sea_case(1, 2, 2, 64, 16, causal=False, K=16, performer_backend="triton",
                                encoder_backend="triton", estimator_dtype="bf16", shared_keys=16)
    layer = M_.build(cfg, problem)
    q, k, v = gaussian_qkv(1, 2, 2, 64, 16, seed=5, dtype=torch.bfloat16)
    outs = {}
    with torch.no_grad():
        for front in (True, False):
            monkeypatch.setattr(est_mod, "BIDIR_FRONT", front)
            outs[front] = layer.estimator(q, k, v, valid=None)
            assert layer.estimator.last_encoder == ("front" if front else "triton")
        layer(q, k, v, causal=False)                                            # BIDIR_FRONT False: the kernels
        assert "encoder=triton" in layer.impl
        monkeypatch.setattr(est_mod, "BIDIR_FRONT", True)
        layer(q, k, v, causal=False)
    assert "encoder=front" in layer.impl
    (lf, sf, mf), (lw, sw, mw) = outs[True], outs[False]
    torch.testing.assert_close(sf, sw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mf, mw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lf, lw, atol=0.05, rtol=0.02)                    # bf16 convolutions on x
    assert (lf - lw).abs().mean() < 2e-3 * lw.abs().mean()
    with torch.no_grad():
        assert not layer.estimator.uses_bidir_front(q, k, v, torch.ones(1, 64, dtype=torch.bool), None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", [None, "tf32"])
def test_front_on_the_gpu_at_sea_widths(precision):
    q, k, v, proj, w = _case(1, 4, 3000, 64, 266, 128, "cuda", seed=3)
    args = dict(K=128, operands="bf16", precision=precision, enc_precision=precision or "tf32x3")
    x, scales = _front(q, k, v, proj, w, **args)
    _check_against_composed(x, scales, *_composed(q, k, v, proj, w, **args))
