"""kernels/sea_encoder.py: the fused encoder + scaler forward against SEA's own estimator modules
(Estimator.enc, Estimator.scaler) and against a float64 plain restatement. Runs under TRITON_INTERPRET=1
on CPU (tests/conftest.py), with shrunk blocks so several programs, a partial last block and several
feature slices are exercised."""
import math

import pytest
import torch

import kernels.sea_encoder as enc_mod
from kernels.sea_encoder import encoder_forward, encoder_usable
from methods.sea.estimator import Estimator

B, H, T = 2, 3, 37          # R = 222 rows: 14 programs of 16 rows, the last one partial


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch):
    monkeypatch.setattr(enc_mod, "POISON_OUTPUTS", True)
    monkeypatch.setattr(enc_mod, "BLOCK_R", 16)
    monkeypatch.setattr(enc_mod, "BLOCK_K", 16)     # d=16: 2 c_perf slices + 1 v slice; d=24: 3 + 2 (masked)


def _estimator(d, seed=0):
    est = Estimator(d=d, H=H, K=8, causal=False, nbf=1.0, max_len=64, seed=seed)
    gen = torch.Generator().manual_seed(100 + d)
    with torch.no_grad():                            # LayerNorm affine away from its 1 / 0 init
        ln = est.enc[1]
        ln.weight.copy_(0.5 + torch.rand(2 * d, generator=gen))
        ln.bias.copy_(0.6 * torch.rand(2 * d, generator=gen) - 0.3)
    return est


def _inputs(d, device="cpu", seed=1):
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(B, H, T, 2 * d, generator=gen)  # [B, H, T, 2d]
    v = torch.randn(B, H, T, d, generator=gen)      # [B, H, T, d]
    v[1, :, 30:] = 0.0                               # padded rows zeroed by the caller
    return c.to(device), v.to(device)


def _args(est):
    lin, ln, sc = est.enc[0], est.enc[1], est.scaler
    return (lin.weight, lin.bias, ln.weight, ln.bias, ln.eps, sc.weight, sc.bias)


def _torch_modules(est, c, v):
    with torch.no_grad():
        z = est.enc(torch.cat([c, v], -1))           # [B, H, T, 2d]
        return z, torch.sigmoid(est.scaler(z))       # [B, H, T, 2]


def _f64_restatement(est, c, v):
    """The same forward as plain float64 matmuls and formulas."""
    lin_w, lin_b, ln_w, ln_b, eps, sc_w, sc_b = [a.detach().double() if torch.is_tensor(a) else a
                                                   for a in _args(est)]
    d = v.shape[-1]
    c, v = c.double(), v.double()
    x = c @ lin_w[:, :2 * d].T + v @ lin_w[:, 2 * d:].T + lin_b           # [B, H, T, 2d]
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)                       # biased, as nn.LayerNorm
    y = (x - mean) / torch.sqrt(var + eps) * ln_w + ln_b
    z = 0.5 * y * (1.0 + torch.erf(y / math.sqrt(2.0)))
    s = 1.0 / (1.0 + torch.exp(-(z @ sc_w.T + sc_b)))                    # [B, H, T, 2]
    return z, s


def _run(est, c, v):
    with torch.no_grad():
        return encoder_forward(c, v, *_args(est))


# measured under the interpreter (fp32 arithmetic either way): max |z err| 1.4e-6 (d=16), 1.9e-6 (d=24)
# with |z| up to ~5; scales err 1.2e-7.
@pytest.mark.parametrize("d", [16, 24])
@pytest.mark.parametrize("precision", ["ieee", "tf32x3"])
def test_matches_estimator_modules(monkeypatch, d, precision):
    monkeypatch.setattr(enc_mod, "PRECISION", precision)
    est = _estimator(d)
    c, v = _inputs(d)
    z, s = _run(est, c, v)
    zr, sr = _torch_modules(est, c, v)
    assert z.shape == (B, H, T, 2 * d) and s.shape == (B, H, T, 2)
    assert z.dtype == s.dtype == torch.float32
    assert torch.isfinite(z).all() and torch.isfinite(s).all()      # every poisoned entry written
    # ieee: fp32 sums of 3d products then LayerNorm (x rstd): a few ulps of |z| <= ~5.
    # tf32x3: three TF32 products per fp32 product (the lo*lo term dropped, ~2^-22 relative), so fp32-level
    # error on the GPU too; the interpreter computes fp32 dots either way. 1e-4 leaves room for both.
    atol = 2e-5 if precision == "ieee" else 1e-4
    scale = zr.abs().max().item()
    assert scale > 1.0                                               # not a trivially small comparison
    torch.testing.assert_close(z, zr, atol=atol * max(1.0, scale), rtol=0)
    torch.testing.assert_close(s, sr, atol=atol, rtol=0)


@pytest.mark.parametrize("d", [16, 24])
def test_matches_float64_restatement(monkeypatch, d):
    monkeypatch.setattr(enc_mod, "PRECISION", "ieee")
    est = _estimator(d, seed=3)
    c, v = _inputs(d, seed=4)
    z, s = _run(est, c, v)
    z64, s64 = _f64_restatement(est, c, v)
    torch.testing.assert_close(z.double(), z64, atol=2e-5 * z64.abs().max().item(), rtol=0)
    torch.testing.assert_close(s.double(), s64, atol=2e-5, rtol=0)
    # the scaler really sees z: different per-output values, not a constant
    assert s64[..., 0].std() > 1e-3 and (s64[..., 0] - s64[..., 1]).abs().max() > 1e-3


def test_non_contiguous_and_other_leading_dims():
    d = 16
    est = _estimator(d)
    gen = torch.Generator().manual_seed(7)
    c_big = torch.randn(T, B, 3 * d, generator=gen)                  # [T, B, 3d]
    c = c_big[..., d:].transpose(0, 1)                               # [B, T, 2d], non-contiguous
    v = torch.randn(d, B, T, generator=gen).permute(1, 2, 0)         # [B, T, d], non-contiguous
    assert not c.is_contiguous() and not v.is_contiguous()
    z, s = _run(est, c, v)
    zr, sr = _torch_modules(est, c, v)
    assert z.shape == (B, T, 2 * d) and s.shape == (B, T, 2)
    torch.testing.assert_close(z, zr, atol=2e-5 * zr.abs().max().item(), rtol=0)
    torch.testing.assert_close(s, sr, atol=2e-5, rtol=0)


def test_empty_rows():
    d = 16
    est = _estimator(d)
    z, s = _run(est, torch.zeros(B, H, 0, 2 * d), torch.zeros(B, H, 0, d))
    assert z.shape == (B, H, 0, 2 * d) and s.shape == (B, H, 0, 2)


def test_usable_on_interpreter_or_cuda():
    assert encoder_usable(torch.device("cuda")) or not torch.cuda.is_available()
    assert encoder_usable("cpu") == (enc_mod.triton is not None and
                                     __import__("os").environ.get("TRITON_INTERPRET") == "1")


def test_refuses_grad():
    d = 16
    est = _estimator(d)                                              # module parameters require grad
    c, v = _inputs(d)
    with pytest.raises(RuntimeError, match="forward-only"):
        encoder_forward(c, v, *_args(est))
    c.requires_grad_(True)
    args = [a.detach() if torch.is_tensor(a) else a for a in _args(est)]
    with pytest.raises(RuntimeError, match="forward-only"):
        encoder_forward(c, v, *args)


def test_refuses_bad_shapes_and_dtypes():
    d = 16
    est = _estimator(d)
    c, v = _inputs(d)
    lin_w, lin_b, ln_w, ln_b, eps, sc_w, sc_b = _args(est)
    good = dict(c_perf=c, v=v, lin_w=lin_w, lin_b=lin_b, ln_w=ln_w, ln_b=ln_b, ln_eps=eps, sc_w=sc_w, sc_b=sc_b)
    bad = [
        dict(c_perf=c[..., :-1]),                                    # c_perf last dim not 2d
        dict(v=v[:, :, :-1]),                                        # leading dims differ
        dict(v=v[0]),                                                # number of dims differ
        dict(lin_w=lin_w[:, :-1]),                                   # [2d, 3d - 1]
        dict(lin_w=lin_w.T),                                         # [3d, 2d]
        dict(lin_b=lin_b[:-1]),
        dict(ln_w=torch.ones(2 * d + 1)),
        dict(ln_b=torch.ones(d)),
        dict(sc_w=sc_w.T),                                           # [2d, 2]
        dict(sc_b=torch.zeros(3)),
        dict(c_perf=torch.zeros(B, H, T, 272), v=torch.zeros(B, H, T, 136)),   # d > 128
    ]
    with torch.no_grad():
        for change in bad:
            with pytest.raises(ValueError, match="sea encoder"):
                encoder_forward(**{**good, **change})
        for name in ("c_perf", "v", "lin_w", "ln_b", "sc_w"):
            with pytest.raises(ValueError, match="float32"):
                encoder_forward(**{**good, name: good[name].double()})
        with pytest.raises(ValueError, match="z_dtype"):
            encoder_forward(**good, z_dtype=torch.float64)


@pytest.mark.parametrize("vdt", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("zdt", [torch.bfloat16, torch.float16])
def test_16bit_values_and_z(vdt, zdt):
    """16-bit v is read exactly (the same z and scales as its fp32 copy, bit for bit); a 16-bit z is the fp32 z
    rounded once to nearest even (what the decoder's autocast cast gives), and the scales do not change."""
    d = 16
    est = _estimator(d)
    c, v = _inputs(d)
    v16 = v.to(vdt)
    z32, s32 = _run(est, c, v16.float())
    z, s = _run(est, c, v16)
    assert z.dtype == torch.float32 and torch.equal(z, z32) and torch.equal(s, s32)
    with torch.no_grad():
        zh, sh = encoder_forward(c, v16, *_args(est), z_dtype=zdt)
    assert zh.dtype == zdt and torch.equal(sh, s32)
    assert torch.equal(zh, z32.to(zdt))
    assert (zh.float() != z32).float().mean() > 0.5                  # it was rounded (not stored fp32 by mistake)


def test_refuses_unknown_precision(monkeypatch):
    monkeypatch.setattr(enc_mod, "PRECISION", "tf32")
    d = 16
    est = _estimator(d)
    c, v = _inputs(d)
    with pytest.raises(ValueError, match="PRECISION"):
        _run(est, c, v)


@pytest.mark.gpu
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("precision", ["ieee", "tf32x3"])
def test_cuda_matches_torch_modules(monkeypatch, d, precision):
    monkeypatch.setattr(enc_mod, "BLOCK_R", 64)                      # the default tiles
    monkeypatch.setattr(enc_mod, "BLOCK_K", 32)
    monkeypatch.setattr(enc_mod, "PRECISION", precision)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)   # the torch reference in true fp32
    est = Estimator(d=d, H=4, K=8, causal=False, nbf=1.0, max_len=64, seed=0)
    with torch.no_grad():
        est.enc[1].weight.uniform_(0.5, 1.5)
        est.enc[1].bias.uniform_(-0.3, 0.3)
    est = est.cuda()
    gen = torch.Generator().manual_seed(5)
    c = torch.randn(2, 4, 3000, 2 * d, generator=gen).cuda()        # [B, H, T, 2d]
    v = torch.randn(2, 4, 3000, d, generator=gen).cuda()            # [B, H, T, d]
    z, s = _run(est, c, v)
    zr, sr = _torch_modules(est, c, v)
    atol = 2e-5 if precision == "ieee" else 1e-4
    torch.testing.assert_close(z, zr, atol=atol * max(1.0, zr.abs().max().item()), rtol=0)
    torch.testing.assert_close(s, sr, atol=atol, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_estimator_with_16bit_z_gives_the_same_estimate(monkeypatch, causal):
    """estimator_dtype=bf16: the encoder kernel writes z in bf16 (ENCODER_Z_16BIT), which the decoder's autocast
    Linear would have cast it to: logits, A_hat and scalers equal the fp32-z run's bit for bit (interpreter)."""
    import methods.sea.estimator as em

    est = Estimator(d=16, H=H, K=8, causal=causal, nbf=1.0, max_len=64, seed=0, dec_dtype="bf16",
                    encoder_backend="triton", performer_backend="torch")
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(B, H, T, 16, generator=gen).bfloat16() for _ in range(3))
    real, seen = enc_mod.encoder_forward, []

    def spy(*a, **kw):
        z, s = real(*a, **kw)
        seen.append(z.dtype)
        return z, s

    monkeypatch.setattr(enc_mod, "encoder_forward", spy)
    outs = {}
    with torch.no_grad():
        for flag in (False, True):
            monkeypatch.setattr(em, "ENCODER_Z_16BIT", flag)
            outs[flag] = est(q, k, v, valid=None, probs=True)
    assert seen == [torch.float32, torch.bfloat16]
    for a, b in zip(outs[True], outs[False]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_layer_with_16bit_z_is_unchanged(monkeypatch, causal):
    """SEA fast on the GPU (compiled estimator, bf16 decoder; causal on the Performer + encoder path that is not the
    fused front): the layer's output with z written in bf16 equals the fp32-z output up to a few bf16 ulps (the
    decoder's Linear reads the same bf16 z, but the compiled graph around it changes with z's dtype: measured 14 of
    524288 elements one ulp apart, bidirectional)."""
    import methods.sea.estimator as em
    from methods.base import Problem, get

    monkeypatch.setattr(em, "BIDIR_HEAD", False)                        # the encoder kernel's z, not the fused head
    M = get("sea")
    opts = dict(performer_dtype="bf16", estimator_precision="tf32", estimator_dtype="bf16", compile="estimator",
                sparse_pieces="1")
    if causal:
        opts["performer_backend"] = "triton"
    cfg = M.resolve_config(opts)
    lay = M.build(cfg, Problem(1, 4, 4, 2048, 64, dtype="bf16", causal=causal, device="cuda"), seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 2048, 64, generator=gen).cuda().bfloat16() for _ in range(3))
    outs = {}
    with torch.no_grad():
        for flag in (False, True):
            monkeypatch.setattr(em, "ENCODER_Z_16BIT", flag)
            outs[flag] = lay(q, k, v, causal=causal)
    assert "encoder=triton" in lay.impl, lay.impl
    a, b = outs[True].float(), outs[False].float()
    diff = (a - b).abs()
    assert (diff > 0).float().mean().item() <= 1e-3
    assert diff.max().item() <= 2 ** -7 * b.abs().max().item()
