"""kernels/sea_decoder.py: the fused causal CNN decoder forward against SEA's own CausalDecoder module and
against a float64 plain restatement. Runs under TRITON_INTERPRET=1 on CPU (tests/conftest.py) with shrunk
blocks (16-row windows of 12 output rows, 4-row conv chunks) and 2 programs, so each program runs several
jobs (reusing its scratch), windows start before time 0, and the last block is partial.

The contract both decoder kernels share (the masked kernel row ignored, causality, input layouts, refusals) is
tested here for both: the fused kernel and the three-kernel one (kernels/sea_decoder_v2.py, shrunk tiles too;
its own numerics are in tests/test_sea_decoder_v2.py)."""
import pytest
import torch
import torch.nn.functional as F

import kernels.sea_decoder as dec_mod
import kernels.sea_decoder_v2 as v2
from methods.sea.estimator import CausalDecoder

KERNELS = pytest.mark.parametrize("kmod", [dec_mod, v2], ids=["fused", "split"])

# (B, H, d, K, T): w = K/4 = 6 (padded to 8) with 3 blocks + a partial one over 2 batches; w = 16 (SEA's
# width, no padding) with T = 3 < the 4-row halo; w = 4 with 6 blocks (T = 70 = 5 x 12 + 10).
SHAPES = [(2, 3, 8, 24, 37), (1, 2, 16, 64, 3), (1, 2, 8, 16, 70)]


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch):
    monkeypatch.setattr(dec_mod, "POISON_OUTPUTS", True)
    monkeypatch.setattr(dec_mod, "PRECISION", "ieee")
    monkeypatch.setattr(dec_mod, "BLOCK_T", 16)
    monkeypatch.setattr(dec_mod, "BLOCK_C", 4)
    monkeypatch.setattr(dec_mod, "BLOCK_L", 16)
    monkeypatch.setattr(dec_mod, "BLOCK_F", 16)     # 2d = 16: one slice; 2d = 32: two
    monkeypatch.setattr(dec_mod, "PROGRAMS", 2)
    small_split_tiles(monkeypatch)


def small_split_tiles(monkeypatch):
    """kernels/sea_decoder_v2.py shrunk: 16-row blocks in 16-feature steps for kernel 1, 32 positions for the conv
    kernels (tests/test_sea_decoder_v2.py uses the same), outputs and intermediates NaN-poisoned."""
    monkeypatch.setattr(v2, "POISON_OUTPUTS", True)
    monkeypatch.setattr(v2, "PRECISION", "ieee")
    monkeypatch.setattr(v2, "BLOCK_T", 16)
    monkeypatch.setattr(v2, "BLOCK_F", 16)
    monkeypatch.setattr(v2, "BLOCK_M", 32)


def _decoder(d, H, K, seed=0):
    torch.manual_seed(seed)
    dec = CausalDecoder(d, H, K)
    gen = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():                            # LayerNorm affine away from 1 / 0, larger conv weights
        for ln in (dec.norm_in, dec.norm_out):
            ln.weight.copy_(0.5 + torch.rand(ln.weight.shape, generator=gen))
            ln.bias.copy_(0.6 * torch.rand(ln.bias.shape, generator=gen) - 0.3)
        for conv in (dec.conv1, dec.conv2, dec.conv3):
            conv.weight.mul_(2.0)
            conv.bias.add_(0.2 * torch.randn(conv.bias.shape, generator=gen))
    return dec


def _z(B, H, T, d, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, T, 2 * d, generator=gen)                      # [B, H, T, 2d]


def _run(dec, z, kmod=dec_mod, **kw):
    with torch.no_grad():
        return kmod.decoder_forward(z, dec, **kw)


def _f64_restatement(dec, z):
    """CausalDecoder.forward in float64 written out: causal padding instead of the time mask (pad 2 rows
    before time 0 and use kernel rows 0, 1 only), the x4 width repeat and norm_out over K done literally."""
    p = {k: v.detach().double() for k, v in dec.state_dict().items()}
    B, H, T, _ = z.shape
    K = dec.K
    w = K // 4
    x = z.double() @ p["row.weight"].T + p["row.bias"]                     # [B, H, T, 2w]
    x = x.view(B, H, T, 2, w).permute(0, 1, 3, 2, 4).reshape(B, 2 * H, T, w)   # [B, 2H, T, w], c = 2h + j
    mu = x.mean(-1, keepdim=True)
    x = (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + dec.norm_in.eps)
    x = x * p["norm_in.weight"] + p["norm_in.bias"]

    def causal_conv(x, wname, bname):
        xp = F.pad(x, (2, 2, 2, 0))                                        # width 2 | 2, time 2 before only
        return F.conv2d(xp, p[wname][:, :, :2, :], p[bname], dilation=2)  # taps t-2, t; i-2, i, i+2

    x = torch.relu(causal_conv(x, "conv1.weight", "conv1.bias"))            # [B, 2H, T, w]
    x = torch.relu(causal_conv(x, "conv2.weight", "conv2.bias"))
    x = x.repeat_interleave(4, dim=3)                                      # [B, 2H, T, K]
    y = torch.einsum("bctk,hc->bhtk", x, p["conv3.weight"][:, :, 0, 0]) + p["conv3.bias"][:, None, None]
    mu = y.mean(-1, keepdim=True)                                          # [B, H, T, 1]
    y = (y - mu) / torch.sqrt(((y - mu) ** 2).mean(-1, keepdim=True) + dec.norm_out.eps)
    return y * p["norm_out.weight"] + p["norm_out.bias"]                   # [B, H, T, K]


# measured under the interpreter (fp32 arithmetic): max |err| vs the module 2.8e-6 (w=6), 1.2e-6 (T=3),
# 4.5e-6 (w=4), with |out| up to ~3.5 (the split kernel: <= ~1.5e-5).
@KERNELS
@pytest.mark.parametrize("B,H,d,K,T", SHAPES)
def test_matches_causal_decoder_module(kmod, B, H, d, K, T):
    dec = _decoder(d, H, K)
    z = _z(B, H, T, d)
    assert_matches_module(_run(dec, z, kmod), dec, z)


def assert_matches_module(out, dec, z):
    """A decoder kernel's output for z [B, H, T, 2d] against the CausalDecoder module `dec` itself (fp32); returns
    the module's output."""
    B, H, T, _ = z.shape
    with torch.no_grad():
        ref = dec(z)                                                       # [B, H, T, K]
    assert out.shape == (B, H, T, dec.K) and out.dtype == torch.float32
    assert torch.isfinite(out).all()                                       # every poisoned entry written
    assert ref.abs().max() > 1.0 and ref.std() > 0.3                       # not a trivially small comparison
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    return ref


@pytest.mark.parametrize("B,H,d,K,T", SHAPES[::2])
def test_matches_float64_restatement(B, H, d, K, T):
    dec = _decoder(d, H, K, seed=3)
    z = _z(B, H, T, d, seed=4)
    out = _run(dec, z)
    ref = _f64_restatement(dec, z)
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=0)
    with torch.no_grad():                                                  # the restatement is the module's
        torch.testing.assert_close(dec(z).double(), ref, atol=1e-4, rtol=0)


@KERNELS
def test_time_mask_weights_ignored(kmod):
    """conv kernel row 2 (time t+2) is the module's masked row: raw and masked weights give the same output,
    and a huge value there changes nothing (the kernel never reads it)."""
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K)
    z = _z(B, H, T, d)
    out = _run(dec, z, kmod)
    with torch.no_grad():
        dec.conv1.weight[:, :, 2, :] = 1e6
        dec.conv2.weight[:, :, 2, :] = -1e6
    torch.testing.assert_close(_run(dec, z, kmod), out, atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(dec(z), out, atol=1e-4, rtol=0)        # the module masks them too


@KERNELS
# inside a block; the fused kernel's window start (12 = BLOCK_T - 4); the split kernel-1 block start (16); later
@pytest.mark.parametrize("t0", [5, 12, 16, 30])
def test_causal(kmod, t0):
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K)
    z = _z(B, H, T, d)
    out = _run(dec, z, kmod)
    z2 = z.clone()
    z2[:, :, t0:] = 5.0 * torch.randn(z2[:, :, t0:].shape)               # change every row >= t0
    out2 = _run(dec, z2, kmod)
    assert torch.equal(out2[:, :, :t0], out[:, :, :t0])                   # rows before t0 bit-identical
    assert (out2[:, :, t0:] - out[:, :, t0:]).abs().amax(dim=(0, 1, 3)).min() > 1e-3   # every later row moved


LAUNCH_VARIANTS = {
    # fused: 32-row windows in 8-row chunks, one program for all jobs; one 16-row chunk per window over 3 programs
    "fused": [dict(BLOCK_T=32, BLOCK_C=8, PROGRAMS=1), dict(BLOCK_T=16, BLOCK_C=16, PROGRAMS=3)],
    # split: one 16-position conv tile per 2 rows; 64 positions; kernel-1 blocks of 32 rows in one 32-feature step;
    # x0 placed in the output buffer (POISON_OUTPUTS off, the production path)
    "split": [dict(BLOCK_T=32, BLOCK_F=32, BLOCK_M=16), dict(BLOCK_T=16, BLOCK_F=16, BLOCK_M=64),
              dict(POISON_OUTPUTS=False)],
}


@KERNELS
def test_launch_constants_do_not_change_the_result(monkeypatch, kmod):
    """Each kernel's tiles, chunks and program counts (LAUNCH_VARIANTS, applied one after the other) change the
    float summation order at most."""
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K)
    z = _z(B, H, T, d)
    out = _run(dec, z, kmod)
    for values in LAUNCH_VARIANTS["fused" if kmod is dec_mod else "split"]:
        for name, value in values.items():
            monkeypatch.setattr(kmod, name, value)
        torch.testing.assert_close(_run(dec, z, kmod), out, atol=1e-5, rtol=0)


@KERNELS
def test_non_contiguous_z_and_empty(kmod):
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K)
    zt = _z(B, T, H, d).transpose(1, 2)                                    # [B, H, T, 2d], non-contiguous
    assert not zt.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(_run(dec, zt, kmod), dec(zt), atol=1e-4, rtol=0)
    assert _run(dec, torch.zeros(B, H, 0, 2 * d), kmod).shape == (B, H, 0, K)


@KERNELS
def test_usable_on_interpreter_or_cuda(kmod):
    assert kmod.decoder_usable(torch.device("cuda")) or not torch.cuda.is_available()
    assert kmod.decoder_usable("cpu") == (kmod.triton is not None and
                                          __import__("os").environ.get("TRITON_INTERPRET") == "1")


@KERNELS
def test_refuses_grad(kmod):
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K)                                                # parameters require grad
    z = _z(B, H, T, d)
    with pytest.raises(RuntimeError, match="forward-only"):
        kmod.decoder_forward(z, dec)
    dec.requires_grad_(False)
    with pytest.raises(RuntimeError, match="forward-only"):
        kmod.decoder_forward(z.requires_grad_(True), dec)


def _args(dec):
    return dict(row_w=dec.row.weight, row_b=dec.row.bias, norm_in_w=dec.norm_in.weight,
                norm_in_b=dec.norm_in.bias, norm_in_eps=dec.norm_in.eps, conv1_w=dec.conv1.weight,
                conv1_b=dec.conv1.bias, conv2_w=dec.conv2.weight, conv2_b=dec.conv2.bias,
                conv3_w=dec.conv3.weight, conv3_b=dec.conv3.bias, norm_out_w=dec.norm_out.weight,
                norm_out_b=dec.norm_out.bias, norm_out_eps=dec.norm_out.eps, K=dec.K)


@KERNELS
def test_refuses_bad_shapes_dtypes_and_geometry(kmod, monkeypatch):
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K)
    z = _z(B, H, T, d)
    good = dict(z=z, **_args(dec))
    bad = [
        dict(z=z[0]),                                                     # 3 dims
        dict(z=z[:, :, :, :-1]),                                          # 2d - 1 features
        dict(z=torch.zeros(B, H + 1, T, 2 * d)),                          # heads disagree with conv weights
        dict(K=K + 2),                                                    # not a multiple of 4
        dict(K=K + 4),                                                    # weights for another K
        dict(row_w=dec.row.weight.T),
        dict(norm_in_b=torch.zeros(K // 4 + 1)),
        dict(conv1_w=dec.conv1.weight[..., :2]),
        dict(conv3_w=dec.conv3.weight[:, :, 0]),
        dict(norm_out_w=torch.ones(K // 4)),
        dict(z=torch.zeros(1, 33, 4, 2 * d)),                             # H > MAX_H
    ]
    with torch.no_grad():
        for change in bad:
            with pytest.raises(ValueError, match="sea decoder"):
                kmod.causal_decoder_forward(**{**good, **change})
        for name in ("z", "row_w", "conv2_w", "norm_out_b"):
            with pytest.raises(ValueError, match="float32"):
                kmod.causal_decoder_forward(**{**good, name: good[name].double()})
        with pytest.raises(ValueError, match="precision"):
            kmod.causal_decoder_forward(**good, precision="fp16")
        other = CausalDecoder(d, H, K)
        other.conv2.dilation = (1, 1)
        with pytest.raises(ValueError, match="conv2"):
            kmod.decoder_forward(z, other)
        other = CausalDecoder(d, H, K)
        other.conv1.time_mask.fill_(1.0)                                  # a non-causal conv
        with pytest.raises(ValueError, match="time_mask"):
            kmod.decoder_forward(z, other)
        monkeypatch.setattr(kmod, "PRECISION", "fp16")
        with pytest.raises(ValueError, match="PRECISION"):
            kmod.decoder_forward(z, dec)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["ieee", "tf32x3"])
def test_cuda_matches_module_at_sea_sizes(monkeypatch, precision):
    """SEA's sizes with the default tiles: the full grid, then 7 programs (each runs ~40 jobs through its
    scratch, so a missing barrier between stages would show), then T shorter than one window / the halo."""
    monkeypatch.undo()                                                    # the default tiles and grid
    monkeypatch.setattr(dec_mod, "POISON_OUTPUTS", True)
    monkeypatch.setattr(dec_mod, "PRECISION", precision)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # the module in true fp32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    d, H, K = 64, 16, 64
    dec = _decoder(d, H, K).cuda()
    for T, programs in ((8192, None), (8192, 7), (37, None), (3, None)):
        monkeypatch.setattr(dec_mod, "PROGRAMS", programs)
        z = _z(1, H, T, d).cuda()
        out = _run(dec, z)
        with torch.no_grad():
            ref = dec(z)
        assert torch.isfinite(out).all(), (T, programs)
        torch.testing.assert_close(out, ref, atol=1e-4 if precision == "ieee" else 3e-4, rtol=0)


def test_sea_option_decoder_backend_runs_the_kernel_and_refuses_in_words():
    """sea.decoder_backend=triton: the layer's estimate through the kernel equals the module path; unsupported
    problems are refused with reasons (bidirectional, forward+backward)."""
    from methods.base import Problem, get

    M = get("sea")
    prob = Problem(1, 2, 2, 21, 8, dtype="fp32", causal=True, device="cpu")
    mods = [M.build(M.resolve_config(dict(k="3", K="16", backend="torch", decoder_backend=b)), prob, seed=3)
            for b in ("torch", "triton")]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 21, 8, generator=g) for _ in range(3))
    with torch.no_grad():
        want = mods[0].estimator(q, k, v, valid=None)
        got = mods[1].estimator(q, k, v, valid=None)
    for w, x in zip(want, got):
        torch.testing.assert_close(x, w, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        for mod in mods:
            mod(q, k, v, causal=True)                                # the impl string names what ran
    assert "decoder=triton" in mods[1].impl and "decoder=triton" not in mods[0].impl
    assert mods[1].estimator.last_decoder == "triton" and mods[0].estimator.last_decoder == "torch"
    cfg = M.resolve_config(dict(decoder_backend="triton"))
    bidir = Problem(1, 2, 2, 21, 8, dtype="fp32", causal=False, device="cpu")
    assert any("causal decoder" in r for r in M.supports(bidir, cfg))
    bwd = Problem(1, 2, 2, 21, 8, dtype="fp32", causal=True, device="cpu", backward=True)
    assert any("forward-only" in r for r in M.supports(bwd, cfg))
