"""kernels/favor_dense.py: the fused bidirectional FAVOR+ (softmax features) forward against favor.py's torch
path and a float64 re-statement. Runs under TRITON_INTERPRET=1 on CPU with small tiles."""
from __future__ import annotations

import pytest
import torch

from kernels import favor_dense as fd
from methods.sea.estimator import identity_values
from methods.sea.favor import favor_attention, orthogonal_random_features

B, H, T, D, M = 2, 3, 37, 16, 19         # distinct sizes; m = 19 is not a power of two
DV = 2 * D                               # SEA's vals: identity half + value half


DEFAULT_TILES = {name: getattr(fd, name) for name in
                 ("KEY_BLOCK_T", "KEY_PF_BLOCK_T", "KEY_PF_FP32_BLOCK_T", "KEY_BLOCK_F", "KEY_SPLIT_ROWS",
                  "QUERY_BLOCK_T", "QUERY_BLOCK_F")}


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    # The per-feature key pass (tests taking `form` run the per-program one too). 16-row key tiles, 32-row key
    # splits (2 splits, the first with 2 tiles: the accumulation with rescaling across tiles and the combine across
    # splits), 2 key feature blocks and 2 query feature steps for m = 19 (masked tails).
    monkeypatch.setattr(fd, "KEY_FORM", "per_feature")
    monkeypatch.setattr(fd, "KEY_BLOCK_T", 16)
    monkeypatch.setattr(fd, "KEY_PF_BLOCK_T", 16)
    monkeypatch.setattr(fd, "KEY_PF_FP32_BLOCK_T", 16)
    monkeypatch.setattr(fd, "KEY_BLOCK_F", 16)
    monkeypatch.setattr(fd, "KEY_SPLIT_ROWS", 32)
    monkeypatch.setattr(fd, "QUERY_BLOCK_T", 16)
    monkeypatch.setattr(fd, "QUERY_BLOCK_F", 16)
    monkeypatch.setattr(fd, "POISON_OUTPUTS", True)


def _inputs(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = 1.5 * torch.randn(B, H, T, D, generator=g)
    k = 1.5 * torch.randn(B, H, T, D, generator=g)
    v = torch.randn(B, H, T, D, generator=g)
    proj = orthogonal_random_features(M, D, g)                                   # [M, D] fp32
    return q.to(dtype), k.to(dtype), v.to(dtype), proj


def _vals(v, valid):
    vi = identity_values(valid, B, T, D, v.device)[:, None].expand(B, H, T, D).to(v.dtype)  # [B, H, T, D]
    return torch.cat([vi, v], dim=-1)                                            # [B, H, T, 2D]


# every (masked, input dtype) case with the per-feature key pass; two with the per-program one (its A/B switch)
FORM_CASES = [("per_feature", m, dt) for m in (False, True) for dt in (torch.float32, torch.bfloat16)] + \
    [("per_program", True, torch.bfloat16), ("per_program", False, torch.float32)]


def _valid():
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 29:] = False            # batch 1: 8 padded keys; its second key split (rows 32..36) has none valid
    return valid


def favor_ref64(q, k, v, proj, valid=None, *, abs_v=False, eps=1e-6, feat_eps=1e-4, dq=None, dk=None):
    """Plain float64 statement of the same approximation. abs_v: use |v| (the size of the terms that bf16
    rounding perturbs, for the bf16 tolerance). dq, dk: the projections x' proj^T [B, H, T, m] given (the statement
    with rounded operands), else computed here."""
    q, k, v, w = (x.double() for x in (q, k, v, proj))
    if abs_v:
        v = v.abs()
    d, m = q.shape[-1], w.shape[0]
    qs, ks = q * d ** -0.25, k * d ** -0.25                                      # [B, H, T, d]
    dq = qs @ w.T if dq is None else dq                                          # [B, H, T, m]
    dk = ks @ w.T if dk is None else dk
    diag_q = (qs * qs).sum(-1, keepdim=True) / 2                                 # [B, H, T, 1]
    diag_k = (ks * ks).sum(-1, keepdim=True) / 2
    phi_q = m ** -0.5 * (torch.exp(dq - diag_q - dq.amax(-1, keepdim=True)) + feat_eps)
    keep = torch.ones(B, 1, T, 1, dtype=torch.bool) if valid is None else valid[:, None, :, None]  # [B, 1, T, 1]
    stab = dk.masked_fill(~keep, float("-inf")).amax(dim=(2, 3), keepdim=True)  # [B, H, 1, 1]
    phi_k = torch.where(keep, m ** -0.5 * (torch.exp(dk - diag_k - stab) + feat_eps), 0.0)
    kv = phi_k.transpose(-1, -2) @ v                                             # [B, H, m, Dv]
    z = phi_k.sum(2)                                                             # [B, H, m]
    num = phi_q @ kv                                                             # [B, H, T, Dv]
    den = (phi_q * z[:, :, None, :]).sum(-1, keepdim=True)                       # [B, H, T, 1]
    return num / (den + eps)


def _run(q, k, v, proj, valid, operands):
    out = fd.favor_softmax_dense(q, k, v, proj, valid=valid, operands=operands)
    assert out.dtype == torch.float32 and out.shape == (B, H, T, DV) and out.is_contiguous()
    assert torch.isfinite(out).all()                                             # poisoned: every element written
    return out


@pytest.mark.parametrize("form,masked,in_dtype", FORM_CASES)
def test_fp32_operands_match_torch_and_float64(monkeypatch, form, masked, in_dtype):
    monkeypatch.setattr(fd, "KEY_FORM", form)
    q, k, v, proj = _inputs(1, in_dtype)
    valid = _valid() if masked else None
    vals = _vals(v, valid)
    if in_dtype == torch.float32:
        q = q.transpose(1, 2).contiguous().transpose(1, 2)                       # [B, H, T, D], strided view
    out = _run(q, k, vals, proj, valid, "fp32")
    ref = favor_attention(q, k, vals, proj, kernel="softmax", causal=False, valid=valid, operands="fp32")
    ref64 = favor_ref64(q, k, vals, proj, valid)
    torch.testing.assert_close(out, ref, atol=3e-6, rtol=3e-5)
    torch.testing.assert_close(out.double(), ref64, atol=3e-6, rtol=3e-5)


@pytest.mark.parametrize("form,masked,in_dtype", FORM_CASES)
def test_bf16_operands_within_bf16_rounding(monkeypatch, form, masked, in_dtype):
    """bf16 products: phi_q, phi_k, v rounded to bf16 (unit roundoff u = 2^-9), the KV summary and the numerator
    rounded once more; normaliser fp32. First order, |out - exact| <= 5 u * (the same attention with |v|): the
    kernel and the torch bf16 path both satisfy it with 6 u (their roundings differ: the kernel rounds features
    stabilised by running maxima), so they differ by at most 12 u of that size."""
    monkeypatch.setattr(fd, "KEY_FORM", form)
    q, k, v, proj = _inputs(2, in_dtype)
    valid = _valid() if masked else None
    vals = _vals(v, valid)
    out = _run(q, k, vals, proj, valid, "bf16")
    ref = favor_attention(q, k, vals, proj, kernel="softmax", causal=False, valid=valid, operands="bf16")
    exact = favor_ref64(q, k, vals, proj, valid)
    size = favor_ref64(q, k, vals, proj, valid, abs_v=True)
    u = 2.0 ** -9
    assert ((out.double() - exact).abs() <= 6 * u * size + 1e-6).all()
    assert ((ref.double() - exact).abs() <= 6 * u * size + 1e-6).all()          # the bound itself is sound
    assert ((out - ref).double().abs() <= 12 * u * size + 1e-6).all()
    out32 = _run(q, k, vals, proj, valid, "fp32")
    assert (out - out32).abs().max() > 0                                         # the rounding did happen
    # not less accurate than the torch bf16 path overall
    assert (out.double() - exact).norm() <= 2 * (ref.double() - exact).norm()


@pytest.mark.parametrize("operands", ["fp32", "bf16"])
def test_identity_columns_made_in_the_key_pass_equal_the_concatenation(operands):
    """identity_cols=D: the first D value columns (SEA's identity rows without a padding mask) made in the key
    pass equal the call on the concatenated [identity ; v] (for bf16 operands a bf16 copy of it, as SEA's estimator
    casts it); a padding mask or the per-program pass refused."""
    q, k, v, proj = _inputs(5, torch.bfloat16)
    vals = _vals(v, None)                                                        # bf16 [identity ; v]
    if operands == "fp32":
        vals = _vals(v.float(), None)
    got = fd.favor_softmax_dense(q, k, v, proj, operands=operands, identity_cols=D)
    want = fd.favor_softmax_dense(q, k, vals, proj, operands=operands)
    assert got.shape == want.shape == (B, H, T, 2 * D)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="identity_cols"):
        fd.favor_softmax_dense(q, k, v, proj, valid=_valid(), operands=operands, identity_cols=D)


@pytest.mark.parametrize("operands", ["fp32", "bf16"])
def test_identity_columns_in_a_narrow_accumulator(monkeypatch, operands):
    """KEY_ID_SPARSE: at T = 256 with 32-row key splits each program's rows reach a few of the 32 identity columns,
    summed in a 16-wide accumulator and placed at the end; the output equals the dense identity tile's and the
    concatenation's (poisoned buffers: every partial column written)."""
    g = torch.Generator().manual_seed(6)
    Bs, Hs, Ts, n = 2, 2, 256, 32
    q, k = (1.5 * torch.randn(Bs, Hs, Ts, D, generator=g) for _ in range(2))
    v = torch.randn(Bs, Hs, Ts, D, generator=g)
    proj = orthogonal_random_features(M, D, g)
    vals = torch.cat([identity_values(None, Bs, Ts, n, "cpu")[:, None].expand(Bs, Hs, Ts, n), v], -1)
    if operands == "bf16":
        vals, v = vals.to(torch.bfloat16), v.to(torch.bfloat16)
    want = fd.favor_softmax_dense(q, k, vals, proj, operands=operands)
    assert fd._identity_span(n, Ts, fd._split_rows(Ts, Bs * Hs * -(-M // fd.KEY_BLOCK_F))) == 16
    for sparse in (True, False):
        monkeypatch.setattr(fd, "KEY_ID_SPARSE", sparse)
        got = fd.favor_softmax_dense(q, k, v, proj, operands=operands, identity_cols=n)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("operands,masked,ident", [("fp32", True, 0), ("bf16", False, 0), ("bf16", False, D),
                                                   ("fp32", False, D)])
def test_value_sums_in_one_feature_block(monkeypatch, operands, masked, ident):
    """KEY_VSUM_BLOCK: the values' sums over the keys added up only by the programs that store them, the first
    feature block's ("first") or the last's ("last"); with 16-feature blocks (two blocks and a tail for m = 19,
    poisoned buffers) the output is that of every program adding them up ("every"), bit for bit, with and without
    identity columns."""
    q, k, v, proj = _inputs(8, torch.bfloat16)                              # (16-feature blocks: the fixture)
    valid = _valid() if masked else None
    vals = v if ident else _vals(v, valid)
    vals = vals.float() if operands == "fp32" else vals
    outs = {}
    for mode in ("every", "first", "last"):
        monkeypatch.setattr(fd, "KEY_VSUM_BLOCK", mode)
        outs[mode] = fd.favor_softmax_dense(q, k, vals, proj, valid=valid, operands=operands, identity_cols=ident)
    assert torch.equal(outs["first"], outs["every"]) and torch.equal(outs["last"], outs["every"])
    with torch.no_grad():                                        # the sums matter: without them the output moves
        st = fd.key_summary(q, k, vals, proj, valid=valid, operands=operands, identity_cols=ident, feat_eps=0.0)
        st_eps = fd.key_summary(q, k, vals, proj, valid=valid, operands=operands, identity_cols=ident)
    assert not torch.equal(st["kv"], st_eps["kv"])
    monkeypatch.setattr(fd, "KEY_VSUM_BLOCK", "middle")
    with pytest.raises(ValueError, match="KEY_VSUM_BLOCK"):
        fd.favor_softmax_dense(q, k, vals, proj, valid=valid, operands=operands, identity_cols=ident)


@pytest.mark.parametrize("ident", [0, D])
def test_even_tiles_without_masks_give_the_same_output(monkeypatch, ident):
    """KEY_EVEN_TILES: where no key row can be invalid and no column is padding (T = 48 in 16-key tiles, d = 16,
    the value tile 16 wide with identity columns or 32 without), the key pass's loads and dash unmasked: the masked
    pass's output bit for bit. The condition: off with a padding mask, a T off the tile, d or the value width not a
    power of two, or the switch off."""
    g = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(B, H, 48, D, generator=g).bfloat16() for _ in range(3))
    proj = orthogonal_random_features(M, D, g)
    vals = v if ident else torch.cat([identity_values(None, B, 48, D, "cpu")[:, None].expand(B, H, 48, D)
                                      .bfloat16(), v], -1)
    outs = {}
    for keys in (False, True):
        monkeypatch.setattr(fd, "KEY_EVEN_TILES", keys)
        outs[keys] = fd.favor_softmax_dense(q, k, vals, proj, operands="bf16", identity_cols=ident)
    assert torch.isfinite(outs[True]).all()
    assert torch.equal(outs[True], outs[False])
    assert fd._even_tiles(False, 48, 16, 16, 16)
    assert not any((fd._even_tiles(True, 48, 16, 16, 16), fd._even_tiles(False, 37, 16, 16, 16),
                    fd._even_tiles(False, 48, 16, 24, 16), fd._even_tiles(False, 48, 16, 16, 40)))
    monkeypatch.setattr(fd, "KEY_EVEN_TILES", False)
    assert not fd._even_tiles(False, 48, 16, 16, 16)


@pytest.mark.parametrize("operands,masked", [("fp32", True), ("bf16", False)])
def test_bf16_output_is_the_fp32_output_rounded_once(operands, masked):
    """out_dtype=bfloat16 (SEA's encoder_operands=bf16): the same sums, rounded to nearest even as stored, so every
    element equals the fp32 call's rounded by torch; other dtypes refused."""
    q, k, v, proj = _inputs(4, torch.bfloat16)
    valid = _valid() if masked else None
    vals = _vals(v, valid)
    out32 = _run(q, k, vals, proj, valid, operands)
    out16 = fd.favor_softmax_dense(q, k, vals, proj, valid=valid, operands=operands, out_dtype=torch.bfloat16)
    assert out16.dtype == torch.bfloat16 and out16.shape == out32.shape
    assert torch.equal(out16, out32.to(torch.bfloat16))
    assert not torch.equal(out16.float(), out32)                                 # the rounding did happen
    with pytest.raises(ValueError, match="out_dtype"):
        fd.favor_softmax_dense(q, k, vals, proj, valid=valid, operands=operands, out_dtype=torch.float16)


@pytest.mark.parametrize("operands,masked", [("fp32", True), ("bf16", False)])
def test_narrow_last_feature_block_and_combine_kernel_equal_the_padded_blocks_and_torch(monkeypatch, masked,
                                                                                    operands):
    """m = 40 in blocks of 32 features: the last key-pass block holds 8 (KEY_TAIL: a 16-wide tile instead of a
    32-wide one) and the partials are combined by the Triton kernel or by torch operations; all three agree to float
    rounding (bf16: the same roundings in another summation order) and fp32 matches the float64 statement."""
    monkeypatch.setattr(fd, "KEY_BLOCK_F", 32)
    g = torch.Generator().manual_seed(21)
    q, k, v = (1.5 * torch.randn(B, H, T, D, generator=g) for _ in range(3))
    proj = orthogonal_random_features(40, D, g)
    valid = _valid() if masked else None
    vals = _vals(v, valid)
    outs = {}
    for tail, combine in ((False, "torch"), (True, "torch"), (True, "triton")):
        monkeypatch.setattr(fd, "KEY_TAIL", tail)
        monkeypatch.setattr(fd, "COMBINE", combine)
        outs[tail, combine] = _run(q, k, vals, proj, valid, operands)
    base = outs[False, "torch"]                                                  # the padded blocks, torch combine
    size = favor_ref64(q, k, vals, proj, valid, abs_v=True)                       # bf16: 12 u of this (see above)
    for key, out in outs.items():
        if operands == "fp32":
            torch.testing.assert_close(out, base, atol=3e-6, rtol=3e-5, msg=lambda m: f"{key}: {m}")
        else:
            assert ((out - base).double().abs() <= 12 * 2.0 ** -9 * size + 1e-6).all(), key
    if operands == "fp32":
        torch.testing.assert_close(outs[True, "triton"].double(), favor_ref64(q, k, vals, proj, valid),
                                   atol=3e-6, rtol=3e-5)


@pytest.mark.parametrize("operands", ["fp32", "bf16"])
def test_16bit_q_k_read_exactly(operands):
    """SEA's estimator passes q and k in the layer's dtype (no fp32 copies): under the interpreter the kernel's own
    casts give the output of their fp32 copies bit for bit."""
    q, k, v, proj = _inputs(3, torch.bfloat16)
    vals = _vals(v.float(), None)
    torch.testing.assert_close(_run(q, k, vals, proj, None, operands),
                               _run(q.float(), k.float(), vals, proj, None, operands), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("operands", ["fp32", "bf16"])
def test_cuda_16bit_q_k_read_exactly(monkeypatch, operands):
    for name, val in DEFAULT_TILES.items():
        monkeypatch.setattr(fd, name, val)
    monkeypatch.setattr(fd, "KEY_PF_DASH", "tf32")     # the same dash products for both (bf16x2 needs bf16 keys)
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 4, 4096, 64, generator=g).cuda().bfloat16() for _ in range(3))
    proj = orthogonal_random_features(266, 64, g).cuda()
    vals = torch.cat([identity_values(None, 1, 4096, 64, "cuda")[:, None].expand(1, 4, 4096, 64), v.float()], -1)
    with torch.no_grad():
        a = fd.favor_softmax_dense(q, k, vals, proj, operands=operands, precision="tf32")
        b = fd.favor_softmax_dense(q.float(), k.float(), vals, proj, operands=operands, precision="tf32")
    # Not bit for bit on the GPU (measured: 43 % / 29 % of the elements differ, by at most 2.7e-6 / 1.6e-4: the
    # compiled code of a bf16 load differs from an fp32 one); rounding-size differences only.
    rel = ((a - b).norm() / b.norm()).item()
    assert rel <= (1e-5 if operands == "fp32" else 1e-3), rel


def test_default_tiles_production_widths(monkeypatch):
    """The module's own tile sizes with SEA's widths (d = 64, m = 266, Dv = 128) on a short sequence."""
    for name, value in DEFAULT_TILES.items():
        monkeypatch.setattr(fd, name, value)
    g = torch.Generator().manual_seed(6)
    b, h, t, d, m, dv = 1, 2, 100, 64, 266, 128
    q, k = torch.randn(b, h, t, d, generator=g), torch.randn(b, h, t, d, generator=g)
    v = torch.randn(b, h, t, dv, generator=g).bfloat16()
    proj = orthogonal_random_features(m, d, g)                                   # [m, d]
    valid = torch.ones(b, t, dtype=torch.bool)
    valid[0, 90:] = False
    out = fd.favor_softmax_dense(q, k, v, proj, valid=valid, operands="fp32")
    ref = favor_attention(q, k, v, proj, kernel="softmax", causal=False, valid=valid, operands="fp32")
    torch.testing.assert_close(out, ref, atol=3e-6, rtol=3e-5)
    out = fd.favor_softmax_dense(q, k, v, proj, valid=valid, operands="bf16")
    ref = favor_attention(q, k, v, proj, kernel="softmax", causal=False, valid=valid, operands="bf16")
    size = favor_attention(q, k, v.abs(), proj, kernel="softmax", causal=False, valid=valid, operands="fp32")
    assert ((out - ref).abs() <= 12 * 2.0 ** -9 * size + 1e-6).all()


def test_padded_keys_have_no_influence():
    q, k, v, proj = _inputs(3)
    valid = _valid()
    vals = _vals(v, valid)
    for operands in ("fp32", "bf16"):
        out = _run(q, k, vals, proj, valid, operands)
        k2, vals2 = k.clone(), vals.clone()
        k2[1, :, 29:] = torch.randn(H, T - 29, D) * 5                              # padded keys of batch 1
        k2[1, 0, 30] = float("nan")
        vals2[1, :, 29:] = 1e6
        out2 = _run(q, k2, vals2, proj, valid, operands)
        assert torch.equal(out, out2)
    # all-True mask equals no mask
    allv = torch.ones(B, T, dtype=torch.bool)
    torch.testing.assert_close(_run(q, k, vals, proj, allv, "fp32"), _run(q, k, vals, proj, None, "fp32"),
                               atol=0, rtol=0)


@pytest.mark.parametrize("form", ["per_feature", "per_program"])
def test_no_valid_key_gives_zero(form, monkeypatch):
    monkeypatch.setattr(fd, "KEY_FORM", form)
    monkeypatch.setattr(fd, "KEY_SPLIT_ROWS", None)                              # automatic split: here one
    monkeypatch.setattr(fd, "KEY_PROGRAMS", 12)                                  # 48-row split per (head, block)
    monkeypatch.setattr(fd, "KEY_PF_PROGRAMS", 12)
    assert fd._split_rows(T, B * H * 2) == 48
    q, k, v, proj = _inputs(4)
    valid = _valid()
    valid[0] = False                                                             # batch 0: no real key at all
    out = _run(q, k, _vals(v, valid), proj, valid, "fp32")
    assert (out[0] == 0).all()
    torch.testing.assert_close(out[1].double(), favor_ref64(q, k, _vals(v, valid), proj, valid)[1],
                               atol=3e-6, rtol=3e-5)


@pytest.mark.parametrize("form", ["per_feature", "per_program"])
def test_keys_of_very_different_norms(monkeypatch, form):
    """Keys from near zero to 6x the usual size in one head (the stabilisers see values far apart; a value that
    matters must not underflow, none may overflow): fp32 against the float64 statement."""
    monkeypatch.setattr(fd, "KEY_FORM", form)
    q, k, v, proj = _inputs(8)
    scale = torch.logspace(-2, 0.8, T)[torch.randperm(T, generator=torch.Generator().manual_seed(0))]
    k = k * scale[None, None, :, None]
    vals = _vals(v, None)
    out = _run(q, k, vals, proj, None, "fp32")
    torch.testing.assert_close(out.double(), favor_ref64(q, k, vals, proj), atol=3e-6, rtol=3e-5)


@pytest.mark.parametrize("key_off,query_off", [("norm", "norm"), ("running", "running"), ("norm", "running"),
                                               ("running", "norm")])
@pytest.mark.parametrize("diag", ["pre", "tile"])
@pytest.mark.parametrize("feature_exp", ["exp", "ex2_ftz"])
def test_offset_forms_equal_the_float64_statement(monkeypatch, key_off, query_off, diag, feature_exp):
    """KEY_OFFSET / QUERY_OFFSET: the features exp(dash - diag - |proj_f|^2 / 2) (resp. its maximum over features for
    the queries) with the per-head / per-row maxima applied once, against the running maxima: both the same function.
    Queries of norms from 0.1x to 6x the usual, keys from 0.5x to 2x (wider key norms make every feature's phi_k
    mostly feat_eps, where a wrong per-feature factor no longer shows: test_keys_of_very_different_norms has those),
    padded keys, an empty key split: fp32 against float64, and the two forms within the same tolerance of each
    other. diag="tile": the query offset from its own launch. FEATURE_EXP="ex2_ftz" (2^x with log2 e folded into
    the offsets' subtraction) holds the same bound."""
    monkeypatch.setattr(fd, "KEY_DIAG", diag)
    monkeypatch.setattr(fd, "FEATURE_EXP", feature_exp)
    q, k, v, proj = _inputs(11)
    g = torch.Generator().manual_seed(3)
    q = q * torch.logspace(-1, 0.8, T)[torch.randperm(T, generator=g)][None, None, :, None]
    k = k * torch.logspace(-0.3, 0.3, T)[torch.randperm(T, generator=g)][None, None, :, None]
    valid = _valid()
    vals = _vals(v, valid)
    exact = favor_ref64(q, k, vals, proj, valid)
    monkeypatch.setattr(fd, "KEY_OFFSET", key_off)
    monkeypatch.setattr(fd, "QUERY_OFFSET", query_off)
    out = _run(q, k, vals, proj, valid, "fp32")
    torch.testing.assert_close(out.double(), exact, atol=3e-6, rtol=3e-5)
    monkeypatch.setattr(fd, "KEY_OFFSET", "running")
    monkeypatch.setattr(fd, "QUERY_OFFSET", "running")
    torch.testing.assert_close(out, _run(q, k, vals, proj, valid, "fp32"), atol=3e-6, rtol=3e-5)


def test_offsets_are_the_projection_norms(monkeypatch):
    """The query pass's offset C = max_f |proj_f|^2 / 2 comes from the combine's per-block maxima (the kernel's blocks
    of COMBINE_BLOCK_F features, one block in the torch form): each block's value and their maximum as written."""
    q, k, v, proj = _inputs(12)
    half = 0.5 * proj.double().square().sum(1)                                   # [M]
    for combine in ("triton", "torch"):
        monkeypatch.setattr(fd, "COMBINE", combine)
        cs = fd.key_summary(q, k, v, proj)["cs_part"].double()                   # [B H, blocks]
        if combine == "triton":
            nb = -(-M // fd.COMBINE_BLOCK_F)
            blocks = torch.stack([half[i * fd.COMBINE_BLOCK_F:(i + 1) * fd.COMBINE_BLOCK_F].max() for i in range(nb)])
            torch.testing.assert_close(cs, blocks.expand(B * H, nb), rtol=1e-6, atol=0)
        torch.testing.assert_close(cs.amax(1), half.max().expand(B * H), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="KEY_OFFSET"):
        monkeypatch.setattr(fd, "KEY_OFFSET", "max")
        fd.favor_softmax_dense(q, k, v, proj)
    monkeypatch.setattr(fd, "KEY_OFFSET", "norm")
    monkeypatch.setattr(fd, "QUERY_OFFSET", "rowmax")
    with pytest.raises(ValueError, match="QUERY_OFFSET"):
        fd.favor_softmax_dense(q, k, v, proj)


@pytest.mark.parametrize("key_dash,query_dash", [("fp16", "prec"), ("fp16", "fp16"), ("tf32", "fp16")])
def test_fp16_dash_is_the_statement_with_fp16_rounded_operands(monkeypatch, key_dash, query_dash):
    """KEY_PF_DASH="fp16" / QUERY_DASH="fp16" under precision="tf32": dash from one fp16 product, x_scale proj and
    the keys (or proj and the scaled queries) rounded to nearest in fp16: equal to the float64 statement given those
    rounded operands, and visibly away from the unrounded one. A key beyond fp16's range is clamped, not inf."""
    monkeypatch.setattr(fd, "KEY_PF_DASH", key_dash)
    monkeypatch.setattr(fd, "QUERY_DASH", query_dash)
    q, k, v, proj = _inputs(13, torch.bfloat16)
    valid = _valid()
    vals = _vals(v.float(), valid)
    out = fd.favor_softmax_dense(q, k, vals, proj, valid=valid, operands="fp32", precision="tf32")
    xs = D ** -0.25
    f16 = lambda t: t.to(torch.float16).double()  # noqa: E731
    plain_dq = q.double() * xs @ proj.double().T
    # key_dash "tf32": one TF32 product, which the interpreter computes exactly
    dk = f16(k.float()) @ f16(proj * xs).T if key_dash == "fp16" else k.double() * xs @ proj.double().T
    dq = f16(q.float() * xs) @ f16(proj).T if query_dash == "fp16" else plain_dq
    exact = favor_ref64(q, k, vals, proj, valid, dq=dq, dk=dk)
    torch.testing.assert_close(out.double(), exact, atol=3e-6, rtol=3e-5)
    plain = favor_ref64(q, k, vals, proj, valid)
    assert (out.double() - plain).abs().max() > 10 * (out.double() - exact).abs().max()
    big = k.clone()
    big[0, 0, 3] = 1e6                                                           # beyond fp16's 65504
    assert torch.isfinite(fd.favor_softmax_dense(q, big, vals, proj, valid=valid, operands="fp32",
                                                 precision="tf32")).all()
    monkeypatch.setattr(fd, "QUERY_DASH", "tf32")
    with pytest.raises(ValueError, match="QUERY_DASH"):
        fd.favor_softmax_dense(q, k, vals, proj, valid=valid, operands="fp32", precision="tf32")


@pytest.mark.parametrize("diag", ["pre", "tile"])
def test_bf16x2_dash_for_bf16_keys(monkeypatch, diag):
    """precision="tf32" with bf16 keys in the per-feature pass: dash from two bf16 products of the raw keys (the
    projection split in a high and a low bf16 part) and |k'|^2 / 2 read from the small pre-pass or summed from the
    tile: within ~2^-16 of the float64 statement (one-pass TF32's 2^-11 would not pass this tolerance on a GPU; the
    interpreter multiplies "tf32" exactly, so the fp32-key call below is the exact path)."""
    monkeypatch.setattr(fd, "KEY_DIAG", diag)
    q, k, v, proj = _inputs(9, torch.bfloat16)
    valid = _valid()
    vals = _vals(v.float(), valid)
    out = fd.favor_softmax_dense(q, k, vals, proj, valid=valid, operands="fp32", precision="tf32")
    assert torch.isfinite(out).all()
    exact = favor_ref64(q, k, vals, proj, valid)
    rel = ((out.double() - exact).norm() / exact.norm()).item()
    assert rel < 3e-5, rel
    exact_path = fd.favor_softmax_dense(q, k.float(), vals, proj, valid=valid, operands="fp32", precision="tf32")
    assert not torch.equal(out, exact_path)                                      # the split products did run
    torch.testing.assert_close(exact_path.double(), exact, atol=3e-6, rtol=3e-5)


def test_errors(monkeypatch):
    q, k, v, proj = _inputs(5)
    assert fd.favor_dense_usable("cpu")                                          # conftest set TRITON_INTERPRET=1
    qg = q.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="forward-only"):
        fd.favor_softmax_dense(qg, k, v, proj)
    bad = [
        dict(k=k[:, :, :-1]),                                                    # T mismatch
        dict(k=k[:, :2]),                                                        # H mismatch
        dict(v=v[:1]),                                                           # B mismatch
        dict(q=torch.randn(B, H, T, 129), k=torch.randn(B, H, T, 129), proj=torch.randn(M, 129)),   # d > 128
        dict(v=torch.randn(B, H, T, 129)),                                       # Dv > 128
        dict(proj=torch.randn(M, D + 1)),                                        # proj width != d
        dict(proj=proj.double()),                                                # proj dtype
        dict(valid=torch.ones(B, T + 1, dtype=torch.bool)),                      # valid shape
        dict(valid=torch.ones(B, T)),                                            # valid dtype
        dict(q=q.long()),                                                        # integer input
        dict(operands="fp16"),
    ]
    monkeypatch.setattr(fd, "KEY_FORM", "rows")
    with pytest.raises(ValueError, match="KEY_FORM"):
        fd.favor_softmax_dense(q, k, v, proj)
    monkeypatch.setattr(fd, "KEY_FORM", "per_feature")
    for change in bad:
        args = dict(q=q, k=k, v=v, proj=proj, valid=None, operands="fp32")
        args.update(change)
        with pytest.raises(ValueError):
            fd.favor_softmax_dense(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("proj"), **args)
    with torch.no_grad():                                                        # grad off: fine
        assert fd.favor_softmax_dense(qg, k, v, proj).shape == (B, H, T, D)


@pytest.mark.gpu
@pytest.mark.parametrize("form", ["per_feature", "per_program"])
@pytest.mark.parametrize("feature_exp", ["exp", "ex2_ftz"])
@pytest.mark.parametrize("operands,precision,call", [("fp32", "tf32x3", None), ("fp32", "ieee", None),
                                                     ("bf16", None, None), ("bf16", None, "tf32"),
                                                     ("fp32", None, "tf32")])
def test_compiled_kernel_at_sea_widths_matches_torch(monkeypatch, operands, precision, call, form, feature_exp):
    """On CUDA, default tiles, SEA's bidirectional widths (d = 64, m = 266, Dv = 128), a padding mask: the fused
    pass against the torch path (fp32: float rounding; bf16: the same rounding-size bound as on the CPU). call:
    the call's precision= (tf32: one-pass products, held to the bf16 bound; its error is printed)."""
    for name, value in DEFAULT_TILES.items():
        monkeypatch.setattr(fd, name, value)
    monkeypatch.setattr(fd, "KEY_FORM", form)
    monkeypatch.setattr(fd, "FEATURE_EXP", feature_exp)                      # (ex2_ftz: PTX's ex2.approx.ftz)
    if precision:
        monkeypatch.setattr(fd, "FP32_PRECISION", precision)
    g = torch.Generator(device="cpu").manual_seed(5)
    B, H, T, d = 2, 4, 3000, 64
    q, k, v = (torch.randn(B, H, T, d, generator=g).cuda().to(torch.bfloat16) for _ in range(3))
    proj = orthogonal_random_features(266, d, torch.Generator().manual_seed(1)).cuda()
    valid = torch.ones(B, T, dtype=torch.bool, device="cuda")
    valid[1, 2500:] = False
    vals = torch.cat([identity_values(valid, B, T, d, q.device)[:, None].expand(B, H, T, d),
                      v.float() * valid[:, None, :, None]], -1)                      # [B, H, T, 2d]
    want = favor_attention(q, k, vals, proj, kernel="softmax", causal=False, valid=valid, backend="torch",
                           operands=operands)
    got = fd.favor_softmax_dense(q, k, vals, proj, valid=valid, operands=operands, precision=call)
    assert torch.isfinite(got).all()
    rel = float((got.double() - want.double()).norm() / want.double().norm())
    print(f"favor_dense {form} {feature_exp} operands={operands} precision={precision or call or 'default'}: "
          f"rel L2 {rel:.3g}")
    assert rel < (1e-5 if operands == "fp32" and call is None else 1e-2), rel


def _cuda_sea_case(monkeypatch, seed: int, T: int):
    """GPU tests at SEA's widths with the default tiles: bf16 q, k, v [1, 4, T, 64] on CUDA, the orthogonal
    projection (m = 266) and the fp32 values [identity ; v] as SEA's estimator concatenates them."""
    for name, val in DEFAULT_TILES.items():
        monkeypatch.setattr(fd, name, val)
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 4, T, 64, generator=g).cuda().bfloat16() for _ in range(3))
    proj = orthogonal_random_features(266, 64, g).cuda()
    vals = torch.cat([identity_values(None, 1, T, 64, "cuda")[:, None].expand(1, 4, T, 64), v.float()], -1)
    return q, k, v, proj, vals


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16x2_dash_is_finer_than_one_pass_tf32(monkeypatch):
    """On the GPU, precision="tf32" with bf16 keys: the feature sums z of the per-feature pass's two bf16 products
    (KEY_PF_DASH="bf16x2") against its one TF32 product ("tf32"), both against the exact fp32 ("ieee") ones: the
    split products are several times closer. (z has no other product; KV's error is its TF32 product with the
    values, the whole output's the query pass's TF32: 4.0e-4 against 4.1e-4, results/nvidia-h200/sea-key-pass/.)"""
    q, k, v, proj, vals = _cuda_sea_case(monkeypatch, 7, 4096)
    with torch.no_grad():
        exact = fd.key_summary(q, k, vals, proj, operands="fp32", precision="ieee")
        rel = {}
        for dash in ("bf16x2", "tf32"):
            monkeypatch.setattr(fd, "KEY_PF_DASH", dash)
            got = fd.key_summary(q, k, vals, proj, operands="fp32", precision="tf32")
            rel[dash] = ((got["z"].double() - exact["z"].double()).norm() / exact["z"].double().norm()).item()
    print(f"favor_dense feature sums z, dash products, rel L2 to ieee: {rel}")
    assert rel["bf16x2"] * 4 < rel["tf32"], rel


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_dash_as_accurate_as_one_pass_tf32(monkeypatch):
    """On the GPU at SEA's widths, precision="tf32", bf16 q / k: the output with both passes' dash from one fp16
    product (KEY_PF_DASH = QUERY_DASH = "fp16") against the exact fp32 ("ieee") call, next to the same call with
    TF32 dash products (KEY_PF_DASH="tf32", QUERY_DASH="prec"): the same 11-bit operand rounding, so errors of the
    same size (printed)."""
    q, k, v, proj, vals = _cuda_sea_case(monkeypatch, 8, 4096)
    with torch.no_grad():
        exact = fd.favor_softmax_dense(q, k, vals, proj, operands="fp32", precision="ieee").double()
        rel = {}
        for key_dash, query_dash in (("fp16", "fp16"), ("tf32", "prec")):
            monkeypatch.setattr(fd, "KEY_PF_DASH", key_dash)
            monkeypatch.setattr(fd, "QUERY_DASH", query_dash)
            got = fd.favor_softmax_dense(q, k, vals, proj, operands="fp32", precision="tf32").double()
            rel[key_dash] = ((got - exact).norm() / exact.norm()).item()
    print(f"favor_dense dash products, rel L2 to ieee: {rel}")
    assert rel["fp16"] < 2 * rel["tf32"] and rel["fp16"] < 1e-3, rel


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("ident", [0, 64])
def test_cuda_value_sums_in_one_feature_block(monkeypatch, ident):
    """KEY_VSUM_BLOCK on the GPU at SEA's widths (bf16 operands, TF32, three feature blocks, the last a 16-wide tail):
    "first" adds the values up in the programs that stored them before, so the output is the same bit for bit; "last"
    in the tail block's programs, whose tiles may sum a key tile's rows in another order: the bf16 summary KV is
    then the same but for rare last-bit flips (the sums enter it times feat_eps), and z is untouched. Without the
    sums (feat_eps = 0) nearly every element of KV moves, so the bar can see a lost or misplaced sum."""
    q, k, v, proj, vals = _cuda_sea_case(monkeypatch, 10, 3000)
    vals = v if ident else vals.to(torch.bfloat16)
    outs, sums = {}, {}
    with torch.no_grad():
        for mode in ("every", "first", "last"):
            monkeypatch.setattr(fd, "KEY_VSUM_BLOCK", mode)
            outs[mode] = fd.favor_softmax_dense(q, k, vals, proj, operands="bf16", precision="tf32",
                                                identity_cols=ident)
            sums[mode] = fd.key_summary(q, k, vals, proj, operands="bf16", precision="tf32", identity_cols=ident)
        no_eps = fd.key_summary(q, k, vals, proj, operands="bf16", precision="tf32", identity_cols=ident,
                                feat_eps=0.0)
    assert torch.equal(outs["first"], outs["every"])
    kv, kv_last = sums["every"]["kv"].float(), sums["last"]["kv"].float()
    assert torch.equal(sums["last"]["z"], sums["every"]["z"])
    moved = kv_last != kv
    print(f"KEY_VSUM_BLOCK=last: {moved.float().mean().item():.2e} of KV's elements moved; without the sums "
          f"{(no_eps['kv'].float() != kv).float().mean().item():.2e}")
    assert moved.float().mean() < 1e-2
    assert ((kv_last - kv).abs() <= kv.abs() * 2.0 ** -7).all()                 # at most one bf16 unit each
    assert (no_eps["kv"].float() != kv).float().mean() > 0.5
    top = outs["every"].abs().max().item()                                     # (signed sums may cancel to ~0)
    torch.testing.assert_close(outs["last"], outs["every"], rtol=2.0 ** -7, atol=2.0 ** -7 * top)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("ident", [0, 64])
def test_cuda_even_tiles_give_the_same_output(monkeypatch, ident):
    """KEY_EVEN_TILES on the GPU at SEA's widths (T = 4096, a multiple of the 128-key tile; bf16 operands, TF32): the
    unmasked key pass gives the masked pass's output bit for bit (the same values in the same products)."""
    q, k, v, proj, vals = _cuda_sea_case(monkeypatch, 13, 4096)
    vals = v if ident else vals.to(torch.bfloat16)
    monkeypatch.setattr(fd, "KEY_EVEN_TILES", False)
    assert fd._even_tiles(False, 4096, fd.KEY_PF_BLOCK_T, 64, 64 if ident else 128) is False   # (switch off)
    outs = {}
    with torch.no_grad():
        for even in (False, True):
            monkeypatch.setattr(fd, "KEY_EVEN_TILES", even)
            outs[even] = fd.favor_softmax_dense(q, k, vals, proj, operands="bf16", precision="tf32",
                                                identity_cols=ident)
    assert fd._even_tiles(False, 4096, fd.KEY_PF_BLOCK_T, 64, 64 if ident else 128)
    assert torch.equal(outs[True], outs[False])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("operands,precision", [("fp32", "ieee"), ("fp32", "tf32"), ("bf16", "tf32")])
def test_cuda_identity_columns_against_the_concatenation(monkeypatch, operands, precision):
    """On the GPU at SEA's widths: identity_cols=64, in the dense tile and in the narrow accumulator, against the
    concatenated [identity ; v] (bf16 for bf16 operands, as SEA's estimator builds it). Bit for bit on the CPU; on an
    H200 the kernel's identity weights differ from torch's in the last fp32 bits (the compiler's fused multiply-adds:
    with FMA products 17 % of the outputs, by <= 5.9e-7 relative), which can flip the TF32 / bf16 rounding of an
    identity operand (KV within one TF32 step: 4.4e-5 relative), and the narrow accumulator sums in another order; so
    a few outputs move by one later rounding step (the query pass's TF32 operands, KV's bf16 rounding: 12 outputs by
    <= 7.5e-3 relative, rel L2 1.6e-5, with bf16 operands; results/nvidia-h200/sea-bf16-encoder/call2/, call4/).
    The narrow accumulator's v columns sum signed terms in another order: where they cancel, the difference is
    relative to the terms' magnitudes, not to the sum (18608 outputs differ with bf16 operands, by up to 0.23 of a
    near-zero output, rel L2 2.9e-5; call5/). Held here: FMA products within 2e-6 relative everywhere; otherwise one
    rounding step (2^-10 TF32, 2^-7 / 2^-6 bf16) of the value or of the magnitudes' scale at most, > 1e-6 apart on
    < 0.1 % of the outputs, rel L2 < 1e-5 (TF32) / 1e-4 (bf16)."""
    q, k, v, proj, vals = _cuda_sea_case(monkeypatch, 9, 3000)
    vals = vals.to(torch.bfloat16) if operands == "bf16" else vals
    kw = dict(operands=operands, precision=precision)
    step = 2 ** -6 if operands == "bf16" else 2 ** -10          # one rounding step of an output (relative)
    kv_step = 2 ** -7 if operands == "bf16" else 2 ** -10       # of a KV entry (bf16 as stored; TF32 operands)
    with torch.no_grad():
        want = fd.favor_softmax_dense(q, k, vals, proj, **kw)
        want_sum = fd.key_summary(q, k, vals, proj, **kw)
        # the same sums over |values|: the scale of the terms a signed sum cancels (an order difference moves the
        # sum by fp32 ulps of that scale; a dropped or misplaced key row by ~1 / T of it)
        mag = fd.favor_softmax_dense(q, k, vals.abs(), proj, **kw)
        mag_kv = fd.key_summary(q, k, vals.abs(), proj, **kw)["kv"].float()
        for sparse in (False, True):                                    # the dense tile, the narrow accumulator
            monkeypatch.setattr(fd, "KEY_ID_SPARSE", sparse)
            got = fd.favor_softmax_dense(q, k, v, proj, identity_cols=64, **kw)
            got_sum = fd.key_summary(q, k, v, proj, identity_cols=64, **kw)
            torch.testing.assert_close(got_sum["z"], want_sum["z"], atol=0, rtol=1e-6)   # no value product
            kv, kv_want = got_sum["kv"].float(), want_sum["kv"].float()
            diff = (got - want).abs()
            rel = (diff.norm() / want.norm()).item()
            print(f"favor_dense identity columns ({'narrow' if sparse else 'dense'}) {operands}/{precision}: "
                  f"rel L2 {rel:.2e}, max rel {(diff / want.abs()).max().item():.2e}, "
                  f"{int((diff > 0).sum())} outputs differ")
            if precision == "ieee":
                torch.testing.assert_close(got, want, atol=0, rtol=2e-6)
                torch.testing.assert_close(kv, kv_want, atol=0, rtol=2e-6)
                continue
            assert ((kv - kv_want).abs() <= kv_step * kv_want.abs() + 2 ** -16 * mag_kv).all()
            off = diff > 1e-6 + 1e-6 * want.abs()
            assert off.float().mean().item() < 1e-3, off.float().mean().item()
            assert (diff <= step * mag + 1e-6).all(), (diff - step * mag).max().item()
            assert rel < (1e-4 if operands == "bf16" else 1e-5), rel
