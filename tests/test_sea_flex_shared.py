"""Shared-key selections with span 'blocks' (sea.shared_span=blocks; methods/sea/shared.py: key_block_mask,
methods/sea/flex_shared.py: FlexAttention on the key blocks).

The key blocks against a plain re-statement (a loop over the selected cells, a dense T x T mask), the per-row lists
equal to it, the strided keys inside it, the BlockMask's blocks equal to the key-block mask, FlexAttention (the eager
reference on CPU; compiled on a GPU) against the gather path on the lists and a float64 masked softmax, the layer's
two paths giving one output, the plan and the option checks."""
import pytest
import torch

from kernels.sea_sparse_attention import sparse_attention_torch
from methods.sea.flex_shared import flex_shared_attention, shared_block_mask
from methods.sea.interp import csr_to_dense
from methods.sea.shared import key_block_mask, select_blocks, shared_dense_mask, shared_row_csr
from tests.helpers import gaussian_qkv, sea_case
from tests.test_sea_shared import masked_softmax_f64

B, H, HKV, D = 2, 4, 2, 32
DIRECTIONS = [("causal_per_batch", True), ("per_query", True), ("per_batch", False), ("per_head", False)]
SHAPES = [(150, 32, 16, 4), (96, 16, 8, 80), (256, 32, 16, 2)]          # (T, R, K, k): a short last block first


def selection(T, R, K, k, mode, causal, seed=0):
    a = torch.rand(B, H, T, K, generator=torch.Generator().manual_seed(seed))
    return select_blocks(a, R=R, mode=mode, k=k, budget=2.0, causal=causal)


@pytest.mark.parametrize("mode,causal", DIRECTIONS)
@pytest.mark.parametrize("T,R,K,k", SHAPES)
def test_row_lists_equal_the_dense_restatement_and_hold_the_strided_keys(T, R, K, k, mode, causal):
    sel = selection(T, R, K, k, mode, causal, seed=T)
    want = shared_dense_mask(sel, T=T, R=R, k=k, causal=causal, span="blocks")
    row_ptr, col = shared_row_csr(sel, T=T, R=R, k=k, causal=causal, span="blocks")
    assert torch.equal(csr_to_dense(row_ptr, col, (B, H, T), T), want)
    strided = shared_dense_mask(sel, T=T, R=R, k=k, causal=causal)
    assert (want | strided).equal(want)                                  # every strided key is in a key block
    kb = key_block_mask(sel, T=T, R=R, causal=causal)                    # [B, H, NB, NB]
    blocks = torch.arange(T) // R
    assert torch.equal(want, kb[:, :, blocks][:, :, :, blocks] & want)   # keys only from the blocks' key blocks
    if causal:
        assert not (kb & torch.ones_like(kb[0, 0]).triu(1)).any()        # no key block after the query block


@pytest.mark.parametrize("mode", ["causal_per_batch", "per_query"])
def test_list_width_bounds_the_fullest_selection(mode):
    from methods.sea.shared import key_block_width

    T, R, K, k = 1024, 16, 32, 8                                         # causal: budgets fall with the block end
    width = key_block_width(T, R, K, True, mode, k, H, 2.0, "cpu")
    sel = selection(T, R, K, k, mode, True, seed=1)
    worst = torch.ones_like(sel)                                         # every cell of every block: the bound's
    kb = key_block_mask(sel, T=T, R=R) & ~torch.eye(T // R, dtype=torch.bool)   # own block is not counted
    assert int(kb.sum(-1).max()) <= width < T // R
    assert int((key_block_mask(worst, T=T, R=R) & ~torch.eye(T // R, dtype=torch.bool)).sum(-1).max()) >= width


def test_key_blocks_of_one_cell_by_hand():
    T, R, K = 256, 32, 4                                                 # bidirectional: cells of 64 keys
    sel = torch.zeros(1, 1, 8, K, dtype=torch.bool)
    sel[0, 0, 0, 2] = True                                               # block 0 picks keys 128 .. 191
    kb = key_block_mask(sel, T=T, R=R, causal=False)
    assert kb[0, 0, 0].nonzero().flatten().tolist() == [0, 4, 5]         # its own block and the cell's two
    assert kb[0, 0, 1].nonzero().flatten().tolist() == [1]
    causal = key_block_mask(sel, T=T, R=R, causal=True)                  # block 0 (geometry 32): no key before it
    assert causal[0, 0, 0].nonzero().flatten().tolist() == [0]


@pytest.mark.parametrize("mode,causal", DIRECTIONS[::2])
def test_block_mask_holds_the_key_blocks(mode, causal):
    T, R, K, k = 150, 32, 16, 4
    sel = selection(T, R, K, k, mode, causal, seed=3)
    kb = key_block_mask(sel, T=T, R=R, causal=causal)
    bm = shared_block_mask(sel, T=T, R=R, causal=causal, exact_mod=False)
    dense = bm.to_dense()                                                # [B, H, NB, NB] partial + full blocks
    assert torch.equal(dense.bool(), kb)
    full = torch.zeros_like(kb)
    idx = bm.full_kv_indices.long()
    for b in range(B):
        for h in range(H):
            for j in range(kb.shape[2]):
                n = int(bm.full_kv_num_blocks[b, h, j])
                full[b, h, j, idx[b, h, j, :n]] = True
                assert idx[b, h, j, :n].tolist() == sorted(idx[b, h, j, :n].tolist())
    own = torch.eye(kb.shape[2], dtype=torch.bool)
    assert torch.equal(full, kb & ~own if causal else kb)                # causal: the own block is the partial one


@pytest.mark.parametrize("mode,causal", DIRECTIONS)
@pytest.mark.parametrize("T,R,K,k", SHAPES + [(300, 16, 8, 2)])          # cells of ~2 key blocks at the end
def test_list_kernel_gives_the_key_blocks_of_the_tensor_ops(T, R, K, k, mode, causal):
    pytest.importorskip("triton")
    from methods.sea.flex_shared import full_blocks

    from methods.sea.shared import key_block_width

    sel = selection(T, R, K, k, mode, causal, seed=T + 1)
    n_t, i_t = full_blocks(sel, T=T, R=R, causal=causal, backend="torch")    # ascending
    width = key_block_width(T, R, K, causal, mode, k, H, 2.0, "cpu")    # the per-shape bound on the counts
    assert int(n_t.max()) <= width <= sel.shape[2]
    n_k, i_k = full_blocks(sel, T=T, R=R, causal=causal, backend="triton", width=width)
    assert torch.equal(n_k, n_t) and i_k.shape[-1] == width
    NB = sel.shape[2]
    for b in range(B):
        for h in range(H):
            for j in range(NB):
                n = int(n_t[b, h, j])
                got = i_k[b, h, j, :n].tolist()
                assert sorted(got) == i_t[b, h, j, :n].tolist()
                if not causal:
                    assert got[0] == j                                   # the own block first
                else:
                    assert got == sorted(got)


@pytest.mark.parametrize("mode,causal", DIRECTIONS[::2])
@pytest.mark.parametrize("T,R,K,k", SHAPES[:2])
def test_flex_matches_the_row_lists_and_the_float64_softmax(T, R, K, k, mode, causal):
    sel = selection(T, R, K, k, mode, causal, seed=4)
    q, kk, v = gaussian_qkv(B, H, HKV, T, D, seed=5, dtype=torch.float32)
    got = flex_shared_attention(q, kk, v, sel, R=R, scale=0.2, causal=causal)
    row_ptr, col = shared_row_csr(sel, T=T, R=R, k=k, causal=causal, span="blocks")
    torch.testing.assert_close(got, sparse_attention_torch(q, kk, v, row_ptr, col, 0.2), rtol=1e-5, atol=1e-6)
    ref = masked_softmax_f64(q, kk, v, shared_dense_mask(sel, T=T, R=R, k=k, causal=causal, span="blocks"), 0.2)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)


def test_flex_refuses_what_it_cannot_compute():
    sel = selection(64, 16, 8, 4, "per_query", True)
    q, kk, v = gaussian_qkv(B, H, HKV, 64, 24, dtype=torch.float32)
    with pytest.raises(ValueError, match="head_dim=24"):
        flex_shared_attention(q, kk, v, sel, R=16, scale=0.2, causal=True)
    q, kk, v = gaussian_qkv(B, H, HKV, 64, 16, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="forward-only"):
        flex_shared_attention(q.requires_grad_(), kk, v, sel, R=16, scale=0.2, causal=True)


def build(backend, causal=True, **opts):
    opts = dict(dict(shared_span="blocks"), **opts)
    M, cfg, problem = sea_case(1, 4, 2, 150, 32, causal=causal, k=8, K=16, shared_keys=32, shared_budget=2.0,
                               backend=backend, **opts)
    M.validate_config(cfg)
    assert M.extra_reasons(problem, cfg) == []
    return M.build(cfg, problem)


@pytest.mark.parametrize("causal,mode", [(True, "causal_per_batch"), (False, "per_batch")])
def test_layer_flex_and_row_lists_give_one_output(causal, mode):
    a, b = build("flex", causal=causal, mode=mode), build("torch", causal=causal, mode=mode)
    b.load_state_dict(a.state_dict())
    q, k, v = gaussian_qkv(1, 4, 2, 150, 32, seed=8, dtype=torch.float32)
    with torch.no_grad():
        out_a, out_b = a(q, k, v, causal=causal), b(q, k, v, causal=causal)
    assert "sparse=flex" in a.impl and "shared_keys=32x2/blocks" in a.impl, a.impl
    assert "sparse=torch" in b.impl
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-6)
    probs = a.attention_probs(q, k, v, causal=causal, rows=[0, 40, 149])
    torch.testing.assert_close(probs, b.attention_probs(q, k, v, causal=causal, rows=[0, 40, 149]))
    # more keys than the strided span of the same selection
    strided = build("torch", causal=causal, mode=mode, shared_span="strided")
    strided.load_state_dict(a.state_dict())
    with torch.no_grad():
        strided(q, k, v, causal=causal)
    assert a.last_aux["mask"].equal(strided.last_aux["mask"])            # one selection, two spans


def test_plan_takes_flex_only_where_it_can():
    q = torch.zeros(1, 4, 150, 32)
    valid = torch.ones(1, 150, dtype=torch.bool)
    qg = q.clone().requires_grad_()
    assert build("flex").sparse_plan(q, q, q, None) == ("flex", "flex")
    with torch.enable_grad():
        assert build("flex").sparse_plan(qg, qg, qg, None)[0] == "csr"   # gradients: the lists
    assert build("flex").sparse_plan(q, q, q, valid)[0] == "csr"         # padding mask: the lists
    assert build("auto").sparse_plan(q, q, q, None)[0] == "csr"          # auto on CPU: the lists
    assert build("torch").sparse_plan(q, q, q, None) == ("csr", "torch")


def test_layer_with_gradients_runs_the_row_lists_of_the_blocks():
    a = build("torch")                                                   # (flex with gradients plans these lists)
    q, k, v = gaussian_qkv(1, 4, 2, 150, 32, seed=9, dtype=torch.float32)
    q.requires_grad_()
    out = a(q, k, v, causal=True)
    assert "sparse=torch" in a.impl and "/blocks" in a.impl
    out.square().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_options_are_checked():
    from methods.base import MethodConfigError

    for opts, match in ((dict(shared_span="blocks"), "shared_keys"), (dict(shared_keys=32, backend="flex"), "flex"),
                        (dict(shared_keys=32, shared_span="rows"), "shared_span")):
        with pytest.raises((MethodConfigError, ValueError), match=match):
            M, cfg, _ = sea_case(1, 4, 4, 64, 16, **opts)
            M.validate_config(cfg)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("mode,causal", DIRECTIONS[::2])
def test_compiled_flex_on_the_gpu_matches_the_rows_kernel_on_the_row_lists(mode, causal):
    from kernels.sea_sparse_rows import sparse_rows_forward

    T, R = 4096, 64
    K, k = (64, 64) if causal else (128, 13)
    a = torch.rand(1, 8, T, K, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    sel = select_blocks(a, R=R, mode=mode, k=k, budget=2.0, backend="triton", causal=causal)
    q, kk, v = (x.cuda() for x in gaussian_qkv(1, 8, 4, T, 64, seed=3, dtype=torch.bfloat16))
    got = flex_shared_attention(q, kk, v, sel, R=R, scale=0.125, causal=causal)
    row_ptr, col = shared_row_csr(sel, T=T, R=R, k=k, causal=causal, span="blocks")
    want = sparse_rows_forward(q, kk, v, row_ptr, col, 0.125, pieces=3)
    err = (got.float() - want.float()).abs().max().item()
    assert err < 0.02, err                                               # Flex rounds P to bf16 before P v


@gpu
@pytest.mark.gpu
def test_layer_on_the_gpu_replays_flex():
    from methods.base import Problem
    from tests.test_sea_graphs import FAST

    M, cfg, _ = sea_case(1, 8, 4, 4096, 64, k=64, K=64, shared_keys=64, shared_span="blocks", cuda_graph=8192,
                         **FAST)
    lay = M.build(cfg, Problem(1, 8, 4, 4096, 64, dtype="bf16", causal=True, device="cuda"))
    q, k, v = (x.cuda() for x in gaussian_qkv(1, 8, 4, 4096, 64, seed=4, dtype=torch.bfloat16))
    with torch.no_grad():
        outs = [lay(q, k, v, causal=True) for _ in range(3)]
    assert lay.graphs.last == "replay" and "sparse=flex" in lay.impl, lay.impl
    torch.testing.assert_close(outs[2], outs[0], rtol=0, atol=2 ** -6 * outs[0].float().abs().max().item())


@pytest.mark.parametrize("mode,causal", DIRECTIONS)
@pytest.mark.parametrize("T,R,K,k", SHAPES[:2])
def test_rows_mask_equals_the_rows_of_the_dense_restatement(T, R, K, k, mode, causal):
    """attention_probs' mask for a few rows (key_block_rows_mask) against the plain re-statement, padded or not."""
    from methods.sea.shared import key_block_rows_mask

    sel = selection(T, R, K, k, mode, causal, seed=T + 1)
    rows = torch.tensor([0, 1, R - 1, R, T // 2, T - 1])
    want = shared_dense_mask(sel, T=T, R=R, k=k, causal=causal, span="blocks")[:, :, rows]
    assert torch.equal(key_block_rows_mask(sel, rows, T=T, R=R, causal=causal), want)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, T - 7:] = False
    row_ptr, col = shared_row_csr(sel, T=T, R=R, k=k, valid=valid, causal=causal, span="blocks")
    padded = csr_to_dense(row_ptr, col, (B, H, T), T, rows=rows)
    assert torch.equal(key_block_rows_mask(sel, rows, T=T, R=R, causal=causal, valid=valid), padded)


@pytest.mark.parametrize("span", ["blocks", "strided"])
@pytest.mark.parametrize("causal,mode", [(True, "causal_per_batch"), (False, "per_batch")])
def test_attention_probs_without_a_forward_equal_those_after_it(span, causal, mode):
    """attention_probs on inputs the layer has not just run runs its own pipeline on the blocks' selection (no
    per-row lists of every row); the same distribution as right after a forward, which reuses the forward's."""
    lay = build("auto", causal=causal, mode=mode, shared_span=span)
    q, k, v = gaussian_qkv(1, 4, 2, 150, 32, seed=9, dtype=torch.float32)
    rows = [0, 63, 64, 149]
    with torch.no_grad():
        fresh = lay.attention_probs(q, k, v, causal=causal, rows=rows)
        lay(q, k, v, causal=causal)
        after = lay.attention_probs(q, k, v, causal=causal, rows=rows)
    torch.testing.assert_close(fresh, after)
    assert torch.isfinite(fresh).all() and (fresh >= 0).all() and (fresh > 0).any()
