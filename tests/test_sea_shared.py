"""Shared-key selection (sea.shared_keys; methods/sea/shared.py, kernels/sea_shared_attention.py).

The selection against a plain re-statement (per-block loops over cells, a dense T x T mask), the budgets it spends,
the tensor-op and kernel top-k agreeing, the per-row CSR lists equal to the dense mask (with and without a padding
mask), the kernel (Triton under TRITON_INTERPRET=1 on CPU) against the gather path on those lists and against a
float64 masked softmax, and the layer's two paths (kernel, per-row lists) giving one output, with option checks."""
import math

import pytest
import torch

from kernels.sea_shared_attention import shared_attention
from kernels.sea_sparse_attention import sparse_attention_torch
from methods.sea.interp import cell_bounds, csr_to_dense
from methods.sea.shared import (block_budgets, block_ends, block_scores, select_blocks,
                                shared_dense_mask, shared_row_csr)
from tests.helpers import gaussian_qkv, sea_case
from tests.test_sea_sparse_rows import assert_within_one_ulp

B, H, HKV, D = 2, 4, 2, 32
DIRECTIONS = [("causal_per_batch", True), ("per_batch", False), ("per_head", False)]   # (top-k mode, causal)


def estimate(T, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, H, T, K, generator=g)


@pytest.mark.parametrize("mode", ["causal_per_batch", "per_query"])
@pytest.mark.parametrize("T,R,K,k,budget", [(150, 32, 16, 4, 1.0), (96, 16, 8, 16, 2.5), (64, 64, 16, 2, 0.5)])
def test_selection_spends_the_budget_on_the_highest_block_scores(mode, T, R, K, k, budget):
    a = estimate(T, K)
    sel = select_blocks(a, R=R, mode=mode, k=k, budget=budget)           # [B, H, NB, K]
    NB = -(-T // R)
    assert sel.shape == (B, H, NB, K)
    scores = block_scores(a, R)
    ends = block_ends(T, R, "cpu")
    assert ends.tolist() == [min(T, (j + 1) * R) for j in range(NB)]
    lo, hi = cell_bounds(ends[None], K)
    width = torch.where(lo[0] < torch.arange(NB)[:, None] * R, hi[0] - lo[0], 0)   # [NB, K] cells with early keys
    n = block_budgets(mode, ends, k=k, K=K, H=H, budget=budget)
    for b in range(B):
        for j in range(NB):
            groups = [list(range(H))] if mode == "causal_per_batch" else [[h] for h in range(H)]
            want_n = round(budget * (H if mode == "causal_per_batch" else 1) * k * K / int(ends[j]) + 1e-9)
            for heads in groups:
                cap = len(heads) * K
                assert int(n[j]) == max(1, min(cap, int(math.floor(budget * len(heads) * k * K / int(ends[j]) + 0.5))))
                assert want_n >= 0
                s = torch.stack([scores[b, h, j] for h in heads]).reshape(-1)   # group's candidates
                w = torch.stack([width[j] for _ in heads]).reshape(-1)
                chosen = torch.stack([sel[b, h, j] for h in heads]).reshape(-1)
                eligible = int((w > 0).sum())
                assert int(chosen.sum()) == min(int(n[j]), eligible)
                assert not chosen[w == 0].any()
                if chosen.any() and (~chosen & (w > 0)).any():             # every chosen score >= every other
                    assert s[chosen].min() >= s[~chosen & (w > 0)].max()


def test_block_scores_pool_the_rows_of_each_block_and_a_short_last_block():
    T, R, K = 70, 32, 8                                                  # blocks [0, 32), [32, 64), [64, 70)
    a = estimate(T, K)
    s = block_scores(a, R, pool="sum")
    torch.testing.assert_close(s[:, :, 1], a[:, :, 32:64].sum(2))
    torch.testing.assert_close(s[:, :, 2], a[:, :, 64:].sum(2))
    # whole blocks (T a multiple of R): the fp32 sums read 16-bit estimates directly, without a copy
    half = estimate(64, K).bfloat16()
    torch.testing.assert_close(block_scores(half, R, pool="sum"), half.float().view(B, H, 2, R, K).sum(3))
    # rebin: row t's cell c goes to the block cell (geometry L_j) holding the cell's middle key, by a plain loop
    want = torch.zeros(B, H, 3, K, dtype=torch.float64)
    for t in range(T):
        j, L = t // R, min(T, (t // R + 1) * R)
        for c in range(K):
            lo, hi = (2 * c * (t + 1) + K) // (2 * K), (2 * (c + 1) * (t + 1) + K) // (2 * K)
            mid = (lo + max(hi - 1, lo)) // 2
            edges = [(2 * e * L + K) // (2 * K) for e in range(K)]
            cb = max(e for e in range(K) if edges[e] <= mid)
            want[:, :, j, cb] += a[:, :, t, c].double()
    torch.testing.assert_close(block_scores(a, R, pool="rebin").double(), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        block_scores(a, R, pool="max")


@pytest.mark.parametrize("T,R,K", [(70, 32, 8), (176, 16, 64), (129, 64, 12)])
def test_rebin_kernel_equals_the_tensor_ops(T, R, K):
    pytest.importorskip("triton")
    a = estimate(T, K, seed=T)
    want = block_scores(a, R, pool="rebin")
    torch.testing.assert_close(block_scores(a, R, pool="rebin", backend="triton"), want, rtol=1e-5, atol=1e-5)
    half = block_scores(a.bfloat16(), R, pool="rebin", backend="triton")     # 16-bit estimates: fp32 sums
    torch.testing.assert_close(half, block_scores(a.bfloat16().float(), R, pool="rebin"), rtol=1e-5, atol=1e-5)


def test_ties_go_to_the_lowest_index_and_the_first_block_selects_nothing(monkeypatch):
    import methods.sea.shared as shared

    monkeypatch.setattr(shared, "SCORE_POOL", "sum")                      # equal rows: every block cell tied
    sel = select_blocks(torch.ones(1, 2, 48, 8), R=16, mode="per_query", k=2, budget=1.0)
    assert not sel[:, :, 0].any()                                         # block 0: no key before it
    assert sel[0, 0, 1].nonzero().flatten().tolist() == [0]               # n = round(2 * 8 / 32) = 1
    assert sel[0, 1, 2].nonzero().flatten().tolist() == [0]


@pytest.mark.parametrize("mode", ["causal_per_batch", "per_query"])
def test_topk_kernel_selects_like_the_stable_sort(mode):
    pytest.importorskip("triton")
    a = estimate(150, 16, seed=3)
    a[:, :, :, 4:8] = a[:, :, :, :4]                                     # exact ties, as the causal decoder makes
    want = select_blocks(a, R=32, mode=mode, k=4, budget=1.5, backend="torch")
    got = select_blocks(a, R=32, mode=mode, k=4, budget=1.5, backend="triton")
    assert torch.equal(got, want)


@pytest.mark.parametrize("mode,causal", DIRECTIONS)
@pytest.mark.parametrize("T,R,K,k", [(150, 32, 16, 4), (96, 16, 8, 16), (40, 16, 16, 64)])
def test_row_lists_equal_the_dense_restatement(T, R, K, k, mode, causal):
    sel = select_blocks(estimate(T, K, seed=1), R=R, mode=mode, k=k, budget=2.0, causal=causal)
    row_ptr, col = shared_row_csr(sel, T=T, R=R, k=k, causal=causal)
    dense = shared_dense_mask(sel, T=T, R=R, k=k, causal=causal)
    assert torch.equal(csr_to_dense(row_ptr, col, (B, H, T), T), dense)
    for r in range(B * H * T):                                           # keys ascending inside a row
        row = col[row_ptr[r]:row_ptr[r + 1]]
        assert (row[1:] > row[:-1]).all()
    rows = torch.arange(T)
    own = (rows[None, :] // R) == (rows[:, None] // R)                   # [T, T] keys of the row's own block
    if causal:
        assert not (dense & (rows[None, :] > rows[:, None])).any()       # nothing after the row
        assert (dense | ~(own & (rows[None, :] <= rows[:, None]))).all()   # its own block's keys up to itself
    else:
        assert (dense | ~own).all()                                      # all of its own block's keys
        assert (dense & ~own).any()                                      # and cells' keys elsewhere, both sides


def test_row_lists_drop_padded_keys():
    T, R, K, k = 100, 16, 16, 8
    sel = select_blocks(estimate(T, K, seed=2), R=R, mode="causal_per_batch", k=k, budget=3.0)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[0, 10:30] = False
    valid[1, :5] = False
    row_ptr, col = shared_row_csr(sel, T=T, R=R, k=k, valid=valid)
    want = shared_dense_mask(sel, T=T, R=R, k=k) & valid[:, None, None, :]
    assert torch.equal(csr_to_dense(row_ptr, col, (B, H, T), T), want)




@pytest.mark.parametrize("mode", ["per_batch", "per_head"])
@pytest.mark.parametrize("T,R,K,k,budget", [(150, 32, 16, 4, 2.0), (96, 16, 8, 40, 0.5)])
def test_bidirectional_selection_ranks_the_group_together(mode, T, R, K, k, budget):
    from methods.sea.shared import bidirectional_budget

    a = estimate(T, K, seed=11)
    sel = select_blocks(a, R=R, mode=mode, k=k, budget=budget, causal=False)
    scores = block_scores(a, R, pool="sum")                              # one geometry: plain sums
    n = bidirectional_budget(mode, T=T, R=R, k=k, K=K, H=H, budget=budget)
    per = min(max(k * K // T, 1), K)
    groups = H if mode == "per_batch" else 1
    assert n == max(1, min(groups * (-(-T // R)) * K, int(budget * groups * (-(-T // R)) * per + 0.5)))
    G = B if mode == "per_batch" else B * H
    for g in range(G):
        chosen, s = sel.reshape(G, -1)[g], scores.reshape(G, -1)[g]
        assert int(chosen.sum()) == n
        assert s[chosen].min() >= s[~chosen].max()
    pytest.importorskip("triton")                                        # the radix select picks the same cells
    assert torch.equal(select_blocks(a, R=R, mode=mode, k=k, budget=budget, causal=False, backend="triton"), sel)


def masked_softmax_f64(q, k, v, mask, scale):
    """The exact re-statement: softmax over the masked keys in float64, rows without a key -> 0."""
    kr = k.double().repeat_interleave(q.shape[1] // k.shape[1], 1)
    vr = v.double().repeat_interleave(q.shape[1] // v.shape[1], 1)
    s = (q.double() @ kr.transpose(-1, -2) * scale).masked_fill(~mask, float("-inf"))
    p = torch.nan_to_num(torch.softmax(s, -1), nan=0.0)
    return p @ vr


def _assert_matches_rows_and_f64(got, want, ref, dtype):
    """The kernel's output against the row lists' (want) and the float64 softmax (ref): fp32 to float rounding,
    bf16 within one unit in the last place."""
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)
    else:
        assert_within_one_ulp(got, want)
        assert_within_one_ulp(got, ref.to(dtype))


@pytest.mark.parametrize("mode,causal", DIRECTIONS[:2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T,R,K,k", [(150, 32, 16, 4), (96, 16, 8, 80), (40, 16, 16, 64)])
def test_kernel_matches_the_row_lists_and_the_float64_softmax(dtype, T, R, K, k, mode, causal):
    pytest.importorskip("triton")
    sel = select_blocks(estimate(T, K, seed=4), R=R, mode=mode, k=k, budget=2.0, causal=causal)
    q, kk, v = gaussian_qkv(B, H, HKV, T, D, seed=5, dtype=dtype)
    scale = 1.0 / math.sqrt(D)
    got = shared_attention(q, kk, v, sel, rows=R, k_sel=k, scale=scale, causal=causal)
    row_ptr, col = shared_row_csr(sel, T=T, R=R, k=k, causal=causal)
    want = sparse_attention_torch(q, kk, v, row_ptr, col, scale)
    ref = masked_softmax_f64(q, kk, v, shared_dense_mask(sel, T=T, R=R, k=k, causal=causal), scale)
    assert (row_ptr[1:] > row_ptr[:-1]).all()                            # every row attends its own key at least
    _assert_matches_rows_and_f64(got, want, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode,causal", DIRECTIONS[:2])
def test_kernel_with_ex2_softmax_matches_the_row_lists_and_the_float64_softmax(monkeypatch, dtype, mode, causal):
    """SOFTMAX_EXP="ex2_ftz" (scores in log2 units, 2^x by PTX's ex2.approx.ftz; the interpreter's exp2 here): the
    same bounds as the tl.exp form."""
    pytest.importorskip("triton")
    import kernels.sea_shared_attention as ssa

    monkeypatch.setattr(ssa, "SOFTMAX_EXP", "ex2_ftz")
    T, R, K, k = 150, 32, 16, 4
    sel = select_blocks(estimate(T, K, seed=4), R=R, mode=mode, k=k, budget=2.0, causal=causal)
    q, kk, v = gaussian_qkv(B, H, HKV, T, D, seed=5, dtype=dtype)
    got = shared_attention(q, kk, v, sel, rows=R, k_sel=k, scale=1.0 / math.sqrt(D), causal=causal)
    row_ptr, col = shared_row_csr(sel, T=T, R=R, k=k, causal=causal)
    want = sparse_attention_torch(q, kk, v, row_ptr, col, 1.0 / math.sqrt(D))
    ref = masked_softmax_f64(q, kk, v, shared_dense_mask(sel, T=T, R=R, k=k, causal=causal), 1.0 / math.sqrt(D))
    _assert_matches_rows_and_f64(got, want, ref, dtype)
    monkeypatch.setattr(ssa, "SOFTMAX_EXP", "exp2")
    with pytest.raises(ValueError, match="SOFTMAX_EXP"):
        shared_attention(q, kk, v, sel, rows=R, k_sel=k, scale=1.0 / math.sqrt(D), causal=causal)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal,one_row", [(False, True), (True, False)])   # the layer's case; per-row c_avg
def test_kernel_mix_epilogue_equals_the_mix_after_the_attention(causal, dtype, one_row):
    pytest.importorskip("triton")
    from kernels.sea_sparse_rows import sparse_rows_forward

    T, R, K, k = 150, 32, 16, 4
    sel = select_blocks(estimate(T, K, seed=13), R=R, mode="per_batch" if not causal else "per_query", k=k,
                        budget=2.0, causal=causal)
    q, kk, v = gaussian_qkv(B, H, HKV, T, D, seed=14, dtype=dtype)
    g = torch.Generator().manual_seed(15)
    s_prob, s_mix = torch.rand(B, H, T, 1, generator=g), torch.rand(B, H, T, 1, generator=g)
    c_avg = torch.randn(B, H, 1 if one_row else T, D, generator=g)
    got = shared_attention(q, kk, v, sel, rows=R, k_sel=k, scale=0.2, causal=causal, mix=(s_prob, s_mix, c_avg))
    assert got.dtype == dtype
    if dtype == torch.float32:                                           # c in fp32 either way: the mix after it
        c = shared_attention(q, kk, v, sel, rows=R, k_sel=k, scale=0.2, causal=causal)
        torch.testing.assert_close(got, (1 - s_mix) * c_avg + s_mix * s_prob * c, rtol=1e-5, atol=1e-6)
    else:                                                                # the rows kernel's epilogue on the lists
        row_ptr, col = shared_row_csr(sel, T=T, R=R, k=k, causal=causal)
        want = sparse_rows_forward(q, kk, v, row_ptr, col, 0.2, mix=(s_prob, s_mix, c_avg), pieces=3)
        assert_within_one_ulp(got, want)
    with pytest.raises(ValueError, match="c_avg"):
        shared_attention(q, kk, v, sel, rows=R, k_sel=k, scale=0.2, causal=causal,
                         mix=(s_prob, s_mix, c_avg.double()))
    with pytest.raises(ValueError, match="s_mix"):
        shared_attention(q, kk, v, sel, rows=R, k_sel=k, scale=0.2, causal=causal, mix=(s_prob, s_mix[:, :1], c_avg))


def test_kernel_one_piece_rounds_p_once():
    pytest.importorskip("triton")
    T, R, K, k = 96, 32, 16, 16
    sel = select_blocks(estimate(T, K, seed=6), R=R, mode="per_query", k=k, budget=2.0)
    q, kk, v = gaussian_qkv(B, H, HKV, T, D, seed=7, dtype=torch.bfloat16)
    full = shared_attention(q, kk, v, sel, rows=R, k_sel=k, scale=0.2, pieces=3)
    one = shared_attention(q, kk, v, sel, rows=R, k_sel=k, scale=0.2, pieces=1)
    err = (one.float() - full.float()).abs().max().item()
    assert 0 < err < 0.05                                                # P rounded to bf16 (2^-8 relative)


def test_kernel_refuses_bad_inputs_and_gradients():
    pytest.importorskip("triton")
    q, kk, v = gaussian_qkv(1, 2, 2, 32, 16, dtype=torch.float32)
    sel = torch.ones(1, 2, 2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="power of two"):
        shared_attention(q, kk, v, sel, rows=24, k_sel=4, scale=0.25)
    with pytest.raises(ValueError, match="selection"):
        shared_attention(q, kk, v, sel[:, :, :1], rows=16, k_sel=4, scale=0.25)
    with pytest.raises(ValueError, match="selection"):
        shared_attention(q, kk, v, sel.int(), rows=16, k_sel=4, scale=0.25)
    with pytest.raises(RuntimeError, match="forward-only"):
        shared_attention(q.requires_grad_(), kk, v, sel, rows=16, k_sel=4, scale=0.25)


def build(backend, causal=True, **opts):
    M, cfg, problem = sea_case(1, 4, 2, 150, 32, causal=causal, k=8, K=16, shared_keys=32, shared_budget=2.0,
                               backend=backend, **opts)
    M.validate_config(cfg)
    assert M.extra_reasons(problem, cfg) == []
    return M.build(cfg, problem)


def test_layer_kernel_and_row_lists_give_one_output():
    pytest.importorskip("triton")
    a, b = build("triton"), build("torch")
    b.load_state_dict(a.state_dict())
    q, k, v = gaussian_qkv(1, 4, 2, 150, 32, seed=8, dtype=torch.float32)
    with torch.no_grad():
        out_a, out_b = a(q, k, v, causal=True), b(q, k, v, causal=True)
    assert "sparse=triton_shared" in a.impl and "shared_keys=32x2" in a.impl
    assert "sparse=torch" in b.impl
    assert a.last_aux["mask"].shape == (1, 4, 5, 16)
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-6)
    probs = a.attention_probs(q, k, v, causal=True, rows=[0, 40, 149])
    torch.testing.assert_close(probs, b.attention_probs(q, k, v, causal=True, rows=[0, 40, 149]))
    assert (probs[..., 150:] == 0).all() and (probs[:, :, 0, 1:] == 0).all()   # causal: row 0 sees key 0 only


def test_bidirectional_layer_kernel_and_row_lists_give_one_output():
    pytest.importorskip("triton")
    a, b = (build(backend, causal=False, mode="per_batch") for backend in ("triton", "torch"))
    b.load_state_dict(a.state_dict())
    q, k, v = gaussian_qkv(1, 4, 2, 150, 32, seed=12, dtype=torch.float32)
    with torch.no_grad():
        out_a, out_b = a(q, k, v, causal=False), b(q, k, v, causal=False)
    assert "sparse=triton_shared" in a.impl and "sparse=torch" in b.impl
    assert "mix=fused" in a.impl and "mix=" not in b.impl                # the shared kernel's epilogue mixed
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-6)
    probs = a.attention_probs(q, k, v, causal=False, rows=[0, 149])
    torch.testing.assert_close(probs, b.attention_probs(q, k, v, causal=False, rows=[0, 149]))
    assert (probs[:, :, 0, 140:149] > 0).any()                           # row 0 sees keys after it


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_bidirectional_block_sums_from_the_estimator_equal_block_scores_of_a_hat(monkeypatch, backend):
    """POOLED_SCORES: the estimator sums A_hat over each block's rows itself (no logits, no A_hat kept); the
    selection, column sums, output and attention_probs equal those made from the whole A_hat."""
    if backend == "triton":
        pytest.importorskip("triton")
    import methods.sea.layer as sea_layer

    a = build(backend, causal=False, mode="per_batch")
    q, k, v = gaussian_qkv(1, 4, 2, 160, 32, seed=13, dtype=torch.float32)   # 5 blocks of 32 rows
    runs = {}
    for pooled in (True, False):
        monkeypatch.setattr(sea_layer, "POOLED_SCORES", pooled)
        with torch.no_grad():
            out = a(q, k, v, causal=False)
            probs = a.attention_probs(q, k, v, causal=False, rows=[0, 77, 159])
        runs[pooled] = out, probs, dict(a.last_aux)
    (out_p, probs_p, aux_p), (out_w, probs_w, aux_w) = runs[True], runs[False]
    assert aux_p["a_hat"] is None and aux_p["logits"] is None and aux_w["block_scores"] is None
    assert aux_p["block_scores"].shape == (1, 4, 5, 16) and aux_p["block_scores"].dtype == torch.float32
    torch.testing.assert_close(aux_p["block_scores"], block_scores(aux_w["a_hat"], 32, pool="sum"),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aux_p["block_scores"].sum(-1), torch.full((1, 4, 5), 32.0), rtol=1e-5, atol=1e-5)
    assert torch.equal(aux_p["mask"], aux_w["mask"]) and aux_p["mask"].sum() >= 5 * 4
    torch.testing.assert_close(aux_p["col_sums"], aux_w["a_hat"].sum(2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_p, out_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs_p, probs_w, rtol=1e-5, atol=1e-6)
    # where the block sums cannot serve, the whole A_hat is made: a padding mask, a block size not dividing T
    monkeypatch.setattr(sea_layer, "POOLED_SCORES", True)
    valid = torch.ones(1, 160, dtype=torch.bool)
    with torch.no_grad():
        assert a.pooled_scores(q, k, v, causal=False, valid=None)
        assert not a.pooled_scores(q, k, v, causal=False, valid=valid)
        assert not a.pooled_scores(q[:, :, :150], k[:, :, :150], v[:, :, :150], causal=False, valid=None)
    assert not a.pooled_scores(q, k, v, causal=False, valid=None)     # the estimator's weights need gradients


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_average_context_from_the_block_scores_in_one_kernel(monkeypatch, backend):
    """CONTEXT_KERNEL: with pooled scores the forward makes C_avg from the block sums in one kernel
    (kernels/sea_column_context.py) instead of the top-k stage's column sums and average_context's tensor ops: the
    same output within fp32 rounding, no column sums left in last_aux (none were made), attention_probs (which
    needs the weights) still from the block sums; the stage profile takes the same path; off for a T that K does
    not divide."""
    pytest.importorskip("triton")
    import methods.sea.layer as sea_layer

    a = build(backend, causal=False, mode="per_batch")                   # K = 16, blocks of 32 rows
    q, k, v = gaussian_qkv(1, 4, 2, 160, 32, seed=17, dtype=torch.float32)
    monkeypatch.setattr(sea_layer, "POOLED_SCORES", True)
    runs = {}
    for kernel in (True, False):
        monkeypatch.setattr(sea_layer, "CONTEXT_KERNEL", kernel)
        with torch.no_grad():
            out = a(q, k, v, causal=False)
            probs = a.attention_probs(q, k, v, causal=False, rows=[0, 159])
        runs[kernel] = out, probs, dict(a.last_aux)
    (out_k, probs_k, aux_k), (out_t, probs_t, aux_t) = runs[True], runs[False]
    assert aux_k["col_sums"] is None and aux_t["col_sums"] is not None and aux_k["block_scores"] is not None
    assert torch.equal(aux_k["block_scores"], aux_t["block_scores"]) and torch.equal(aux_k["mask"], aux_t["mask"])
    torch.testing.assert_close(aux_k["c_avg"], aux_t["c_avg"], rtol=1e-5, atol=1e-6)
    assert not torch.equal(aux_k["c_avg"], torch.zeros_like(aux_k["c_avg"]))
    torch.testing.assert_close(out_k, out_t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs_k, probs_t, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(sea_layer, "CONTEXT_KERNEL", True)
    launched = []
    import kernels.sea_column_context as cc

    real = cc.column_context
    monkeypatch.setattr(cc, "column_context", lambda *a_, **kw: launched.append(1) or real(*a_, **kw))
    ms = a.stage_profile(q, k, v, causal=False, timer=lambda fn: (fn(), 1.0)[1])
    assert set(ms) >= {"topk", "mix"} and launched                      # the mix stage timed the kernel's path
    assert a.context_kernel(v, 160) and not a.context_kernel(v, 150)
    monkeypatch.setattr(sea_layer, "CONTEXT_KERNEL", "auto")
    assert not a.context_kernel(v, 160)                                  # auto: CUDA only

def test_estimator_block_sums_are_checked():
    est = build("torch", causal=False, mode="per_batch").estimator
    q, k, v = gaussian_qkv(1, 4, 4, 160, 32, seed=14, dtype=torch.float32)
    with torch.no_grad():
        logits, a_hat, _, _ = est(q, k, v, valid=None, probs=True)
        none, sums, _, _ = est(q, k, v, valid=None, probs=True, pool=40)
        for bad in (dict(pool=40), dict(pool=48, probs=True), dict(pool=-2, probs=True)):
            with pytest.raises(ValueError, match="block sums"):
                est(q, k, v, valid=None, **bad)
    assert none is None and sums.shape == (1, 4, 4, 16)
    torch.testing.assert_close(sums, a_hat.reshape(1, 4, 4, 40, 16).sum(3), rtol=1e-5, atol=1e-6)


def test_average_context_by_cell_sums_equals_the_spread_weights():
    lay = build("torch", causal=False, mode="per_batch")                 # K = 16
    g = torch.Generator().manual_seed(16)
    for T in (160, 150):                                                 # cells of 10 keys each; unequal cells
        a_hat = torch.rand(1, 4, T, 16, generator=g)
        vr = torch.randn(1, 4, T, 32, generator=g).bfloat16()
        c_avg, avg_w = lay.average_context(a_hat, vr, causal=False, valid=None)
        assert avg_w.shape == (1, 4, 1, T)
        torch.testing.assert_close(c_avg, avg_w @ vr.float(), rtol=1e-5, atol=1e-6)
        # the column sums the bidirectional selection leaves (the block sums summed) serve the same context
        col: dict = {}
        select_blocks(a_hat, R=32, mode="per_batch", k=8, budget=2.0, causal=False, col_sums=col)
        torch.testing.assert_close(col["sum"], a_hat.sum(2), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lay.average_context(a_hat, vr, causal=False, valid=None, col_sums=col["sum"])[0],
                                   c_avg, rtol=1e-5, atol=1e-6)
        # weights=False (the forward's call): the same context, no [B, H, 1, T] weights where it does not need them
        c2, w2 = lay.average_context(a_hat, vr, causal=False, valid=None, weights=False)
        assert torch.equal(c2, c_avg) and (w2 is None) == (T % 16 == 0)


def test_nomask_cell_widths_are_cell_bounds_widths_cached():
    from methods.sea.interp import cell_bounds, nomask_cell_widths

    for T, K in ((160, 16), (150, 16), (7, 16), (8192, 128)):
        lo, hi = cell_bounds(torch.full((1, 1), T), K)
        want = (hi - lo).clamp(min=1)[0, 0].float()
        got = nomask_cell_widths(T, K, "cpu")
        assert got.dtype == torch.float32 and torch.equal(got, want)
        assert nomask_cell_widths(T, K, torch.device("cpu")) is got                # made once per shape


def test_plan_takes_the_kernel_only_where_asked_and_possible():
    pytest.importorskip("triton")
    q = torch.zeros(1, 4, 150, 32)
    valid = torch.ones(1, 150, dtype=torch.bool)
    qg = q.clone().requires_grad_()
    assert build("triton").sparse_plan(q, q, q, None) == ("shared", "triton_shared")     # interpreter: kernel
    with torch.enable_grad():
        assert build("triton").sparse_plan(qg, qg, qg, None) == ("csr", "triton")        # gradients: the lists
    assert build("triton").sparse_plan(q, q, q, valid) == ("csr", "triton")              # padding mask: the lists
    assert build("torch").sparse_plan(q, q, q, None) == ("csr", "torch")                 # torch: the gather path
    assert build("auto").sparse_plan(q, q, q, None) == ("csr", "triton")                 # auto on CPU: the lists
    assert build("triton_tiled").sparse_plan(q, q, q, None)[1].startswith("triton (tiled")


def test_stage_profile_times_the_shared_stages():
    lay = build("torch")
    q, k, v = gaussian_qkv(1, 4, 2, 150, 32, seed=10, dtype=torch.float32)
    calls = []

    def timer(fn):
        calls.append(fn())
        return 1.0
    ms = lay.stage_profile(q, k, v, causal=True, timer=timer)
    assert set(ms) == {"estimator", "topk", "interpolate", "sparse_attention", "mix"}
    assert calls[1].shape == (1, 4, 5, 16)                               # the top-k stage returns the blocks' selection


def test_layer_with_gradients_runs_the_row_lists():
    a = build("torch")
    q, k, v = gaussian_qkv(1, 4, 2, 150, 32, seed=9, dtype=torch.float32)
    q.requires_grad_()
    out = a(q, k, v, causal=True)
    out.square().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_options_are_checked():
    from methods.base import MethodConfigError

    for opts, match in ((dict(shared_keys=24), "power of two"),
                        (dict(shared_keys=32, shared_budget=0), "shared_budget")):
        with pytest.raises(MethodConfigError, match=match):
            M, cfg, _ = sea_case(1, 4, 4, 64, 16, **opts)
            M.validate_config(cfg)
    M, cfg, problem = sea_case(1, 4, 4, 64, 16, causal=False, shared_keys=32)      # per_batch: served
    assert M.extra_reasons(problem, cfg) == []
    # query blocks with shared keys: the estimator in blocks of rows, in both directions
    for causal in (False, True):
        M, cfg, problem = sea_case(1, 4, 4, 64, 16, causal=causal, shared_keys=32, query_chunk=16)
        assert M.extra_reasons(problem, cfg) == []
        assert M.build(cfg, problem).estimator_rows(torch.zeros(1, 4, 64, 16)) == 32   # a multiple of 32
    for causal, mode in ((False, "per_query"), (True, "per_batch")):
        M, cfg, problem = sea_case(1, 4, 4, 64, 16, causal=causal, shared_keys=32, mode=mode)
        assert any("shared_keys" in r for r in M.extra_reasons(problem, cfg))
        with pytest.raises(ValueError, match="top-k mode"):
            from methods.sea.layer import SEAAttention

            SEAAttention(heads=4, head_dim=16, causal=causal, k=3, K=16, mode=mode, nbf=1.0, max_len=64, oracle=False,
                         backend="torch", force_s_prob=-1, force_s_mix=-1, checkpoint=None, layer=0, seed=0,
                         shared_keys=32)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("pieces", [3, 1])
@pytest.mark.parametrize("mode,causal", DIRECTIONS[:2])
@pytest.mark.parametrize("softmax_exp", ["exp", "ex2_ftz"])
def test_kernel_on_the_gpu_matches_the_rows_kernel_on_the_row_lists(monkeypatch, pieces, mode, causal, softmax_exp):
    import kernels.sea_shared_attention as ssa
    from kernels.sea_sparse_rows import sparse_rows_forward

    monkeypatch.setattr(ssa, "SOFTMAX_EXP", softmax_exp)

    T, R = 4096, 64
    K, k = (64, 64) if causal else (128, 13)                             # SEA's defaults in each direction
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.rand(1, 8, T, K, device="cuda", generator=g)
    sel = select_blocks(a, R=R, mode=mode, k=k, budget=2.0, backend="triton", causal=causal)
    assert torch.equal(sel, select_blocks(a, R=R, mode=mode, k=k, budget=2.0, backend="torch", causal=causal))
    q, kk, v = (x.cuda() for x in gaussian_qkv(1, 8, 4, T, 64, seed=3, dtype=torch.bfloat16))
    got = shared_attention(q, kk, v, sel, rows=R, k_sel=k, scale=0.125, pieces=pieces, causal=causal)
    row_ptr, col = shared_row_csr(sel, T=T, R=R, k=k, causal=causal)
    want = sparse_rows_forward(q, kk, v, row_ptr, col, 0.125, pieces=3)
    if pieces == 3:
        assert_within_one_ulp(got, want)
    else:                                                                # P rounded once to bf16
        assert (got.float() - want.float()).abs().max().item() < 0.02


@gpu
@pytest.mark.gpu
def test_layer_on_the_gpu_replays_and_matches_its_row_lists():
    from tests.test_sea_graphs import FAST

    from methods.base import Problem

    M, cfg, _ = sea_case(1, 8, 4, 4096, 64, k=64, K=64, shared_keys=64, cuda_graph=8192, **FAST)
    problem = Problem(1, 8, 4, 4096, 64, dtype="bf16", causal=True, device="cuda")
    lay = M.build(cfg, problem)
    q, k, v = (x.cuda() for x in gaussian_qkv(1, 8, 4, 4096, 64, seed=4, dtype=torch.bfloat16))
    with torch.no_grad():
        outs = [lay(q, k, v, causal=True) for _ in range(3)]
    assert lay.graphs.last == "replay" and "sparse=triton_shared" in lay.impl, lay.impl
    torch.testing.assert_close(outs[2], outs[0], rtol=0, atol=2 ** -6 * outs[0].float().abs().max().item())
    # the same layer with gradients takes the per-row lists of the same selection (rows kernel, its backward)
    qg = q.detach().clone().requires_grad_()
    out = lay(qg, k, v, causal=True)
    assert "sparse=triton_rows" in lay.impl, lay.impl                 # (its estimator runs other kernels: no equality)
    out.float().square().sum().backward()
    assert torch.isfinite(qg.grad).all()


def _strided_block_keys(sel_row, j: int, *, T: int, R: int, K: int, k_sel: int) -> torch.Tensor:
    """The keys a bidirectional block j attends (written out from the module docstring's rule, in int64): each
    selected cell c of geometry L = T, lo = round(c T / K), width w, gives n = min(w, k_sel) keys lo + floor(i w / n),
    those inside the block's own rows left to the block's own keys, which all come too."""
    keys = [torch.arange(j * R, min(j * R + R, T))]
    for c in sel_row.nonzero().flatten().tolist():
        lo = (2 * c * T + K) // (2 * K)
        w = (2 * (c + 1) * T + K) // (2 * K) - lo
        n = min(w, k_sel)
        i = torch.arange(n, dtype=torch.int64)
        kk = lo + (i * w) // max(n, 1)
        keys.append(kk[(kk < j * R) | (kk >= j * R + R)])
    return torch.cat(keys)


@gpu
@pytest.mark.gpu
def test_kernel_on_the_gpu_past_8m_rows():
    """Bidirectional blocks at T = 8M + 64 with 128 cells (the cells' 2 c T passed 2^31 in 32 bits, refused before):
    three blocks' outputs against their key lists written out in int64 and plain softmax attention."""
    from kernels.sea_shared_attention import shared_attention

    T, R, K, k_sel, D = (1 << 23) + 64, 64, 128, 13, 16
    g = torch.Generator(device="cuda").manual_seed(7)
    q, k, v = (torch.randn(1, 1, T, D, device="cuda", generator=g).to(torch.bfloat16) for _ in range(3))
    NB = -(-T // R)
    sel = torch.rand(1, 1, NB, K, device="cuda", generator=g) < 0.1
    with torch.no_grad():
        out = shared_attention(q, k, v, sel, rows=R, k_sel=k_sel, scale=D ** -0.5, pieces=3, causal=False)
    for j in (3, NB // 2, NB - 1):
        keys = _strided_block_keys(sel[0, 0, j].cpu(), j, T=T, R=R, K=K, k_sel=k_sel).cuda()
        rows = torch.arange(j * R, min(j * R + R, T), device="cuda")
        p = torch.softmax(q[0, 0, rows].float() @ k[0, 0, keys].float().T * D ** -0.5, -1)
        torch.testing.assert_close(out[0, 0, rows].float(), p @ v[0, 0, keys].float(), atol=1e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="int32 key arithmetic"):
        shared_attention(q, k, v, sel, rows=R, k_sel=1 << 15, scale=1.0, causal=False)


@pytest.mark.parametrize("causal", [False, True])
def test_kernel_wide_cell_geometry_is_the_same_function(monkeypatch, causal):
    """The kernel's int64 cell geometry (WIDE, taken where 2 K (T + 1) passes 2^31) against its int32 form on a small
    T: the same output bit for bit."""
    from kernels import sea_shared_attention as ssa

    T, R, K = 200, 16, 16
    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(1, 2, T, 16, generator=g) for _ in range(3))
    sel = torch.rand(1, 2, -(-T // R), K, generator=g) < 0.3
    outs = []
    for wide in (False, True):
        monkeypatch.setattr(ssa, "FORCE_WIDE", wide)
        with torch.no_grad():
            outs.append(ssa.shared_attention(q, k, v, sel, rows=R, k_sel=3, scale=0.25, causal=causal))
    assert torch.equal(outs[0], outs[1])
