"""The bidirectional estimator in blocks of query rows (Estimator._forward_rows, the layer's query blocks with
shared_keys): the fused Performer's query pass on row slices against the whole call, the blocked block sums and
scalers against the whole estimator (and a halo too small for the decoder caught), and the layer's output with
query blocks against the whole call. CPU under TRITON_INTERPRET=1 at small sizes; on CUDA at SEA's widths."""
from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("triton")

import methods.sea.estimator as est_mod  # noqa: E402
from kernels import favor_dense  # noqa: E402
from tests.helpers import gaussian_qkv, sea_case  # noqa: E402


@pytest.mark.parametrize("identity_cols,out_dtype", [(0, torch.float32), (8, torch.bfloat16)])
def test_query_pass_on_row_slices_is_the_whole_calls_rows(identity_cols, out_dtype):
    """key_summary once, query_pass on any rows: bit for bit the rows of favor_softmax_dense's output."""
    q, k, v = gaussian_qkv(1, 2, 2, 80, 16, seed=3, dtype=torch.bfloat16)
    proj = torch.randn(24, 16, generator=torch.Generator().manual_seed(1))
    args = dict(operands="bf16", identity_cols=identity_cols)
    whole = favor_dense.favor_softmax_dense(q, k, v, proj, out_dtype=out_dtype, **args)
    st = favor_dense.key_summary(q, k, v, proj, **args)
    for lo, hi in ((0, 80), (0, 17), (30, 64), (63, 80)):
        part = favor_dense.query_pass(st, q[:, :, lo:hi], out_dtype=out_dtype)
        assert part.shape == (1, 2, hi - lo, 16 + identity_cols)
        assert torch.equal(part, whole[:, :, lo:hi])
    with pytest.raises(ValueError, match="rows of the summary"):
        favor_dense.query_pass(st, q[:, :1], out_dtype=out_dtype)
    with pytest.raises(ValueError, match="rows of the summary"):
        favor_dense.query_pass(st, q.float(), out_dtype=out_dtype)


def _layer(monkeypatch, fused: bool, **opts):
    """A bidirectional bf16 SEA layer with shared keys on the fused Performer kernel; fused: the head and tail
    kernels (the CUDA path), else the encoder kernel, the PyTorch decoder and softmax sums."""
    monkeypatch.setattr(est_mod, "BIDIR_CHANNELS_LAST", True)
    monkeypatch.setattr(est_mod, "BIDIR_HEAD", fused)
    monkeypatch.setattr(est_mod, "BIDIR_TAIL", fused)
    M, cfg, problem = sea_case(1, 4, 4, 128, 16, causal=False, K=16, performer_backend="triton",
                               encoder_backend="triton", estimator_dtype="bf16", performer_dtype="bf16",
                               shared_keys=16, identity_values="kernel", **opts)
    return M.build(cfg, problem)


def _max_rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("fused", [True, False])
def test_estimator_rows_give_the_whole_calls_block_sums(monkeypatch, fused):
    """The block sums and scalers of the estimator in blocks of 32 and 48 rows against the whole call, same
    weights; with a halo of 4 rows instead of ROW_HALO = 6 the convolutions see padding inside the sequence and
    the sums near the blocks' starts move by far more than the summation order does. (The last convolution is
    scaled up: the untrained decoder's logits are nearly flat, which would hide any row's error in the softmax.)"""
    layer = _layer(monkeypatch, fused)
    est = layer.estimator
    with torch.no_grad():
        est.dec.conv3.weight.mul_(30)
    q, k, v = gaussian_qkv(1, 4, 4, 128, 16, seed=5, dtype=torch.bfloat16)
    with torch.no_grad():
        _, whole, sp, sm = est(q, k, v, valid=None, probs=True, pool=16)
        assert est.last_rows == "off"
        for rows in (32, 48):
            lg, sums, sp_r, sm_r = est(q, k, v, valid=None, probs=True, pool=16, rows=rows)
            assert est.last_rows == f"{-(-128 // rows)} x {rows} rows"
            assert est.last_encoder == ("triton-head" if fused else "triton")
            assert lg is None and sums.shape == whole.shape == (1, 4, 8, 16)
            assert torch.equal(sp_r, sp) and torch.equal(sm_r, sm)       # row-wise: the same kernel on the rows
            assert _max_rel(sums, whole) < 1e-4, rows                  # 0 on the CPU here
        monkeypatch.setattr(est_mod, "ROW_HALO", 4)
        _, short, _, _ = est(q, k, v, valid=None, probs=True, pool=16, rows=32)
    assert _max_rel(short, whole) > 1e-2                                 # 0.025 on the CPU here


def test_estimator_rows_refusals(monkeypatch):
    """Where the blocks do not apply the call runs whole and last_rows says why; a block size that is not a
    multiple of the pooling is an error."""
    layer = _layer(monkeypatch, True)
    est = layer.estimator
    q, k, v = gaussian_qkv(1, 4, 4, 128, 16, seed=6, dtype=torch.bfloat16)
    with torch.no_grad():
        _, whole, _, _ = est(q, k, v, valid=None, probs=True, pool=16)
        _, one, _, _ = est(q, k, v, valid=None, probs=True, pool=16, rows=128)
        assert est.last_rows.startswith("whole (one block") and torch.equal(one, whole)
        est(q, k, v, valid=torch.ones(1, 128, dtype=torch.bool), probs=True, pool=16, rows=32)
        assert est.last_rows == "whole (padding mask)"
        est(q, k, v, valid=None, probs=True, rows=32)
        assert est.last_rows == "whole (no block sums)"
        with pytest.raises(ValueError, match="multiple of the block size"):
            est(q, k, v, valid=None, probs=True, pool=16, rows=24)
        est.performer_backend = "torch"
        est(q, k, v, valid=None, probs=True, pool=16, rows=32)
        assert est.last_rows.startswith("whole (Performer path dense")


def test_layer_query_blocks_with_shared_keys_run_the_estimator_in_blocks(monkeypatch):
    """sea query_blocks with shared_keys (bidirectional): the output of the whole call up to the block sums'
    summation order, the estimator's blocks named in impl, and the stage profile timing the blocked estimator."""
    blocked = _layer(monkeypatch, True, query_blocks=3)                  # ceil(128 / 3) = 43 -> 48 rows
    whole = _layer(monkeypatch, True)
    q, k, v = gaussian_qkv(1, 4, 4, 128, 16, seed=7, dtype=torch.bfloat16)
    with torch.no_grad():
        out_b = blocked(q, k, v, causal=False)
        out_w = whole(q, k, v, causal=False)
    assert "query_blocks=estimator 3 x 48 rows" in blocked.impl, blocked.impl
    assert "query_blocks" not in whole.impl
    assert torch.equal(blocked.last_aux["mask"], whole.last_aux["mask"])
    torch.testing.assert_close(out_b.float(), out_w.float(), atol=2e-2, rtol=2e-2)
    ran = []
    parts = blocked.stage_profile(q, k, v, causal=False, timer=lambda f: (ran.append(f()), 1.0)[1])
    assert "estimator" in parts and blocked.estimator.last_rows == "3 x 48 rows"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_estimator_rows_on_cuda_at_sea_widths():
    """SEA's fast bidirectional configuration on the card (H=16, d=64, K=128, 64-row shared keys, 8k): the blocked
    estimator's block sums against the whole call's, and the selection they make."""
    M, cfg, problem = sea_case(1, 16, 16, 8192, 64, causal=False, k=0, K=0, performer_dtype="bf16",
                               estimator_precision="tf32", estimator_dtype="bf16", shared_keys=64,
                               encoder_operands="bf16", identity_values="kernel", nbf=8)
    problem = dataclasses.replace(problem, device="cuda", dtype="bf16")
    layer = M.build(cfg, problem)
    q, k, v = (t.cuda() for t in gaussian_qkv(1, 16, 16, 8192, 64, seed=8, dtype=torch.bfloat16))
    est = layer.estimator
    with torch.no_grad():
        _, whole, sp, sm = est(q, k, v, valid=None, probs=True, pool=64)
        _, sums, sp_r, sm_r = est(q, k, v, valid=None, probs=True, pool=64, rows=1024)
    assert est.last_rows == "8 x 1024 rows" and est.last_encoder == "triton-head"
    assert torch.equal(sp_r, sp) and torch.equal(sm_r, sm)
    assert _max_rel(sums, whole) < 1e-2


def test_estimator_rows_stay_within_cudnn_offsets(monkeypatch):
    """Blocks whose decoder input (with its halo) would pass CONV_MAX_ELEMENTS are cut to fit (a multiple of the
    block size), and the sums stay the whole call's."""
    layer = _layer(monkeypatch, True)
    est = layer.estimator
    q, k, v = gaussian_qkv(1, 4, 4, 128, 16, seed=9, dtype=torch.bfloat16)
    with torch.no_grad():
        _, whole, _, _ = est(q, k, v, valid=None, probs=True, pool=16)
        monkeypatch.setattr(est_mod, "CONV_MAX_ELEMENTS", 4 * 4 * 8 * (32 + 2 * est_mod.ROW_HALO + 5))
        _, sums, _, _ = est(q, k, v, valid=None, probs=True, pool=16, rows=64)
        assert est.last_rows == "4 x 32 rows"
        assert _max_rel(sums, whole) < 1e-4
        monkeypatch.setattr(est_mod, "CONV_MAX_ELEMENTS", 4 * 4 * 8 * 20)
        with pytest.raises(ValueError, match="32-bit offsets"):
            est(q, k, v, valid=None, probs=True, pool=16, rows=64)


# --- causal: the estimator's block form feeding the shared selection -----------------------------------------------
@pytest.mark.parametrize("pool", ["rebin", "sum"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_block_scores_of_rows_are_rows_of_the_whole_block_scores(pool, backend):
    from methods.sea.shared import block_scores

    T, R, K = 150, 16, 16                                                 # the last block short
    a = torch.rand(1, 3, T, K, generator=torch.Generator().manual_seed(2))
    whole = block_scores(a, R, pool=pool, backend=backend)
    for s, e in ((0, 48), (48, 96), (96, 150), (0, 150)):
        part = block_scores(a[:, :, s:e], R, pool=pool, backend=backend, T=T, row0=s)
        torch.testing.assert_close(part, whole[:, :, s // R:-(-e // R)], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="start a block"):
        block_scores(a[:, :, 8:40], R, pool=pool, backend=backend, T=T, row0=8)


def test_causal_mix_writes_into_c():
    from kernels.sea_causal_mix import causal_mix

    g = torch.Generator().manual_seed(4)
    c, v = (torch.randn(1, 2, 40, 16, generator=g).to(torch.bfloat16) for _ in range(2))
    sp, sm = (torch.rand(1, 2, 40, 1, generator=g) for _ in range(2))
    ref = causal_mix(c, v, sp, sm, out_dtype=torch.bfloat16)
    cc = c.clone()
    out = causal_mix(cc, v, sp, sm, out_dtype=torch.bfloat16, out=cc)
    assert out.data_ptr() == cc.data_ptr() and torch.equal(out, ref)
    with pytest.raises(ValueError, match="out must be"):
        causal_mix(c, v, sp, sm, out_dtype=torch.float32, out=c)


def test_causal_layer_with_estimator_blocks_selects_as_the_whole_call():
    """Causal shared keys with query blocks: the estimator's block form (Performer state and decoder rows carried)
    and block-by-block scores give the whole call's selection and output (up to summation order), and impl names
    the blocks."""
    torch.manual_seed(0)
    M, cfg, problem = sea_case(1, 4, 4, 160, 16, causal=True, K=16, shared_keys=16, query_blocks=3)
    blocked = M.build(cfg, problem)
    M, cfg, problem = sea_case(1, 4, 4, 160, 16, causal=True, K=16, shared_keys=16)
    whole = M.build(cfg, problem)
    q, k, v = gaussian_qkv(1, 4, 4, 160, 16, seed=10)
    with torch.no_grad():
        out_b = blocked(q, k, v, causal=True)
        out_w = whole(q, k, v, causal=True)
    assert "query_blocks=estimator 3 x 64 rows" in blocked.impl, blocked.impl
    assert blocked.last_aux["a_hat"] is None and blocked.last_aux["block_scores"].shape == (1, 4, 10, 16)
    assert torch.equal(blocked.last_aux["mask"], whole.last_aux["mask"])
    torch.testing.assert_close(out_b, out_w, atol=1e-5, rtol=1e-5)
    with torch.no_grad():                                                # with a padding mask: whole, said so
        blocked(q, k, v, causal=True, key_padding_mask=torch.ones(1, 160, dtype=torch.bool))
    assert "query_blocks=estimator whole (padding mask)" in blocked.impl, blocked.impl


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_causal_key_blocks_with_estimator_blocks_on_cuda():
    """SEA's causal latency configuration (64-row key blocks on FlexAttention, fast options) with query_blocks=8 at
    8k on the card: the whole call's selection, and its output within bf16 rounding."""
    opts = dict(k=0, K=0, performer_dtype="bf16", estimator_precision="tf32", estimator_dtype="bf16",
                compile="estimator", sparse_pieces=1, shared_keys=64, shared_span="blocks", max_len=8192)
    layers = {}
    for qb in (0, 8):
        M, cfg, problem = sea_case(1, 16, 16, 8192, 64, causal=True, query_blocks=qb, **opts)
        layers[qb] = M.build(cfg, dataclasses.replace(problem, device="cuda", dtype="bf16"))
    q, k, v = (t.cuda() for t in gaussian_qkv(1, 16, 16, 8192, 64, seed=11, dtype=torch.bfloat16))
    with torch.no_grad():
        outs = {qb: layer(q, k, v, causal=True) for qb, layer in layers.items()}
    assert "query_blocks=estimator 8 x 1024 rows" in layers[8].impl and "sparse=flex" in layers[8].impl
    same = (layers[8].last_aux["mask"] == layers[0].last_aux["mask"]).float().mean().item()
    assert same > 0.999, same                                            # near-ties may flip a cell or two
    torch.testing.assert_close(outs[8].float(), outs[0].float(), atol=3e-2, rtol=3e-2)


def test_causal_estimator_blocks_keep_forced_scalers():
    """Forced s_prob / s_mix hold in the causal estimator's blocks as in the whole call."""
    M, cfg, problem = sea_case(1, 4, 4, 96, 16, causal=True, K=16, shared_keys=16, query_blocks=2, s_prob=0.5,
                               s_mix=0.25)
    layer = M.build(cfg, problem)
    q, k, v = gaussian_qkv(1, 4, 4, 96, 16, seed=12)
    with torch.no_grad():
        layer(q, k, v, causal=True)
    assert "query_blocks=estimator 2 x 48 rows" in layer.impl, layer.impl
    assert torch.all(layer.last_aux["s_prob"] == 0.5) and torch.all(layer.last_aux["s_mix"] == 0.25)
