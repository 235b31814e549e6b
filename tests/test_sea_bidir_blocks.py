"""methods/sea/bidir_blocks.py: bidirectional SEA inference in blocks of query rows. The blocked forward must give the
whole call's output (layer(q, k, v, causal=False)) for block sizes from 1 row to more than T; its pieces are tested
alone: the decoder on a window of rows against the whole decoder, the blocked two-level radix top-k against
torch.topk (distinct values) and against the documented lowest-flat-index rule (deliberate ties), and no tensor of
the size of A_hat (B H T K) is created.

The decoder weights are randomised (larger than their init) so A_hat spreads its values. The bidirectional decoder
repeats each of its K/2 columns twice, so A_hat's values come in equal pairs; with H even the per_batch budget
(H T cells per batch element) is even and the threshold falls between pairs: the whole call's torch.topk (tie order
unspecified) and the blocks' lowest-index rule then select the same cells (checked in the test, not assumed). Cases
with a tie at the threshold (T < K: empty cells break the pairs) are compared with the whole call's stages run on
a selection by the lowest-index rule."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from methods.base import Problem, get
from methods.sea.bidir_blocks import (NBINS, BlockedTopK, bidirectional_block_reason, decode_window, decoder_window,
                                      forward_bidirectional_blocks)
from methods.sea.estimator import BidirectionalDecoder
from methods.sea.interp import cell_bounds
from methods.sea.topk import budgets, select_topk

B, H, Hkv, D = 2, 4, 2, 16


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one intra-op thread (two threads spin against each other when the 2 cores are busy: 7 s -> 90 s
    for this file while another suite ran)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build(T, *, heads=H, kv_heads=Hkv, seed=5, **opts):
    M = get("sea")
    base = dict(k=3, K=16, backend="torch")
    cfg = M.resolve_config({key: str(val) for key, val in dict(base, **opts).items()})
    layer = M.build(cfg, Problem(B, heads, kv_heads, T, D, dtype="fp32", causal=False, device="cpu"), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():                                              # decoder weights: a wide spread of A_hat
        for p in layer.estimator.dec.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return layer


def qkv(T, seed=0, heads=H, kv_heads=Hkv, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, heads, T, D, generator=g).to(dtype), torch.randn(B, kv_heads, T, D, generator=g).to(dtype),
            torch.randn(B, kv_heads, T, D, generator=g).to(dtype))


def lowest_index_topk(x, n, eligible, *, per_head):
    """Reference selection: per group the n largest eligible values, ties to the lowest flat index (b, h, t, k)."""
    Bx, Hx, Tx, Kx = x.shape
    groups = x.reshape(Bx * Hx if per_head else Bx, -1)                # [G, cells] in flat order
    el = eligible.expand(Bx, Hx, Tx, Kx).reshape(groups.shape)
    sel = torch.zeros_like(groups, dtype=torch.bool)
    order = torch.sort(-groups.masked_fill(~el, -1.0), dim=-1, stable=True).indices   # stable: lower index first
    for gi in range(groups.shape[0]):
        sel[gi, order[gi, :min(int(n.reshape(-1)[gi]), int(el[gi].sum()))]] = True
    return sel.view(Bx, Hx, Tx, Kx)


def run_blocked_topk(x, n, eligible, *, per_head, rows):
    """BlockedTopK over x [B, H, T, K] in blocks of `rows` rows: (selection, whether a refinement pass ran)."""
    Bx, Hx, Tx, Kx = x.shape
    sel = BlockedTopK(n, B=Bx, H=Hx, T=Tx, K=Kx, per_head=per_head, eligible=eligible)
    blocks = [x[:, :, s:s + rows] for s in range(0, Tx, rows)]
    for blk in blocks:
        sel.count(blk)
    refined = sel.plan()
    if refined:
        for blk in blocks:
            sel.refine(blk)
        sel.settle()
    return torch.cat([sel.select(blk) for blk in blocks], dim=2), refined


def whole_with_lowest_index_rule(layer, q, k, v):
    """The whole call's stages with the selection made by the lowest-index rule instead of torch.topk."""
    T, K = q.shape[2], layer.K
    aux, _, vr = layer._pipeline(q, k, v, causal=False, key_padding_mask=None, scale=None)
    lo, hi = cell_bounds(torch.full((1, 1), T), K)
    n = budgets(layer.mode, torch.full((B, T), T), k=layer.k, K=K, H=q.shape[1])   # [B]: per group of b
    n = n[:, None].expand(B, q.shape[1]) if layer.mode == "per_head" else n        # per_head: per (b, h)
    mask = lowest_index_topk(aux["a_hat"], n, (hi > lo)[0, 0], per_head=layer.mode == "per_head")
    sel = layer.stage_interpolate(mask, causal=False, valid=None, layout="csr")
    c, _ = layer.stage_sparse(q, k, v, sel, causal=False, scale=aux["scale"], kernel="torch")
    out, _, _ = layer.stage_mix(c, aux["a_hat"], aux["s_prob"], aux["s_mix"], vr, causal=False, valid=None,
                                out_dtype=q.dtype)
    return out, aux


# --- the decoder on a window of rows --------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [1, 2, 3, 8, 37, 64])
def test_decoder_window_matches_whole_decoder(T):
    torch.manual_seed(T)
    dec = BidirectionalDecoder(D, H, 16)
    with torch.no_grad():
        for p in dec.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
        z = torch.randn(B, H, T, 2 * D)                                # [B, H, T, 2d] encoder rows
        want = dec(z)                                                  # [B, H, T, K]
        for rows in sorted({1 if T < 40 else 3, 2, 5, 11, T}):
            got = []
            for s in range(0, T, rows):
                e = min(T, s + rows)
                z0, z1 = decoder_window(T, s, e)
                assert 0 <= z0 <= s and e <= z1 <= T and (s - z0) <= 6 and (z1 - e) <= 6   # a halo, not the sequence
                got.append(decode_window(dec, z[:, :, z0:z1], T=T, s=s, e=e))
            torch.testing.assert_close(torch.cat(got, dim=2), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="encoder rows"):
        decode_window(dec, z[:, :, :1], T=T, s=0, e=T) if T > 3 else decode_window(dec, z[:, :, :0], T=T, s=0, e=1)


@pytest.mark.parametrize("T", [1, 8, 37])
def test_channels_last_decoder_equals_the_default_layout(T, monkeypatch):
    import methods.sea.estimator as est

    torch.manual_seed(T + 100)
    dec = BidirectionalDecoder(D, H, 16)
    with torch.no_grad():
        for p in dec.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
        z = torch.randn(B, H, T, 2 * D)
        want = dec(z)
        exact = copy.deepcopy(dec).double()(z.double())                 # float64: what both fp32 layouts round
        monkeypatch.setattr(est, "BIDIR_CHANNELS_LAST", True)
        got = dec(z)
    assert got.shape == want.shape == (B, H, T, 16)
    # the convolutions sum in another order: the same fp32 rounding size as the default layout's, not its bits
    err, err0 = (got.double() - exact).abs().max().item(), (want.double() - exact).abs().max().item()
    assert err <= 4 * err0 + 1e-6 * exact.abs().max().item(), (err, err0)


# --- the blocked top-k ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_head", [False, True])
def test_blocked_topk_matches_torch_topk_on_distinct_values(per_head):
    Bx, Hx, Tx, Kx, k = 2, 3, 23, 16, 2
    g = torch.Generator().manual_seed(3)
    x = torch.softmax(3 * torch.randn(Bx, Hx, Tx, Kx, generator=g), -1)   # distinct values (A_hat-like)
    mode = "per_head" if per_head else "per_batch"
    want = select_topk(x, mode=mode, k=k, causal=False)                # the whole call's torch.topk
    n = budgets(mode, torch.full((Bx, Tx), Tx), k=k, K=Kx, H=Hx)
    n = n[:, None].expand(Bx, Hx) if per_head else n
    for rows in (1, 5, Tx, 40):
        got, _ = run_blocked_topk(x, n, torch.ones(Kx, dtype=torch.bool), per_head=per_head, rows=rows)
        assert torch.equal(got, want) and int(got.sum()) == int(n.sum())


@pytest.mark.parametrize("per_head", [False, True])
def test_blocked_topk_ties_go_to_the_lowest_flat_index(per_head):
    Bx, Hx, Tx, Kx = 2, 3, 19, 12
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 6, (Bx, Hx, Tx, Kx), generator=g).float() / 8   # 6 values: ties everywhere, zeros too
    eligible = torch.ones(Kx, dtype=torch.bool)
    eligible[[2, 7]] = False                                           # cells covering no key are never selected
    for n_cells in (1, 37, 100, 10 ** 6):                              # 10**6: more than the eligible cells
        n = torch.full((Bx, Hx) if per_head else (Bx,), n_cells)
        n[0] += 3                                                      # distinct budgets per group
        want = lowest_index_topk(x, n, eligible, per_head=per_head)
        for rows in (1, 4, Tx):
            got, _ = run_blocked_topk(x, n, eligible, per_head=per_head, rows=rows)
            assert torch.equal(got, want), (n_cells, rows)
    # and the same rule on values equal in their high 16 bits but not in their low ones
    y = 0.25 + torch.randint(0, 4, (Bx, Hx, Tx, Kx), generator=g).float() * 2 ** -20
    n = torch.full((Bx, Hx) if per_head else (Bx,), 50)
    got, refined = run_blocked_topk(y, n, eligible, per_head=per_head, rows=6)
    assert refined and torch.equal(got, lowest_index_topk(y, n, eligible, per_head=per_head))


def test_blocked_topk_whole_bin_needs_no_refinement():
    Bx, Hx, Tx, Kx = 1, 2, 7, 16                                       # 224 cells, values j / 256: distinct bins
    g = torch.Generator().manual_seed(5)
    x = ((torch.randperm(Bx * Hx * Tx * Kx, generator=g) + 1).float() / 256).view(Bx, Hx, Tx, Kx)
    n = torch.tensor([29])
    got, refined = run_blocked_topk(x, n, torch.ones(Kx, dtype=torch.bool), per_head=False, rows=3)
    assert not refined
    assert int(got.sum()) == 29 and float(x[got].min()) > float(x[~got].max())


# --- the blocked forward against the whole call ----------------------------------------------------------------------
def assert_threshold_unique(aux, layer, T):
    """The whole call's threshold value is unique (so torch.topk's tie order cannot matter)."""
    n = int(budgets("per_batch", torch.full((B, T), T), k=layer.k, K=layer.K, H=H)[0])
    for b in range(B):
        vals = aux["a_hat"][b].reshape(-1).sort(descending=True).values
        assert n < vals.numel() and float(vals[n - 1]) > float(vals[n]), "tie at the threshold: test setup"


@pytest.mark.parametrize("T, rows", [(37, 1), (37, 5), (37, 36), (37, 37), (37, 50), (64, 7), (64, 64),
                                     (70, 9), (70, 100)])
def test_blocks_match_whole_call(T, rows):
    layer = build(T)
    q, k, v = qkv(T, seed=T)
    info = {}
    with torch.no_grad():
        want = layer(q, k, v, causal=False)
        assert_threshold_unique(layer.last_aux, layer, T)
        got = forward_bidirectional_blocks(layer, q, k, v, rows=rows, info=info)
    assert got.dtype == q.dtype and got.shape == q.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    nblocks = -(-T // rows)
    assert info["blocks"] == nblocks and info["sparse"] == "torch-gather"
    assert info["estimator_runs"] == (1 if nblocks == 1 else info["passes"] * nblocks)


@pytest.mark.parametrize("opts", [dict(), dict(mode="per_head"), dict(s_prob=0.7, s_mix=0.4)])
def test_blocks_follow_the_lowest_index_rule_at_ties(opts):
    """T < K: empty cells break A_hat's equal pairs, so the threshold is tied; the blocks then equal the whole
    call's stages run on the lowest-index selection (and the whole call itself wherever the choice is the same)."""
    T = 12
    layer = build(T, **opts)
    q, k, v = qkv(T, seed=1)
    with torch.no_grad():
        want, aux = whole_with_lowest_index_rule(layer, q, k, v)
        for rows in (1, 5, 12):
            got = forward_bidirectional_blocks(layer, q, k, v, rows=rows)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if "s_prob" in opts:
        assert torch.all(aux["s_prob"] == 0.7) and torch.all(aux["s_mix"] == 0.4)


def test_blocks_gqa_free_mha_and_bf16_inputs():
    T = 37
    layer = build(T, heads=H, kv_heads=H)                              # no GQA
    q, k, v = qkv(T, seed=2, kv_heads=H)
    with torch.no_grad():
        torch.testing.assert_close(forward_bidirectional_blocks(layer, q, k, v, rows=8),
                                   layer(q, k, v, causal=False), rtol=1e-5, atol=1e-5)
    layer = build(T)
    q, k, v = qkv(T, seed=3, dtype=torch.bfloat16)
    with torch.no_grad():
        want = layer(q, k, v, causal=False, scale=0.2)
        got = forward_bidirectional_blocks(layer, q, k, v, rows=10, scale=0.2)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("opts", [dict(backend="triton"), dict(backend="triton", mix_backend="triton"),
                                  dict(backend="triton_rows", encoder_backend="triton")])
def test_blocks_triton_paths(opts):
    """The row kernel, the fused attention + mix kernel, the rows kernel and the fused encoder over query blocks (the
    Triton interpreter on the CPU: tiny sizes)."""
    T = 20
    layer = build(T, **opts)
    q, k, v = qkv(T, seed=6)
    info = {}
    with torch.no_grad():
        want = layer(q, k, v, causal=False)
        got = forward_bidirectional_blocks(layer, q, k, v, rows=8, info=info)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert info["sparse"] == ("triton_rows" if opts["backend"] == "triton_rows" else "triton")
    fused = "mix_backend" in opts or opts["backend"] == "triton_rows"      # auto: the rows kernel's mix epilogue
    assert info["mix"] == ("fused" if fused else "torch")
    assert layer.estimator.last_encoder == ("triton" if "encoder_backend" in opts else "torch")


@pytest.mark.parametrize("opts", [dict(performer_dtype="bf16"), dict(estimator_dtype="bf16")])
def test_blocks_low_precision_estimator(opts):
    """bf16 Performer operands (the summary accumulated in fp32 over key blocks, rounded to bf16 once, as the dense
    path rounds its one product) / bf16 decoder (the same autocast): agreement to bf16 rounding. (A rounding
    difference could move a cell across the threshold; with these seeds none does.)"""
    T = 37
    layer = build(T, **opts)
    q, k, v = qkv(T, seed=4)
    with torch.no_grad():
        want = layer(q, k, v, causal=False)
        got = forward_bidirectional_blocks(layer, q, k, v, rows=6)
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)


def test_refuses_in_words():
    T = 16
    layer = build(T)
    q, k, v = qkv(T)
    assert bidirectional_block_reason(layer, q, k, v, key_padding_mask=torch.ones(B, T, dtype=torch.bool)) == \
        "padding mask"
    with pytest.raises(ValueError, match="gradient needed"):            # parameters require grad, grad enabled
        forward_bidirectional_blocks(layer, q, k, v, rows=4)
    with torch.no_grad():
        with pytest.raises(ValueError, match="rows=0"):
            forward_bidirectional_blocks(layer, q, k, v, rows=0)
        with pytest.raises(ValueError, match="NaN"):
            forward_bidirectional_blocks(layer, q.clone().fill_(float("nan")), k, v, rows=4)
        for opts, why in ((dict(mode="per_query"), "mode per_query"), (dict(backend="triton_tiled"), "tiled")):
            with pytest.raises(ValueError, match=why):
                forward_bidirectional_blocks(build(T, **opts), q, k, v, rows=4)
        M = get("sea")
        causal = M.build(M.resolve_config({"K": "16"}), Problem(B, H, Hkv, T, D, causal=True), seed=0)
        with pytest.raises(ValueError, match="causal layer"):
            forward_bidirectional_blocks(causal, q, k, v, rows=4)


# --- memory: no tensor of A_hat's size ------------------------------------------------------------------------------
class TensorSizes(TorchDispatchMode):
    """Records (numel, op) of every tensor an aten op returns while active (views included)."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.sizes += [(t.numel(), str(func)) for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        return out


def test_no_tensor_of_the_estimates_size():
    Bm, Hm, Hkvm, T, K, rows = 1, 4, 2, 3000, 128, 256
    M = get("sea")
    cfg = M.resolve_config(dict(k="3", K=str(K), backend="torch"))
    layer = M.build(cfg, Problem(Bm, Hm, Hkvm, T, D, causal=False), seed=1)
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(Bm, h, T, D, generator=g) for h in (Hm, Hkvm, Hkvm))
    full = Bm * Hm * T * K                                             # A_hat's size: 1.5M
    with torch.no_grad():
        with TensorSizes() as whole:
            want = layer(q, k, v, causal=False)
        info = {}
        with TensorSizes() as blocked:
            got = forward_bidirectional_blocks(layer, q, k, v, rows=rows, info=info)
    assert max(n for n, _ in whole.sizes) >= full                      # the instrument sees the whole call's A_hat
    big = max(blocked.sizes)
    assert big[0] < full // 4, big                                     # nothing near A_hat's size
    # apart from q / the output (B H T D) and the histograms (65536 bins per group, per head for the low bits),
    # every tensor is a block's: the largest is the decoder's row projection [B, H, rows + halo, 2K]
    qsize, hists = Bm * Hm * T * D, {Bm * NBINS, Bm * NBINS + 1, Bm * Hm * NBINS, Bm * Hm * NBINS + 1}
    per_block = max(n for n, _ in blocked.sizes if n not in hists and n != qsize)
    assert per_block <= 2 * Bm * Hm * (rows + 16) * K, per_block
    assert info["blocks"] == 12 and info["passes"] == 3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T,K,k,R", [(37, 8, 3, 10), (200, 16, 5, 33), (5, 8, 3, 5)])
def test_block_lists_by_the_interpolation_kernels_equal_block_csr(T, K, k, R):
    """A block's CSR lists from kernels/sea_interp.py (row_key_counts + csr_columns_cells with span=T: the block's
    R rows each span all T keys) equal block_csr's, entry for entry; T < K gives cells of width 0 (never keys)."""
    from kernels.sea_interp import csr_columns_cells, row_key_counts
    from methods.sea.bidir_blocks import block_csr
    from methods.sea.interp import cell_bounds

    B, H = 2, 3
    g = torch.Generator().manual_seed(T + R)
    sel = torch.rand(B, H, R, K, generator=g) < 0.3                      # [B, H, R, K]
    lo, hi = cell_bounds(torch.full((1, 1), T, dtype=torch.long), K)     # [1, 1, K]
    want_ptr, want_col = block_csr(sel, k=k, lo=lo[0, 0], width=(hi - lo)[0, 0])
    ptr = row_key_counts(sel, k, causal=False, row_ptr=True, span=T)
    nnz = int(ptr[-1])
    col = csr_columns_cells(sel, ptr, k, max(nnz, 1), causal=False, span=T)[:nnz]
    assert torch.equal(ptr, want_ptr) and torch.equal(col, want_col) and nnz > 0
    with pytest.raises(ValueError, match="span"):
        row_key_counts(sel, k, causal=True, row_ptr=True, span=T)


def test_blocks_take_the_interpolation_kernels_when_asked():
    """interp_backend=triton: bidirectional query blocks build their lists with the kernels (impl says interp=triton)
    and give the same output as with the tensor ops."""
    T = 20
    outs = []
    for interp in ("torch", "triton"):
        layer = build(T, backend="triton_rows", interp_backend=interp)
        q, k, v = qkv(T, seed=7)
        with torch.no_grad():
            outs.append(forward_bidirectional_blocks(layer, q, k, v, rows=8))
        assert layer.last_interp == interp
    assert torch.equal(outs[0], outs[1])
