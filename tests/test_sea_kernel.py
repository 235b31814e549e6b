"""SEA sparse attention kernel (Triton, under TRITON_INTERPRET=1 on CPU) vs the dense-masked reference."""
import math

import pytest
import torch

import kernels.sea_sparse_attention as ssa
from kernels.sea_sparse_attention_ref import dense_mask_from_csr, sparse_attention_ref

B, H, HKV, T, D = 2, 4, 2, 37, 16


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(ssa, "POISON_OUTPUTS", True)


def random_csr(B, H, T, W, gen, causal=False):
    """Random CSR key lists: distinct keys in random order, 0..W per row (some rows empty)."""
    cols, counts = [], []
    for b in range(B):
        for h in range(H):
            for t in range(T):
                span = t + 1 if causal else T
                n = int(torch.randint(0, min(W, span) + 1, (1,), generator=gen))
                if (b, h, t) == (0, 0, 3):
                    n = 0                               # an empty row: output must be 0
                cols.append(torch.randperm(span, generator=gen)[:n])
                counts.append(n)
    row_ptr = torch.zeros(B * H * T + 1, dtype=torch.int64)
    row_ptr[1:] = torch.tensor(counts).cumsum(0)
    return row_ptr, torch.cat(cols).int()


def make(dtype=torch.float32, seed=0, W=20, causal=False, hkv=HKV):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=gen).to(dtype).requires_grad_()
    k = torch.randn(B, hkv, T, D, generator=gen).to(dtype).requires_grad_()
    v = torch.randn(B, hkv, T, D, generator=gen).to(dtype).requires_grad_()
    row_ptr, col = random_csr(B, H, T, W, gen, causal)
    return q, k, v, row_ptr, col


@pytest.mark.parametrize("heads_fast", [False, True])
@pytest.mark.parametrize("hkv,W", [(HKV, 20), (H, 37)])
def test_triton_matches_dense_reference_outputs_and_grads(hkv, W, heads_fast, monkeypatch):
    monkeypatch.setattr(ssa, "ROW_BWD_HEADS_FAST", heads_fast)           # the backward's two program orders
    q, k, v, rp, col = make(hkv=hkv, W=W)
    scale = 0.3
    out = ssa.sparse_attention_triton(q, k, v, rp, col, scale)
    ref = sparse_attention_ref(q, k, v, rp, col, scale)               # float64
    assert out.dtype == q.dtype and out.shape == (B, H, T, D)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-5)
    assert torch.all(out[0, 0, 3] == 0)
    g = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad(out, (q, k, v), g)
    want = torch.autograd.grad(ref, (q, k, v), g.double())
    for name, a, b in zip("qkv", got, want):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a.double(), b.double(), atol=5e-5, rtol=1e-4, msg=lambda m, name=name: f"d{name}: {m}")


def test_triton_forward_writes_every_row():
    q, k, v, rp, col = make(seed=1)
    out = torch.full_like(q, float("nan"))
    lse = torch.full((B, H, T), float("nan"))
    ssa._triton_forward(q.detach().contiguous(), k.detach().contiguous(), v.detach().contiguous(), rp, col, 0.25,
                        out=out, lse=lse)
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    # lse equals the log-sum-exp of the selected scores (rows with keys)
    kr = k.detach().repeat_interleave(H // HKV, 1)
    s = (q.detach() @ kr.transpose(-1, -2)) * 0.25
    mask = dense_mask_from_csr(rp, col, B, H, T)
    want = torch.logsumexp(s.masked_fill(~mask, float("-inf")), -1)
    live = (rp[1:] - rp[:-1]).view(B, H, T) > 0
    assert torch.isinf(lse[~live]).all()
    torch.testing.assert_close(lse[live], want[live], atol=1e-5, rtol=1e-5)


def test_triton_half_precision():
    q, k, v, rp, col = make(dtype=torch.float16, seed=2)
    out = ssa.sparse_attention_triton(q, k, v, rp, col, 1 / math.sqrt(D))
    ref = sparse_attention_ref(q, k, v, rp, col, 1 / math.sqrt(D))
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), ref, atol=2e-3, rtol=2e-3)


def test_torch_gather_fallback_matches_reference():
    q, k, v, rp, col = make(seed=3, causal=True)
    out, ran = ssa.sea_sparse_attention(q, k, v, rp, col, 0.4, backend="torch")
    assert ran == "torch-gather"
    ref = sparse_attention_ref(q, k, v, rp, col, 0.4)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-5)
    g = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(6))
    got = torch.autograd.grad(out, (q, k, v), g)
    want = torch.autograd.grad(ref, (q, k, v), g.double())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b.double(), atol=5e-5, rtol=1e-4)


def test_auto_backend_names_what_ran():
    q, k, v, rp, col = make(seed=4)
    _, ran = ssa.sea_sparse_attention(q, k, v, rp, col)
    assert ran == ("triton" if ssa.triton_usable(q.device) else "torch-gather")


def test_malformed_csr_rejected():
    q, k, v, rp, col = make(seed=7)
    with pytest.raises(ValueError, match="row_ptr"):
        ssa.sea_sparse_attention(q, k, v, rp[:-1], col, backend="torch")
    with pytest.raises(ValueError, match="entries"):
        ssa.sea_sparse_attention(q, k, v, rp, col[:-1], backend="triton")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_triton_gpu_matches_torch_path(dtype):
    # compiled kernel at a realistic size: Triton vs the torch gather path (both float32 accumulation)
    from methods.sea.interp import mask_to_csr

    g = torch.Generator(device="cuda").manual_seed(0)
    Bg, Hg, Hk, Tg, Dg = 2, 8, 2, 2048, 64
    q = torch.randn(Bg, Hg, Tg, Dg, device="cuda", generator=g).to(dtype).requires_grad_()
    k = torch.randn(Bg, Hk, Tg, Dg, device="cuda", generator=g).to(dtype).requires_grad_()
    v = torch.randn(Bg, Hk, Tg, Dg, device="cuda", generator=g).to(dtype).requires_grad_()
    mask = torch.rand(Bg, Hg, Tg, 64, device="cuda", generator=g) < 0.1
    rp, col = mask_to_csr(mask, k=8, causal=True)
    out = ssa.sparse_attention_triton(q, k, v, rp, col, 0.125)
    ref = ssa.sparse_attention_torch(q, k, v, rp, col, 0.125)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)
    gout = torch.randn_like(out)
    a = torch.autograd.grad(out, (q, k, v), gout)
    b = torch.autograd.grad(ref, (q, k, v), gout)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.float(), y.float(), atol=10 * tol, rtol=10 * tol)


# --- interpolation kernel (kernels/sea_interp.py) -------------------------------------------------------

@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("k,slot_block", [(1, 64), (3, 64), (8, 64), (3, 4)])
def test_interp_kernel_matches_torch_lists_and_loop_reference(causal, k, slot_block, monkeypatch):
    """The Triton columns equal the tensor-op lists (same row pointers, same columns, filler included) and a
    plain-loop restatement; B=2, H=3, T=37, K=8 so that cells of width 0..5 and uneven rows occur; slot blocks
    of 4 make the row programs loop (rows of up to 24 entries)."""
    import kernels.sea_interp as si
    from kernels.sea_interp import csr_columns_ref
    from methods.sea.interp import cell_bounds, mask_to_csr, row_lengths

    monkeypatch.setattr(si, "SLOT_BLOCK", slot_block)

    B, H, T, K = 2, 3, 37, 8
    mask = torch.rand(B, H, T, K, generator=torch.Generator().manual_seed(k + 10 * causal)) < 0.4
    caps = (B * H * T * K, B * H * T * K * k + 5)                        # generous host-side capacities
    rp_t, col_t = mask_to_csr(mask, k=k, causal=causal, caps=caps, backend="torch")
    rp_k, col_k = mask_to_csr(mask, k=k, causal=causal, caps=caps, backend="triton")
    assert int(rp_t[-1]) > 0 and torch.equal(rp_t, rp_k)
    assert col_k.dtype == torch.int32 and torch.equal(col_t, col_k)
    L = row_lengths(1, T, causal=causal, valid=None, device="cpu")
    lo, hi = cell_bounds(L, K)                                           # [1, T, K]
    sel = (mask & (hi - lo)[:, None].gt(0)).reshape(B * H * T, K)
    ref = csr_columns_ref(sel, lo[0], (hi - lo)[0], rp_t, k, caps[1])
    assert torch.equal(ref, col_k)
    with pytest.raises(ValueError, match="interpolation backend"):
        mask_to_csr(mask, k=k, causal=causal, caps=caps, backend="cuda")


def test_sea_forward_same_with_either_interpolation_backend():
    from methods.base import Problem, get

    cls = get("sea")
    p = Problem(batch=1, heads=4, kv_heads=2, seq_len=96, head_dim=16, causal=True)
    g = torch.Generator().manual_seed(4)
    q = torch.randn(1, 4, 96, 16, generator=g)
    k, v = torch.randn(1, 2, 96, 16, generator=g), torch.randn(1, 2, 96, 16, generator=g)
    outs = []
    for backend in ("torch", "triton"):
        mod = cls.build(cls.resolve_config({"k": "4", "K": "16", "backend": "torch", "interp_backend": backend}), p)
        outs.append(mod(q, k, v, causal=True))
    assert torch.equal(outs[0], outs[1])


# --- top-k kernel (kernels/sea_topk.py) -----------------------------------------------------------------

@pytest.mark.parametrize("per_group", [1, 3])
def test_topk_kernel_matches_stable_sort_restatement_with_ties(per_group):
    """Scores on a coarse grid (many ties) and cells of width 0: the kernel keeps the n_t highest eligible cells
    per group, ties to the lowest (head, cell) index, exactly like a stable sort."""
    from kernels.sea_topk import select_rows, select_rows_ref

    B, H, T, K = 2, 3, 21, 8
    g = torch.Generator().manual_seed(per_group)
    a = torch.randint(0, 4, (B, H, T, K), generator=g).float() / 4       # [B, H, T, K] values in {0, .25, .5, .75}
    width = torch.randint(0, 3, (T, K), generator=g)                      # 0: an empty cell
    n = torch.randint(1, per_group * K + 3, (T,), generator=g)            # budgets, some above the group size
    got = select_rows(a, width, n, heads_per_group=per_group)
    want = select_rows_ref(a, width, n, heads_per_group=per_group)
    assert got.dtype == torch.bool and torch.equal(got, want)
    assert got.any() and not got[:, :, width == 0].any()


@pytest.mark.parametrize("mode,causal", [("causal_per_batch", True), ("per_query", True), ("per_query", False)])
def test_select_topk_triton_backend_matches_torch(mode, causal):
    from methods.sea.topk import select_topk

    probs = torch.rand(2, 4, 45, 16, generator=torch.Generator().manual_seed(2))     # no ties
    want = select_topk(probs, mode=mode, k=3, causal=causal)
    got = select_topk(probs, mode=mode, k=3, causal=causal, backend="triton")
    assert want.any() and torch.equal(got, want)


def test_sea_topk_backend_keeps_a_valid_top_n_of_the_estimate():
    """SEA's causal estimate has ties by construction (the decoder repeats each of its K/4 columns 4 times), and
    torch.topk breaks ties in an unspecified order while the kernel takes the lowest index: per group both keep
    the same number of cells, and no unselected eligible cell scores above a selected one."""
    from methods.base import Problem, get
    from methods.sea.interp import cell_bounds, row_lengths

    cls = get("sea")
    H, T, K = 4, 96, 16
    p = Problem(batch=1, heads=H, kv_heads=2, seq_len=T, head_dim=16, causal=True)
    g = torch.Generator().manual_seed(6)
    q = torch.randn(1, H, T, 16, generator=g)
    k, v = torch.randn(1, 2, T, 16, generator=g), torch.randn(1, 2, T, 16, generator=g)
    masks = {}
    for b in ("torch", "triton"):
        mod = cls.build(cls.resolve_config({"k": "4", "K": str(K), "backend": "torch", "topk_backend": b,
                                            "interp_backend": b}), p)
        out = mod(q, k, v, causal=True)
        assert torch.isfinite(out).all()
        masks[b], a_hat = mod.last_aux["mask"], mod.last_aux["a_hat"]                # [1, H, T, K]
    lo, hi = cell_bounds(row_lengths(1, T, causal=True, valid=None, device="cpu"), K)
    elig = (hi > lo)[:, None].expand(1, H, T, K)
    per_row = lambda m: m.permute(0, 2, 1, 3).reshape(T, H * K)                       # noqa: E731 [T, H*K]
    got, ref, a, e = per_row(masks["triton"]), per_row(masks["torch"]), per_row(a_hat.detach()), per_row(elig)
    assert torch.equal(got.sum(-1), ref.sum(-1)) and not (got & ~e).any()
    low_in = torch.where(got, a, torch.inf).amin(-1)                                  # lowest selected score
    high_out = torch.where(~got & e, a, -torch.inf).amax(-1)                          # highest left out
    assert (low_in >= high_out).all()


def test_topk_path_auto_takes_the_kernel_only_where_it_was_measured():
    """auto: the per-row kernel for the per-row modes without padding, on CUDA, for groups up to 1024 candidates; the
    radix select (kernels/sea_topk_global.py) for per_batch / per_head without padding on CUDA; tensor ops on the
    CPU, with a padding mask and for larger per-row groups. The path that ran is named."""
    from methods.base import Problem, get
    from methods.sea.topk import AUTO_KERNEL_MAX_GROUP, topk_path

    valid = torch.ones(1, 8, dtype=torch.bool)
    path = lambda mode, H=16, K=64, valid=None, backend="auto", device="cuda": topk_path(  # noqa: E731
        mode, H=H, K=K, valid=valid, backend=backend, device=device)
    assert AUTO_KERNEL_MAX_GROUP == 16 * 64
    assert path("causal_per_batch") == "triton" and path("per_query", K=128) == "triton"
    assert path("causal_per_batch", H=32) == "torch"                   # 2048 candidates per group: not measured
    assert path("per_query", K=2048) == "torch"
    assert path("causal_per_batch", device="cpu") == "torch"
    assert path("causal_per_batch", valid=valid) == "torch"
    assert path("per_batch") == "triton" and path("per_head") == "triton"        # the radix select, measured
    assert path("per_batch", device="cpu") == "torch" and path("per_batch", valid=valid) == "torch"
    assert path("causal_per_batch", H=32, backend="triton", device="cpu") == "triton"   # asked for: taken
    assert path("per_batch", backend="triton", valid=valid) == "torch"  # no kernel with a padding mask
    assert path("causal_per_batch", backend="torch") == "torch"
    with pytest.raises(ValueError, match="expected auto, torch or triton"):
        path("per_query", backend="cuda")
    cls = get("sea")
    assert cls.resolve_config({})["topk_backend"] == "auto"
    p = Problem(batch=1, heads=2, kv_heads=2, seq_len=40, head_dim=16, causal=True)
    mod = cls.build(cls.resolve_config({"k": "4", "K": "8", "backend": "torch"}), p)
    g = torch.Generator().manual_seed(3)
    mod(*(torch.randn(1, 2, 40, 16, generator=g) for _ in range(3)), causal=True)
    assert "topk=torch" in mod.impl                                     # CPU: auto -> tensor ops
