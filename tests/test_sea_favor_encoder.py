"""kernels/sea_favor_encoder.py: the fused causal FAVOR+ (relu features) -> num/den -> encoder + scaler forward,
against (a) its float64 plain restatement favor_encoder_ref, (b) what SEA's causal estimator computes today
(favor_attention over cat([V_I rows, v]) then Estimator.enc / Estimator.scaler, methods/sea/), (c) itself split
into query blocks with the carried state, and (d) its refusals. Runs under TRITON_INTERPRET=1 on CPU
(tests/conftest.py) with shrunk chunks (CHUNK=16, GROUP=2 unless a test says otherwise) so that several
chunks, several groups, a partial last group and a partial last chunk are exercised."""
import math

import pytest
import torch

import kernels.sea_favor_encoder as fe
from kernels.sea_favor_encoder import favor_encoder_forward, favor_encoder_ref
from methods.sea.estimator import Estimator
from methods.sea.favor import favor_attention

B, H = 2, 3
D = 16
NBF = {7: 6.0, 33: 1.34}     # Estimator's m = int(d log d / nbf) at d=16 -> the feature counts tested
MAX_LEN = 200

# tilings: (CHUNK, GROUP, MAX_CHECKPOINTS). At T=130: c16g2 = 9 chunks in 5 groups (the last group one chunk,
# the last chunk 2 rows); c16auto = GROUP from MAX_CHECKPOINTS=4 -> 4 chunks per group, 3 groups;
# default = 64-row chunks, one chunk per group (3 groups, the last 2 rows).
TILINGS = {"c16g2": (16, 2, 256), "c16auto": (16, None, 4), "default": (64, None, 256)}


@pytest.fixture(autouse=True)
def _small_tiles(monkeypatch):
    monkeypatch.setattr(fe, "POISON_OUTPUTS", True)
    monkeypatch.setattr(fe, "SCAN_BLOCK_F", 64)             # several scan programs per head (key sums: partial at m=7)
    monkeypatch.setattr(fe, "SCAN_STEPS", 2)                # several steps of the scan's chain, a partial last step
    _tiling(monkeypatch, "c16g2")


def _tiling(monkeypatch, name):
    chunk, group, ckpt = TILINGS[name]
    monkeypatch.setattr(fe, "CHUNK", chunk)
    # precision="tf32" calls: the same tiling, except "default": the module's own 128-row chunks
    monkeypatch.setattr(fe, "CHUNK_TF32", 128 if name == "default" else chunk)
    monkeypatch.setattr(fe, "GROUP", group)
    monkeypatch.setattr(fe, "MAX_CHECKPOINTS", ckpt)


def _estimator(m, d=D, seed=0, heads=H, max_len=MAX_LEN):
    nbf = NBF[m] if d == D else d * math.log(d) / (m + 0.5)
    est = Estimator(d=d, H=heads, K=16, causal=True, nbf=nbf, max_len=max_len, seed=seed)
    assert est.proj.shape == (m, d)
    gen = torch.Generator().manual_seed(50 + m)
    with torch.no_grad():                                   # LayerNorm affine away from its 1 / 0 init
        ln = est.enc[1]
        ln.weight.copy_(0.5 + torch.rand(2 * d, generator=gen))
        ln.bias.copy_(0.6 * torch.rand(2 * d, generator=gen) - 0.3)
    return est


def _qkv(T, d=D, seed=1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, d, generator=gen).to(dtype) for _ in range(3))   # [B, H, T, d] each
    return q, k, v


def _weights(est):
    lin, ln, sc = est.enc[0], est.enc[1], est.scaler
    return [t.detach() if torch.is_tensor(t) else t
            for t in (est.v_id, est.proj, lin.weight, lin.bias, ln.weight, ln.bias, ln.eps, sc.weight, sc.bias)]


def _f64(xs):
    return [x.double() if torch.is_tensor(x) else x for x in xs]


def _run(q, k, v, est, **kw):
    with torch.no_grad():
        return favor_encoder_forward(q, k, v, *_weights(est), **kw)


def _ref64(q, k, v, est, state=None, **kw):
    if state is not None:
        state = tuple(_f64(state))
    return favor_encoder_ref(*_f64((q, k, v)), *_f64(_weights(est)), state=state, **kw)


def _close(got, want, rel, what):
    """max |got - want| <= rel * max(1, max |want|), in float64."""
    scale = max(1.0, want.abs().max().item())
    err = (got.double() - want.double()).abs().max().item()
    assert err <= rel * scale, f"{what}: max abs err {err:.3g} > {rel} x {scale:.3g}"


def _check_all(out, ref, *, rel_z, rel_s, rel_state, state_bound=None):
    """state_bound: None (the states within rel_state of the largest value), or a pair of elementwise bounds
    (for S, for z) on |out state - ref state|, e.g. from _state_sum_bound."""
    z, s, (S, zs) = out
    zr, sr, (Sr, zsr) = ref
    for x in (z, s, S, zs):
        assert x.dtype == torch.float32 and torch.isfinite(x).all()     # every poisoned entry written
    _close(z, zr, rel_z, "z")
    _close(s, sr, rel_s, "scales")
    if state_bound is None:
        _close(S, Sr, rel_state, "state S")
        _close(zs, zsr, rel_state, "state z")
        return
    for name, got, want, bound in (("state S", S, Sr, state_bound[0]), ("state z", zs, zsr, state_bound[1])):
        excess = ((got.double() - want.double()).abs() - bound).max().item()
        assert excess <= 0, f"{name}: beyond its summation bound by {excess:.3g}"


def _state_sum_bound(q, k, v, est, *, row0, operands, state=None, runs=2):
    """Elementwise bounds on the difference of `runs` fp32 computations of the Performer state (sum over rows s of
    phi_k[s]^T [V_I ; v][s], and of phi_k[s]), however their sums are ordered: each sum is within gamma_n = n u /
    (1 - n u) (u = 2^-24, n = the rows summed, plus one for an incoming state) of the sum of the terms' magnitudes,
    and each term within `flip` of its magnitude: a feature phi_k[s] is an fp32 product whose last bits may differ
    between runs (the interpreter's fp32 dot of a row depends on the row's place in its tile), so with bf16
    operands its rounding may land on the other bf16 neighbour (2^-8 relative); with fp32 ones the feature and
    the product carry one rounding each (2^-23). Magnitudes from the float64 reference on |v|, |V_I| (the
    features are positive) and |state|."""
    T = q.shape[2] + (state is not None)
    u = 2.0 ** -24
    gamma = runs * T * u / (1 - T * u) + (2.0 ** -8 if operands == "bf16" else 2 * u)
    w = _f64(_weights(est))
    w[0] = w[0].abs()
    st = None if state is None else tuple(x.double().abs() for x in state)
    _, _, (S_abs, z_abs) = favor_encoder_ref(*_f64((q, k, v.abs())), *w, row0=row0, operands=operands,
                                             state=st, return_state=True)
    return gamma * S_abs, gamma * z_abs


# measured under the interpreter (c16g2, T=130, m=33): fp32 max |z err| 1.0e-6 (|z| <= ~4), scales 1.8e-7,
# state 1.2e-7 relative; bf16 (the reference with the same feature/value rounding, the kernel additionally
# rounding its intra-chunk scores to bf16 before they multiply the values): z 3.6e-3, scales 7.7e-4, state
# 1.1e-7 (the states use only the rounded features / values, summed in fp32).
TOL = {"fp32": dict(rel_z=2e-5, rel_s=2e-5, rel_state=2e-6),
       "bf16": dict(rel_z=5e-3, rel_s=5e-3, rel_state=2e-6)}


@pytest.mark.parametrize("T, m, operands, tiling", [
    (37, 7, "fp32", "c16g2"),
    (130, 33, "fp32", "c16g2"),
    (130, 7, "bf16", "c16g2"),
    (130, 33, "bf16", "c16auto"),
    (130, 33, "fp32", "default"),
    (37, 33, "bf16", "default"),
])
def test_matches_float64_reference(monkeypatch, T, m, operands, tiling):
    _tiling(monkeypatch, tiling)
    est = _estimator(m)
    q, k, v = _qkv(T, seed=T + m)
    out = _run(q, k, v, est, row0=11, operands=operands, return_state=True)
    ref = _ref64(q, k, v, est, row0=11, operands=operands, return_state=True)
    assert out[0].shape == (B, H, T, 2 * D) and out[1].shape == (B, H, T, 2)
    assert out[2][0].shape == (B, H, m, 2 * D) and out[2][1].shape == (B, H, m)
    _check_all(out, ref, **TOL[operands])
    zr, sr = ref[0], ref[1]
    assert zr.abs().max() > 1.0 and sr[..., 0].std() > 1e-3             # not a trivially small comparison
    # without return_state: the same z and scales, two outputs
    z2, s2 = _run(q, k, v, est, row0=11, operands=operands)
    assert torch.equal(z2, out[0]) and torch.equal(s2, out[1])


def test_tf32_precision_rounds_feature_operands_to_bf16(monkeypatch):
    """precision="tf32" with bf16 operands: the feature projection on bf16-rounded q, k and d^-1/4 proj (the
    interpreter multiplies exactly, so the TF32 rounding of the other products is not seen here). The kernel's
    state (built from the rounded features and values only) matches the reference that rounds those operands
    at 2e-6 and differs from the default path's reference by more than that: the option is not a no-op."""
    _tiling(monkeypatch, "c16g2")
    est = _estimator(33)
    q, k, v = _qkv(130, seed=5)
    out = _run(q, k, v, est, row0=4, operands="bf16", return_state=True, precision="tf32")
    ref = _ref64(q, k, v, est, row0=4, operands="bf16", return_state=True, precision="tf32")
    _check_all(out, ref, **TOL["bf16"])
    default = _ref64(q, k, v, est, row0=4, operands="bf16", return_state=True)
    moved = (out[2][0].double() - default[2][0]).abs().max().item() / default[2][0].abs().max().item()
    assert moved > 1e-5, f"state moved {moved:.3g} from the default path's: precision ignored?"
    # the real tf32 chunk (128 rows: 2 chunks at T = 130, one per group, the last 2 rows) gives the same values
    monkeypatch.setattr(fe, "CHUNK_TF32", 128)
    monkeypatch.setattr(fe, "GROUP", None)
    big = _run(q, k, v, est, row0=4, operands="bf16", return_state=True, precision="tf32")
    _check_all(big, ref, **TOL["bf16"])
    # fp32 operands: tf32 changes nothing the interpreter can see (exact products)
    out32 = _run(q, k, v, est, row0=4, operands="fp32", return_state=True, precision="tf32")
    _check_all(out32, _ref64(q, k, v, est, row0=4, operands="fp32", return_state=True), **TOL["fp32"])
    with pytest.raises(ValueError, match="precision"):
        _run(q, k, v, est, row0=4, precision="fp16")


def test_ieee_precision_and_other_input_layouts(monkeypatch):
    """bf16 inputs, non-contiguous q/k/v, d=8 (padded to 16 columns), IEEE dots."""
    monkeypatch.setattr(fe, "PRECISION", "ieee")
    monkeypatch.setattr(fe, "FEAT_PRECISION", "ieee")
    d, m, T = 8, 5, 45
    est = _estimator(m, d=d, seed=2)
    gen = torch.Generator().manual_seed(9)
    big = torch.randn(B, T, H, 3 * d, generator=gen).to(torch.bfloat16)       # [B, T, H, 3d]
    q, k, v = (big[..., i * d:(i + 1) * d].transpose(1, 2) for i in range(3))  # [B, H, T, d] non-contiguous
    assert not q.is_contiguous()
    out = _run(q, k, v, est, row0=3, operands="fp32", return_state=True)
    ref = _ref64(q, k, v, est, row0=3, operands="fp32", return_state=True)
    _check_all(out, ref, **TOL["fp32"])


@pytest.mark.parametrize("m, operands", [(7, "fp32"), (33, "fp32"), (33, "bf16")])
def test_matches_sea_estimator_composition(m, operands):
    """What SEA's causal estimator computes today (methods/sea/estimator.py _forward, torch paths):
    favor_attention(q, k, cat([V_I rows, v]), proj, kernel="relu", causal=True, operands) -> Estimator.enc ->
    sigmoid(Estimator.scaler)."""
    T, row0 = 130, 20
    est = _estimator(m, seed=4)
    q, k, v = _qkv(T, seed=5 + m)
    with torch.no_grad():
        vi = est.v_id[row0:row0 + T].expand(B, H, T, D)                            # [B, H, T, d]
        c_perf = favor_attention(q, k, torch.cat([vi, v], dim=-1), est.proj, kernel="relu", causal=True,
                                 operands=operands)                                # [B, H, T, 2d] fp32
        z_sea = est.enc(torch.cat([c_perf, v], dim=-1))                           # [B, H, T, 2d]
        s_sea = torch.sigmoid(est.scaler(z_sea))                                   # [B, H, T, 2]
    z, s = _run(q, k, v, est, row0=row0, operands=operands)
    zr, sr = _ref64(q, k, v, est, row0=row0, operands=operands)
    # the reference restates SEA's composition (same rounding points): fp32-level agreement either way
    _close(zr, z_sea, 2e-5, "ref z vs SEA")
    _close(sr, s_sea, 2e-5, "ref scales vs SEA")
    tol = TOL[operands]
    _close(z, z_sea, tol["rel_z"], "kernel z vs SEA")
    _close(s, s_sea, tol["rel_s"], "kernel scales vs SEA")


@pytest.mark.parametrize("operands", ["fp32", "bf16"])
def test_query_blocks_with_state_equal_whole_call(operands):
    """Rows 0..52 then 53..129 (neither a chunk multiple) with the returned state = one call over 130 rows;
    the state after the second block = the whole call's state."""
    T, cut, row0, m = 130, 53, 7, 33
    est = _estimator(m, seed=6)
    q, k, v = _qkv(T, seed=8)
    whole = _run(q, k, v, est, row0=row0, operands=operands, return_state=True)
    first = _run(q[:, :, :cut], k[:, :, :cut], v[:, :, :cut], est, row0=row0, operands=operands,
                 return_state=True)
    second = _run(q[:, :, cut:], k[:, :, cut:], v[:, :, cut:], est, row0=row0 + cut, state=first[2],
                  operands=operands, return_state=True)
    joined = (torch.cat([first[0], second[0]], dim=2), torch.cat([first[1], second[1]], dim=2), second[2])
    # bf16: the intra-chunk score rounding falls on other chunks when the rows are split: bf16-level. The states:
    # the same terms summed in another order (chunks of the split rows), so within the fp32 summation bound
    # (a relative 2e-6 of the largest value failed at 2.2e-6 on one CPU: cancellation in S)
    bound = _state_sum_bound(q, k, v, est, row0=row0, operands=operands)
    _check_all(joined, whole, **TOL[operands], state_bound=bound)
    # the reference carries its state the same way (float64: exact up to rounding)
    rw = _ref64(q, k, v, est, row0=row0, operands=operands, return_state=True)
    r1 = _ref64(q[:, :, :cut], k[:, :, :cut], v[:, :, :cut], est, row0=row0, operands=operands, return_state=True)
    r2 = _ref64(q[:, :, cut:], k[:, :, cut:], v[:, :, cut:], est, row0=row0 + cut, state=r1[2],
                operands=operands, return_state=True)
    _close(torch.cat([r1[0], r2[0]], dim=2), rw[0], 1e-12, "ref blocks z")
    _close(r2[2][0], rw[2][0], 1e-12, "ref blocks state")
    bound2 = _state_sum_bound(q[:, :, cut:], k[:, :, cut:], v[:, :, cut:], est, row0=row0 + cut, operands=operands,
                              state=r1[2], runs=1)
    _check_all(second, r2, **TOL[operands], state_bound=bound2)   # the kernel given a state, vs the reference


def _head(est, dtype, seed=7, width=None):
    """The decoder head's weights as favor_encoder_forward takes them (row projection, norm_in), with the
    LayerNorm's affine moved off its 1 / 0 init."""
    dec = est.dec if width is None else None
    if dec is None:                                        # a width other than the estimator's K / 4
        gen = torch.Generator().manual_seed(seed)
        row_w = torch.randn(2 * width, 2 * D, generator=gen) / math.sqrt(2 * D)
        row_b, nw, nb = 0.1 * torch.randn(2 * width, generator=gen), torch.ones(width), torch.zeros(width)
    else:
        row_w, row_b = dec.row.weight.detach(), dec.row.bias.detach()
        nw, nb = dec.norm_in.weight.detach(), dec.norm_in.bias.detach()
    gen = torch.Generator().manual_seed(seed + 1)
    nw = nw + 0.5 * torch.rand(nw.shape, generator=gen).to(nw.device)
    nb = nb + 0.3 * torch.randn(nb.shape, generator=gen).to(nb.device)
    return (row_w, row_b, nw, nb, 1e-5, dtype)


@pytest.mark.parametrize("dtype, operands, width, tiling", [
    (torch.bfloat16, "bf16", None, "c16g2"),
    (torch.bfloat16, "fp32", 12, "default"),               # w = 12: padded to 16 columns
    (torch.float16, "bf16", None, "c16auto"),
])
def test_decoder_head_in_the_epilogue(monkeypatch, dtype, operands, width, tiling):
    """head=: the output kernel applies the causal decoder's head (its row projection and norm_in under autocast)
    to its z rows and writes x [B, 2H, T, w] in that dtype instead of z. Against head_ref on the kernel's own z
    (the same z: only the head's summation order differs, so x equals up to a rare one-ulp rounding flip), the
    scales and the state unchanged, and head_ref against the decoder module's head under CPU autocast."""
    _tiling(monkeypatch, tiling)
    est = _estimator(33, seed=5)
    head = _head(est, dtype, width=width)
    w = head[0].shape[0] // 2
    q, k, v = _qkv(70, seed=12)                    # c16g2: 5 chunks in 3 groups, the last chunk 6 rows
    z, s, st = _run(q, k, v, est, row0=9, operands=operands, return_state=True, precision="tf32")
    x, s2, st2 = _run(q, k, v, est, row0=9, operands=operands, return_state=True, precision="tf32", head=head)
    assert x.dtype == dtype and x.shape == (B, 2 * H, 70, w) and torch.isfinite(x).all()   # every entry written
    assert torch.equal(s2, s) and torch.equal(st2[0], st[0]) and torch.equal(st2[1], st[1])
    want = fe.head_ref(z, head)
    assert want.dtype == dtype and want.float().std() > 0.3                 # LayerNorm'd values, not all zero
    diff = (x.float() - want.float()).abs()
    ulp = 2.0 ** (-7 if dtype == torch.bfloat16 else -10)                  # one ulp at |x| in [1, 2)
    assert diff.max().item() <= 4 * ulp * max(1.0, want.float().abs().max().item()), diff.max().item()
    assert (diff == 0).float().mean().item() >= 0.99, (diff == 0).float().mean().item()
    # the float64 reference with the head: the same to the head dtype's rounding
    ref = _ref64(q, k, v, est, row0=9, operands=operands, precision="tf32", head=_f64(head[:4]) + list(head[4:]))
    assert ref[0].dtype == dtype
    _close(x.float(), ref[0].float(), 0.05, "x vs float64 reference")
    if width is None:                                       # head_ref restates the module under autocast
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            dec = est.dec
            dec.norm_in.weight.copy_(head[2])
            dec.norm_in.bias.copy_(head[3])
            mod = dec.head(z)
        assert mod.shape == want.shape
        _close(mod.float(), want.float(), 4 * ulp, "CausalDecoder.head under autocast vs head_ref")


def test_decoder_head_refusals():
    est = _estimator(7)
    q, k, v = _qkv(20)
    good = _head(est, torch.bfloat16)
    for bad, match in ((good[:5], "expected"), ((*good[:5], torch.float32), "dtype"),
                       ((good[0][:, :5], *good[1:]), "row_w"), ((good[0], good[1][:3], *good[2:]), "row_b"),
                       ((good[0].double(), *good[1:]), "float32"), ((*good[:4], 0.0, good[5]), "norm_eps")):
        with pytest.raises(ValueError, match=match):
            _run(q, k, v, est, head=bad)


def test_one_row_and_empty_block():
    m = 7
    est = _estimator(m, seed=3)
    q, k, v = _qkv(5, seed=2)
    gen = torch.Generator().manual_seed(4)
    state = (torch.rand(B, H, m, 2 * D, generator=gen), torch.rand(B, H, m, generator=gen) + 0.5)
    out = _run(q[:, :, :1], k[:, :, :1], v[:, :, :1], est, row0=MAX_LEN - 1, state=state, return_state=True)
    ref = _ref64(q[:, :, :1], k[:, :, :1], v[:, :, :1], est, row0=MAX_LEN - 1, state=state, return_state=True)
    _check_all(out, ref, **TOL["fp32"])
    z, s, (S, zs) = _run(q[:, :, :0], k[:, :, :0], v[:, :, :0], est, state=state, return_state=True)
    assert z.shape == (B, H, 0, 2 * D) and s.shape == (B, H, 0, 2)
    assert torch.equal(S, state[0]) and torch.equal(zs, state[1])


def test_refuses_gradients():
    m = 7
    est = _estimator(m)
    q, k, v = _qkv(20)
    lin, ln, sc = est.enc[0], est.enc[1], est.scaler
    live = (est.v_id, est.proj, lin.weight, lin.bias, ln.weight, ln.bias, ln.eps, sc.weight, sc.bias)
    with pytest.raises(RuntimeError, match="forward-only"):              # parameters require grad
        favor_encoder_forward(q, k, v, *live)
    with pytest.raises(RuntimeError, match="forward-only"):              # an input requires grad
        favor_encoder_forward(q.requires_grad_(True), k, v, *_weights(est))


def test_refuses_bad_arguments(monkeypatch):
    m = 7
    est = _estimator(m)
    q, k, v = _qkv(20)
    w = dict(zip(("v_id", "proj", "lin_w", "lin_b", "ln_w", "ln_b", "ln_eps", "sc_w", "sc_b"), _weights(est)))

    def call(q=q, k=k, v=v, **kw):
        args = {**w, **{n: kw.pop(n) for n in list(kw) if n in w}}
        with torch.no_grad():
            return favor_encoder_forward(q, k, v, **args, **kw)

    for d_bad in (24, 256):                                             # not a power of two; > 128
        x = torch.zeros(B, H, 20, d_bad)
        with pytest.raises(ValueError, match="head dim"):
            call(x, x, x)
    with pytest.raises(ValueError, match="operands"):
        call(operands="fp16")
    with pytest.raises(ValueError, match="max_len"):
        call(row0=MAX_LEN - 10)                                         # rows past v_id's end
    with pytest.raises(ValueError, match=r"\[B, H, T, d\]"):
        call(k=k[:, :1])                                                # grouped heads: the caller repeats
    with pytest.raises(ValueError, match="state"):
        call(state=(torch.zeros(B, H, m + 1, 2 * D), torch.zeros(B, H, m + 1)))
    with pytest.raises(ValueError, match="float32"):
        call(proj=w["proj"].double())
    with pytest.raises(ValueError, match="lin_w"):
        call(lin_w=w["lin_w"].T)
    monkeypatch.setattr(fe, "PRECISION", "tf32")
    with pytest.raises(ValueError, match="PRECISION"):
        call()


@pytest.mark.gpu
@pytest.mark.parametrize("operands, precision, ckpt", [("fp32", None, 8), ("bf16", None, 8), ("bf16", "tf32", 8),
                                                       ("bf16", "tf32", 1024), ("fp32", None, 1024)])
def test_cuda_matches_reference_and_sea(monkeypatch, operands, precision, ckpt):
    """The real tiles on a GPU (CHUNK=64, 8 chunks per group: 47 chunks in 6 groups, a partial last chunk; ckpt
    1024: one chunk per group, the output kernel's straight-line path),
    d=64, m=33 as SEA's causal estimator at nbf=8: against the float64 reference and against SEA's composition
    on its Triton Performer path (favor_attention backend=triton, then the torch encoder modules). precision
    "tf32": against the reference that rounds the feature projection's operands to bf16 (the TF32 products are
    not modelled: their error is what this measures), and not against SEA's fp32-feature composition."""
    _tiling(monkeypatch, "default")
    monkeypatch.setattr(fe, "MAX_CHECKPOINTS", ckpt)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)   # the torch side in true fp32
    d, m, T, heads, row0 = 64, 33, 3000, 4, 100
    est = _estimator(m, d=d, seed=1, heads=heads, max_len=4096).cuda()
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, heads, T, d, generator=gen).cuda() for _ in range(3))   # [1, heads, T, d]
    out = _run(q, k, v, est, row0=row0, operands=operands, return_state=True, precision=precision)
    ref = _ref64(q, k, v, est, row0=row0, operands=operands, return_state=True, precision=precision)
    # bf16 state: 1.5e-5 measured on an H200 (results/nvidia-h200/sea-vs-dense-2/gpu-tests-fused.txt), against a
    # first guess of 1e-5: the GPU's tf32x3 feature projection lands some features on the other side of a bf16
    # rounding boundary than the float64 reference does (one bf16 ulp, 2^-8 relative, each); fp32 state 6.4e-7
    tol = dict(rel_z=1e-4, rel_s=1e-4, rel_state=1e-5) if operands == "fp32" else \
        dict(rel_z=2e-2, rel_s=1e-2, rel_state=1e-4)
    names = ("z", "scales", "state S", "state z")
    for name, got, want in zip(names, (out[0], out[1], *out[2]), (ref[0], ref[1], *ref[2])):
        scale = max(1.0, want.abs().max().item())                 # printed first: every error, before any check fails
        err = (got.double() - want.double()).abs().max().item()
        print(f"{operands}/{precision or 'default'}/ckpt {ckpt} {name}: max abs err {err:.3g} (scale {scale:.3g})")
    _check_all(out, ref, **tol)
    if precision is not None:
        return
    with torch.no_grad():
        vi = est.v_id[row0:row0 + T].expand(1, heads, T, d)                       # [1, heads, T, d]
        c_perf = favor_attention(q, k, torch.cat([vi, v], dim=-1), est.proj, kernel="relu", causal=True,
                                 backend="triton", operands=operands)             # [1, heads, T, 2d]
        z_sea = est.enc(torch.cat([c_perf, v], dim=-1))                          # [1, heads, T, 2d]
        s_sea = torch.sigmoid(est.scaler(z_sea))                                  # [1, heads, T, 2]
    _close(out[0], z_sea, tol["rel_z"], "kernel z vs SEA")
    _close(out[1], s_sea, tol["rel_s"], "kernel scales vs SEA")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_decoder_head(monkeypatch, dtype):
    """head= on the real tiles (precision "tf32", bf16 operands: SEA fast's front; 128-row chunks, d=64, m=33,
    K=64 -> w=16) against head_ref on the same kernel's z: 16-bit tensor-core products with fp32 sums, so only
    the summation order differs from head_ref's."""
    _tiling(monkeypatch, "default")
    d, m, T, heads, row0 = 64, 33, 3000, 4, 100
    est = _estimator(m, d=d, seed=1, heads=heads, max_len=4096).cuda()
    est.dec = type(est.dec)(d, heads, 64).cuda()                              # K = 64 as SEA's default: w = 16
    head = _head(est, dtype)
    head = tuple(t.cuda() if torch.is_tensor(t) and t.is_floating_point() else t for t in head)
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, heads, T, d, generator=gen).to(torch.bfloat16).cuda() for _ in range(3))
    z, s = _run(q, k, v, est, row0=row0, operands="bf16", precision="tf32")
    x, s2 = _run(q, k, v, est, row0=row0, operands="bf16", precision="tf32", head=head)
    assert torch.equal(s, s2) and x.shape == (1, 2 * heads, T, 16) and x.dtype == dtype
    want = fe.head_ref(z, head)
    diff = (x.float() - want.float()).abs()
    exact = (diff == 0).float().mean().item()
    print(f"head {dtype}: max abs diff {diff.max().item():.3g}, exactly equal {exact:.5f}, "
          f"|x| max {want.float().abs().max().item():.3g}")
    ulp = 2.0 ** (-7 if dtype == torch.bfloat16 else -10)
    assert diff.max().item() <= 4 * ulp * max(1.0, want.float().abs().max().item())
    assert exact >= 0.99
