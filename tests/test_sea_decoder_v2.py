"""kernels/sea_decoder_v2.py: the three-kernel causal CNN decoder forward against SEA's CausalDecoder module and a
float64 restatement written tap by tap. Runs under TRITON_INTERPRET=1 on CPU (tests/conftest.py) with shrunk
tiles: kernel 1 takes 16-row blocks in 16-feature steps, the conv kernels 32 positions (4 rows at w = 6 or 8,
2 rows at w = 16, 8 rows at w = 4), so there are several blocks, a partial last block, T shorter than a block,
and T = 1. Outputs and intermediates are NaN-poisoned, so a skipped write in any of the three kernels fails."""
import time

import pytest
import torch

import kernels.sea_decoder_v2 as v2
from kernels.sea_decoder_v2 import causal_decoder_forward, decoder_forward, decoder_usable
from methods.sea.estimator import CausalDecoder

# (B, H, d, K, T): w = 6 (padded to 8), H = 3, 2 batches, 10 conv blocks + a partial one; w = 16 (SEA's width)
# with T = 3 < every block; w = 4 with 9 conv blocks (70 = 8 x 8 + 6) and 2d = 32 (two feature steps); H = 5,
# w = 5 and T = 1.
SHAPES = [(2, 3, 8, 24, 37), (1, 2, 16, 64, 3), (1, 2, 16, 16, 70), (1, 5, 4, 20, 1)]


@pytest.fixture(autouse=True)
def _small_tiles(monkeypatch):
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


def _run(dec, z, **kw):
    with torch.no_grad():
        return decoder_forward(z, dec, **kw)


def _f64_taps(dec, z):
    """CausalDecoder.forward in float64, each conv as a sum over its six live taps of shifted copies (time t-2 /
    t, columns i-2 / i / i+2, zeros shifted in), conv3 on the w columns, then each value repeated 4 times."""
    p = {k: v.detach().double() for k, v in dec.state_dict().items()}
    B, H, T, _ = z.shape
    w = dec.K // 4
    a = z.double() @ p["row.weight"].T + p["row.bias"]                     # [B, H, T, 2w]
    x = a.view(B, H, T, 2, w).permute(0, 1, 3, 2, 4).reshape(B, 2 * H, T, w)   # [B, 2H, T, w], c = 2h + j
    x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + dec.norm_in.eps)
    x = x * p["norm_in.weight"] + p["norm_in.bias"]

    def shifted(x, dt, dc):                                                # x[..., t - dt, i + dc], 0 outside
        out = torch.zeros_like(x)
        src = x[:, :, :T - dt]                                             # [B, C, T - dt, w] -> rows t >= dt
        lo, hi = max(0, -dc), min(w, w - dc)
        out[:, :, dt:, lo:hi] = src[:, :, :, lo + dc:hi + dc]
        return out

    def conv(x, name):
        wt = p[name + ".weight"]                                           # [C, C, 3, 3]
        y = p[name + ".bias"][None, :, None, None].expand_as(x).clone()
        for kh, dt in ((0, 2), (1, 0)):                                    # kernel row 2 (t + 2) is masked
            for kw, dc in ((0, -2), (1, 0), (2, 2)):
                y += torch.einsum("oc,bctw->botw", wt[:, :, kh, kw], shifted(x, dt, dc))
        return y

    x = torch.relu(conv(torch.relu(conv(x, "conv1")), "conv2"))            # [B, 2H, T, w]
    y = torch.einsum("hc,bctw->bhtw", p["conv3.weight"][:, :, 0, 0], x) + p["conv3.bias"][:, None, None]
    y = y.repeat_interleave(4, dim=3)                                      # [B, H, T, K]
    y = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + dec.norm_out.eps)
    return y * p["norm_out.weight"] + p["norm_out.bias"]                   # [B, H, T, K]


# measured under the interpreter (ieee, fp32): max |err| vs the module <= ~1.5e-5 with |out| up to ~3.5.
@pytest.mark.parametrize("B,H,d,K,T", SHAPES)
def test_matches_causal_decoder_module_and_f64(B, H, d, K, T):
    dec = _decoder(d, H, K)
    z = _z(B, H, T, d)
    out = _run(dec, z)
    with torch.no_grad():
        ref = dec(z)                                                       # [B, H, T, K]
    assert out.shape == (B, H, T, K) and out.dtype == torch.float32
    assert torch.isfinite(out).all()                                       # every poisoned entry written
    assert ref.abs().max() > 1.0 and ref.std() > 0.3                       # not a trivially small comparison
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    f64 = _f64_taps(dec, z)
    torch.testing.assert_close(out.double(), f64, atol=1e-4, rtol=0)
    torch.testing.assert_close(ref.double(), f64, atol=1e-4, rtol=0)      # the restatement is the module's


def test_time_mask_weights_ignored():
    """conv kernel row 2 (time t+2) is the module's masked row: a huge value there changes nothing."""
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K)
    z = _z(B, H, T, d)
    out = _run(dec, z)
    with torch.no_grad():
        dec.conv1.weight[:, :, 2, :] = 1e6
        dec.conv2.weight[:, :, 2, :] = -1e6
    torch.testing.assert_close(_run(dec, z), out, atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(dec(z), out, atol=1e-4, rtol=0)        # the module masks them too


@pytest.mark.parametrize("t0", [5, 16, 30])      # inside a block, at a kernel-1 block start (16), later
def test_causal(t0):
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K)
    z = _z(B, H, T, d)
    out = _run(dec, z)
    z2 = z.clone()
    z2[:, :, t0:] = 5.0 * torch.randn(z2[:, :, t0:].shape)               # change every row >= t0
    out2 = _run(dec, z2)
    assert torch.equal(out2[:, :, :t0], out[:, :, :t0])                   # rows before t0 bit-identical
    assert (out2[:, :, t0:] - out[:, :, t0:]).abs().amax(dim=(0, 1, 3)).min() > 1e-3   # every later row moved


def test_tiles_and_output_aliasing_do_not_change_the_result(monkeypatch):
    """Other tiles (one 16-position conv tile per 2 rows; 64 positions; kernel-1 blocks of 32 rows in one
    32-feature step), and x0 placed in the output buffer (POISON_OUTPUTS off, the production path)."""
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K)
    z = _z(B, H, T, d)
    out = _run(dec, z)
    for bt, bf, bm in ((32, 32, 16), (16, 16, 64)):
        monkeypatch.setattr(v2, "BLOCK_T", bt)
        monkeypatch.setattr(v2, "BLOCK_F", bf)
        monkeypatch.setattr(v2, "BLOCK_M", bm)
        torch.testing.assert_close(_run(dec, z), out, atol=1e-5, rtol=0)
    monkeypatch.setattr(v2, "POISON_OUTPUTS", False)
    torch.testing.assert_close(_run(dec, z), out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("precision", ["tf32x3", "tf32", "bf16"])
def test_precisions(precision, monkeypatch):
    """Every precision runs (the interpreter computes tf32 dots in fp32); bf16 stores x0 / x1 in bf16 and rounds
    the conv operands (measured here: max |err| ~0.05, mean ~0.006; a wrong tap or index gives errors ~1)."""
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K)
    z = _z(B, H, T, d)
    out = _run(dec, z, precision=precision)
    with torch.no_grad():
        ref = dec(z)
    assert torch.isfinite(out).all()
    if precision == "bf16":
        err = (out - ref).abs()
        assert err.max() < 0.2 and err.mean() < 0.03, (err.max(), err.mean())
        assert err.max() > 0                                               # the rounding did happen
        monkeypatch.setattr(v2, "POISON_OUTPUTS", False)                  # bf16 x0 inside the fp32 output buffer
        assert torch.equal(_run(dec, z, precision=precision), out)
    else:
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_non_contiguous_z_and_empty():
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K)
    zt = _z(B, T, H, d).transpose(1, 2)                                    # [B, H, T, 2d], non-contiguous
    assert not zt.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(_run(dec, zt), dec(zt), atol=1e-4, rtol=0)
    assert _run(dec, torch.zeros(B, H, 0, 2 * d)).shape == (B, H, 0, K)


def test_usable_on_interpreter_or_cuda():
    assert decoder_usable(torch.device("cuda")) or not torch.cuda.is_available()
    assert decoder_usable("cpu") == (v2.triton is not None and
                                     __import__("os").environ.get("TRITON_INTERPRET") == "1")


def test_refuses_grad():
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K)                                                # parameters require grad
    z = _z(B, H, T, d)
    with pytest.raises(RuntimeError, match="forward-only"):
        decoder_forward(z, dec)
    dec.requires_grad_(False)
    with pytest.raises(RuntimeError, match="forward-only"):
        decoder_forward(z.requires_grad_(True), dec)


def _args(dec):
    return dict(row_w=dec.row.weight, row_b=dec.row.bias, norm_in_w=dec.norm_in.weight,
                norm_in_b=dec.norm_in.bias, norm_in_eps=dec.norm_in.eps, conv1_w=dec.conv1.weight,
                conv1_b=dec.conv1.bias, conv2_w=dec.conv2.weight, conv2_b=dec.conv2.bias,
                conv3_w=dec.conv3.weight, conv3_b=dec.conv3.bias, norm_out_w=dec.norm_out.weight,
                norm_out_b=dec.norm_out.bias, norm_out_eps=dec.norm_out.eps, K=dec.K)


def test_refuses_bad_shapes_dtypes_geometry_and_settings(monkeypatch):
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
                causal_decoder_forward(**{**good, **change})
        for name in ("z", "row_w", "conv2_w", "norm_out_b"):
            with pytest.raises(ValueError, match="float32"):
                causal_decoder_forward(**{**good, name: good[name].double()})
        with pytest.raises(ValueError, match="precision"):
            causal_decoder_forward(**good, precision="fp16")
        other = CausalDecoder(d, H, K)
        other.conv2.dilation = (1, 1)
        with pytest.raises(ValueError, match="conv2"):
            decoder_forward(z, other)
        other = CausalDecoder(d, H, K)
        other.conv1.time_mask.fill_(1.0)                                  # a non-causal conv
        with pytest.raises(ValueError, match="time_mask"):
            decoder_forward(z, other)
        monkeypatch.setattr(v2, "BLOCK_M", 48)
        with pytest.raises(ValueError, match="BLOCK_M"):
            decoder_forward(z, dec)
        monkeypatch.setattr(v2, "BLOCK_M", 32)
        monkeypatch.setattr(v2, "PRECISION", "fp16")
        with pytest.raises(ValueError, match="PRECISION"):
            decoder_forward(z, dec)


def _median_ms(fn, reps=20):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


@pytest.mark.gpu
def test_cuda_sea_sizes_against_module_and_v1_with_timings(monkeypatch):
    """SEA's sizes (B=1, H=16, d=64, K=64) with the default tiles: T = 65536 against the module (true fp32) and
    the fused one-kernel decoder, short T (partial / single blocks), bf16 at a loose tolerance, the production
    path (x0 in the output buffer) equal to the poisoned one; prints median times of both kernels (run with -s)."""
    import kernels.sea_decoder as v1

    monkeypatch.undo()                                                    # the default tiles and precision
    monkeypatch.setattr(v2, "POISON_OUTPUTS", True)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # the module in true fp32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    d, H, K = 64, 16, 64
    torch.manual_seed(0)
    dec = CausalDecoder(d, H, K).cuda().requires_grad_(False)
    for T in (37, 3, 1, 65536):
        z = torch.randn(1, H, T, 2 * d, device="cuda")                    # [B, H, T, 2d]
        out = _run(dec, z)
        with torch.no_grad():
            ref = dec(z)
        assert torch.isfinite(out).all(), T
        torch.testing.assert_close(out, ref, atol=3e-4, rtol=0)
    torch.testing.assert_close(out, _run(dec, z, precision="ieee"), atol=3e-4, rtol=0)
    torch.testing.assert_close(out, v1.decoder_forward(z, dec), atol=3e-4, rtol=0)
    err = (_run(dec, z, precision="bf16") - ref).abs()
    assert err.max() < 0.2 and err.mean() < 0.03, (err.max(), err.mean())
    monkeypatch.setattr(v2, "POISON_OUTPUTS", False)
    torch.testing.assert_close(_run(dec, z), out, atol=0, rtol=0)         # x0 inside `out`: same bits
    lines = []
    for T in (65536, 262144):
        z = torch.randn(1, H, T, 2 * d, device="cuda")
        with torch.no_grad():
            t1 = _median_ms(lambda: v1.decoder_forward(z, dec))
            t2 = _median_ms(lambda: v2.decoder_forward(z, dec))
            t2b = _median_ms(lambda: v2.decoder_forward(z, dec, precision="bf16"))
        lines.append(f"decoder T={T}: v1 {t1:.3f} ms, v2 {t2:.3f} ms ({t1 / t2:.2f}x), v2 bf16 {t2b:.3f} ms")
        del z
    print("\n" + "\n".join(lines) + f"\n(at {time.strftime('%Y-%m-%d %H:%M')})")
