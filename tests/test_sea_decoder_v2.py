"""kernels/sea_decoder_v2.py: the three-kernel causal CNN decoder forward against SEA's CausalDecoder module and a
float64 restatement written tap by tap. Runs under TRITON_INTERPRET=1 on CPU (tests/conftest.py) with shrunk
tiles: kernel 1 takes 16-row blocks in 16-feature steps, the conv kernels 32 positions (4 rows at w = 6 or 8,
2 rows at w = 16, 8 rows at w = 4), so there are several blocks, a partial last block, T shorter than a block,
and T = 1. Outputs and intermediates are NaN-poisoned, so a skipped write in any of the three kernels fails."""
import time

import pytest
import torch

import kernels.sea_decoder_v2 as v2
from kernels.sea_decoder_v2 import decoder_forward
from methods.sea.estimator import CausalDecoder
from tests.test_sea_decoder import _decoder, _z, assert_matches_module, small_split_tiles

# (B, H, d, K, T): w = 6 (padded to 8), H = 3, 2 batches, 10 conv blocks + a partial one; w = 16 (SEA's width)
# with T = 3 < every block; w = 4 with 9 conv blocks (70 = 8 x 8 + 6) and 2d = 32 (two feature steps); H = 5,
# w = 5 and T = 1. The contract shared with the fused kernel (masked kernel row ignored, causality, input layouts,
# refusals) is tested for both kernels in tests/test_sea_decoder.py.
SHAPES = [(2, 3, 8, 24, 37), (1, 2, 16, 64, 3), (1, 2, 16, 16, 70), (1, 5, 4, 20, 1)]


@pytest.fixture(autouse=True)
def _small_tiles(monkeypatch):
    small_split_tiles(monkeypatch)


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


# The module comparison at the shared shapes is in tests/test_sea_decoder.py (both kernels); here the split
# kernel's own shapes (H = 5, w = 5, T = 1 among them) against the module and the tap-by-tap float64 restatement.
@pytest.mark.parametrize("B,H,d,K,T", SHAPES)
def test_matches_causal_decoder_module_and_f64(B, H, d, K, T):
    dec = _decoder(d, H, K)
    z = _z(B, H, T, d)
    out = _run(dec, z)
    ref = assert_matches_module(out, dec, z)
    f64 = _f64_taps(dec, z)
    torch.testing.assert_close(out.double(), f64, atol=1e-4, rtol=0)
    torch.testing.assert_close(ref.double(), f64, atol=1e-4, rtol=0)      # the restatement is the module's


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


def test_refuses_bad_tile_settings(monkeypatch):
    """The split kernel's own settings (the shared refusals are in tests/test_sea_decoder.py)."""
    B, H, d, K, T = SHAPES[0]
    dec = _decoder(d, H, K).requires_grad_(False)
    z = _z(B, H, T, d)
    monkeypatch.setattr(v2, "BLOCK_M", 48)
    with pytest.raises(ValueError, match="BLOCK_M"):
        decoder_forward(z, dec)


@pytest.mark.gpu
def test_cuda_sea_sizes_against_module_and_v1_with_timings(monkeypatch):
    """SEA's sizes (B=1, H=16, d=64, K=64) with the default tiles: T = 65536 against the module (true fp32) and
    the fused one-kernel decoder, short T (partial / single blocks), bf16 at a loose tolerance, the production
    path (x0 in the output buffer) equal to the poisoned one; prints median times of both kernels (run with -s)."""
    import kernels.sea_decoder as v1
    from harness.measure import time_cuda

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
            t1 = time_cuda(lambda: v1.decoder_forward(z, dec), rep_ms=50).median_ms
            t2 = time_cuda(lambda: v2.decoder_forward(z, dec), rep_ms=50).median_ms
            t2b = time_cuda(lambda: v2.decoder_forward(z, dec, precision="bf16"), rep_ms=50).median_ms
        lines.append(f"decoder T={T}: v1 {t1:.3f} ms, v2 {t2:.3f} ms ({t1 / t2:.2f}x), v2 bf16 {t2b:.3f} ms")
        del z
    print("\n" + "\n".join(lines) + f"\n(at {time.strftime('%Y-%m-%d %H:%M')})")
