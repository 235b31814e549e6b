"""SEA pipeline stages, each against a plain (loop / float64) re-statement."""
import math

import pytest
import torch
import torch.nn.functional as F

from methods.sea.estimator import CausalConv2d, Estimator, identity_values
from methods.sea.favor import favor_attention, linear_attention, orthogonal_random_features, softmax_features
from methods.sea.interp import cell_bounds, csr_to_dense, expand_columns, mask_to_csr
from methods.sea.layer import pool_columns
from methods.sea.topk import select_topk

B, H, T, D = 2, 4, 37, 16


def rnd(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def pyround(x: float) -> int:
    return int(math.floor(x + 0.5))


# --- FAVOR+ -------------------------------------------------------------------------------------

def test_orthogonal_features_blocks_are_orthogonal_and_seeded():
    d, m = 16, 44
    w1 = orthogonal_random_features(m, d, torch.Generator().manual_seed(3))
    w2 = orthogonal_random_features(m, d, torch.Generator().manual_seed(3))
    w3 = orthogonal_random_features(m, d, torch.Generator().manual_seed(4))
    assert w1.shape == (m, d) and torch.equal(w1, w2) and not torch.equal(w1, w3)
    for s in range(0, m, d):
        blk = w1[s:s + d].double()
        gram = blk @ blk.T
        off = gram - torch.diag(torch.diag(gram))
        assert off.abs().max() < 1e-4


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_matches_explicit_matrix(causal):
    m, dv = 7, 5
    pq = rnd(B, H, T, m, seed=1).abs()
    pk = rnd(B, H, T, m, seed=2).abs()
    v = rnd(B, H, T, dv, seed=3)
    got = linear_attention(pq, pk, v, causal=causal, chunk=5, eps=0.0)   # chunk 5: several chunks + remainder
    a = pq @ pk.transpose(-1, -2)                                        # [B, H, T, T]
    if causal:
        a = a * torch.ones(T, T, dtype=torch.float64).tril()
    want = (a @ v) / a.sum(-1, keepdim=True)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_softmax_features_restated():
    d, m = D, 11
    x = rnd(B, H, T, d, seed=4)
    w = rnd(m, d, seed=5)
    got = softmax_features(x, w, is_query=True, eps=1e-4)
    out = torch.empty(B, H, T, m, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                xs = x[b, h, t] / d ** 0.25
                dash = w @ xs
                out[b, h, t] = m ** -0.5 * (torch.exp(dash - (xs @ xs) / 2 - dash.max()) + 1e-4)
    torch.testing.assert_close(got, out)
    # key stabiliser is one max over valid keys: padded keys must not change valid features
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 30:] = False
    x2 = x.clone()
    x2[1, :, 30:] = 50.0
    a = softmax_features(x, w, is_query=False, valid=valid)
    b2 = softmax_features(x2, w, is_query=False, valid=valid)
    torch.testing.assert_close(a[:, :, :30], b2[:, :, :30])


def test_favor_softmax_kernel_tracks_softmax_attention_at_many_features():
    # a sanity bound, not a tolerance test: with m=4096 features the estimate is close to softmax
    d = 8
    q, k, v = (rnd(1, 1, 20, d, seed=s) * 0.5 for s in (6, 7, 8))
    w = orthogonal_random_features(4096, d, torch.Generator().manual_seed(0)).double()
    got = favor_attention(q, k, v, w.float(), kernel="softmax", causal=False)
    want = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1) @ v
    assert (got.double() - want).abs().max() < 0.1


# --- estimator pieces ---------------------------------------------------------------------------

def test_identity_values_is_bilinear_eye_over_valid_tokens():
    d = 6
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 20:] = False
    got = identity_values(valid, B, T, d, "cpu")
    eye = torch.eye(d, dtype=torch.float64)
    for b in range(B):
        L = int(valid[b].sum())
        for t in range(T):
            if not valid[b, t]:
                assert torch.all(got[b, t] == 0)
                continue
            y = t * (d - 1) / (L - 1)
            lo = int(math.floor(y))
            hi = min(lo + 1, d - 1)
            f = y - lo
            want = (1 - f) * eye[lo] + f * eye[hi]
            torch.testing.assert_close(got[b, t].double(), want, atol=1e-6, rtol=0)


def test_identity_rows_equal_identity_values_without_padding():
    """identity_rows (what the bidirectional forward makes inside its compiled graph when there is no padding mask):
    the same float32 values as identity_values(None, ...), whole and as row slices (the query-block windows)."""
    from methods.sea.estimator import identity_rows

    for T, d in ((1, 4), (2, 1), (37, 6), (1000, 32), (4096, 64)):
        full = identity_values(None, 2, T, d, "cpu")
        assert torch.equal(identity_rows(T, d, "cpu"), full[0]) and torch.equal(full[1], full[0])
        s, e = T // 3, T - T // 4
        assert torch.equal(identity_rows(T, d, "cpu", s, e), full[0, s:e])


def test_causal_conv_ignores_future_rows():
    conv = CausalConv2d(3, 2, 3, dilation=2)
    x = rnd(1, 3, 20, 9, seed=9, dtype=torch.float32)
    y = conv(x)
    x2 = x.clone()
    x2[:, :, 11:] += 5.0
    y2 = conv(x2)
    assert y.shape == (1, 2, 20, 9)
    assert torch.equal(y[:, :, :11], y2[:, :, :11])
    assert not torch.equal(y[:, :, 11:], y2[:, :, 11:])


@pytest.mark.parametrize("causal", [False, True])
def test_estimator_shapes_and_seed(causal):
    K = 64 if causal else 128
    e1 = Estimator(d=D, H=H, K=K, causal=causal, nbf=8.0 if causal else 1.0, max_len=64, seed=0)
    e2 = Estimator(d=D, H=H, K=K, causal=causal, nbf=8.0 if causal else 1.0, max_len=64, seed=0)
    assert e1.nb_features == int(D * math.log(D) / (8 if causal else 1))
    q, k, v = (rnd(B, H, T, D, seed=s, dtype=torch.float16) for s in (1, 2, 3))
    lg, sp, sm = e1(q, k, v, valid=None)
    lg2, _, _ = e2(q, k, v, valid=None)
    assert lg.shape == (B, H, T, K) and sp.shape == sm.shape == (B, H, T, 1)
    assert lg.dtype == torch.float32 and torch.equal(lg, lg2)
    assert torch.all((sp > 0) & (sp < 1)) and torch.all((sm > 0) & (sm < 1))


# --- grouped top-k ------------------------------------------------------------------------------

def topk_reference(probs, mode, k, causal, valid):
    """Loop re-statement: eligible = non-empty cell of a valid row; the n best per group."""
    Bq, Hq, Tq, K = probs.shape
    sel = torch.zeros(Bq, Hq, Tq, K, dtype=torch.bool)

    def L_of(b, t):
        return t + 1 if causal else (int(valid[b].sum()) if valid is not None else Tq)

    def eligible(b, t, c):
        L = L_of(b, t)
        lo, hi = pyround(c * L / K), pyround((c + 1) * L / K)
        return hi > lo and (valid is None or bool(valid[b, t]))

    def take(cands, n):
        cands = sorted(cands, key=lambda e: -e[0])[:n]
        for _, pos in cands:
            sel[pos] = True

    for b in range(Bq):
        if mode in ("per_head", "per_batch"):
            L = L_of(b, 0)
            per = min(max(int(math.floor(k * K / L)), 1), K)
            heads = [[h] for h in range(Hq)] if mode == "per_head" else [list(range(Hq))]
            for hs in heads:
                n = len(hs) * L * per
                take([(float(probs[b, h, t, c]), (b, h, t, c)) for h in hs for t in range(Tq) for c in range(K)
                      if eligible(b, t, c)], n)
            continue
        for t in range(Tq):
            L = L_of(b, t)
            if mode == "per_query":
                n = min(max(pyround(k * K / L), 1), K)
                for h in range(Hq):
                    take([(float(probs[b, h, t, c]), (b, h, t, c)) for c in range(K) if eligible(b, t, c)], n)
            else:
                n = min(max(pyround(Hq * k * K / L), 1), Hq * K)
                take([(float(probs[b, h, t, c]), (b, h, t, c)) for h in range(Hq) for c in range(K)
                      if eligible(b, t, c)], n)
    return sel


@pytest.mark.parametrize("mode,causal,padded", [
    ("per_query", True, False), ("per_query", False, True), ("causal_per_batch", True, False),
    ("causal_per_batch", False, True), ("per_head", False, True), ("per_batch", False, True),
    ("per_batch", False, False)])
def test_topk_budget_per_mode(mode, causal, padded):
    K, k, Tq = 8, 2, 13
    probs = torch.softmax(rnd(B, 3, Tq, K, seed=11), -1).float()
    valid = None
    if padded:
        valid = torch.ones(B, Tq, dtype=torch.bool)
        valid[1, 9:] = False
    got = select_topk(probs, mode=mode, k=k, causal=causal, valid=valid)
    want = topk_reference(probs, mode, k, causal, valid)
    assert got.shape == want.shape
    assert torch.equal(got, want)
    assert got.any() and not got.all()


def test_topk_refuses_time_crossing_modes_when_causal():
    with pytest.raises(ValueError, match="leak"):
        select_topk(torch.rand(1, 2, 5, 4), mode="per_batch", k=1, causal=True)


# --- interpolation ------------------------------------------------------------------------------

def interp_reference(mask, k, causal, valid):
    Bq, Hq, Tq, K = mask.shape
    out = {}
    for b in range(Bq):
        pos = list(range(Tq)) if valid is None or causal else [i for i in range(Tq) if valid[b, i]]
        for h in range(Hq):
            for t in range(Tq):
                L = t + 1 if causal else len(pos)
                keys = set()
                for c in range(K):
                    if not mask[b, h, t, c]:
                        continue
                    lo, hi = pyround(c * L / K), pyround((c + 1) * L / K)
                    n = min(hi - lo, k)
                    for j in range(n):
                        keys.add(pos[lo + (j * (hi - lo)) // n])
                if valid is not None:
                    keys = {x for x in keys if valid[b, x]}
                out[(b, h, t)] = keys
    return out


@pytest.mark.parametrize("causal,padded,k,K", [(True, False, 2, 8), (False, True, 3, 8), (True, True, 1, 4),
                                               (False, False, 40, 16)])
def test_mask_to_indices_matches_loop_reference(causal, padded, k, K):
    Tq = 29
    mask = torch.rand(B, 3, Tq, K, generator=torch.Generator().manual_seed(12)) < 0.4
    valid = None
    if padded:
        valid = torch.ones(B, Tq, dtype=torch.bool)
        valid[0, 21:] = False
        valid[1, 5] = False if causal else True
    rp, col = mask_to_csr(mask, k=k, causal=causal, valid=valid)
    ref = interp_reference(mask, k, causal, valid)
    Hq = mask.shape[1]
    assert rp.shape == (B * Hq * Tq + 1,) and int(rp[-1]) == col.numel()
    for (b, h, t), keys in ref.items():
        r = (b * Hq + h) * Tq + t
        row = col[rp[r]:rp[r + 1]].tolist()
        assert row == sorted(keys), (b, h, t)                  # ascending, no duplicates
        if causal:
            assert all(x <= t for x in row)
    dense = csr_to_dense(rp, col, (B, Hq, Tq), Tq, rows=torch.tensor([4, 0]))
    for b in range(B):
        for h in range(Hq):
            assert set(dense[b, h, 0].nonzero().flatten().tolist()) == ref[(b, h, 4)]
            assert set(dense[b, h, 1].nonzero().flatten().tolist()) == ref[(b, h, 0)]


def test_interpolation_covers_every_key_and_spaces_uniformly():
    Tq, K = 50, 4                      # s = L_t / K up to 12.5 keys per cell
    full = torch.ones(1, 1, Tq, K, dtype=torch.bool)
    rp, col = mask_to_csr(full, k=Tq, causal=True)
    for t in range(Tq):                # k >= cell width: every key 0..t exactly once
        assert col[rp[t]:rp[t + 1]].tolist() == list(range(t + 1))
    k = 3
    rp, col = mask_to_csr(full, k=k, causal=False)
    lo, hi = cell_bounds(torch.tensor([[Tq]]), K)
    keys = col[rp[0]:rp[1]].tolist()
    assert len(keys) == K * k
    for c in range(K):                 # inside a cell: k keys, first at lo, gaps differ by at most 1
        a, z = int(lo[0, 0, c]), int(hi[0, 0, c])
        cell = [x for x in keys if a <= x < z]
        assert len(cell) == k and cell[0] == a
        gaps = [y - x for x, y in zip(cell, cell[1:])]
        assert max(gaps) - min(gaps) <= 1


def test_pool_and_expand_columns_restated():
    Tq, K = 23, 4
    valid = torch.ones(B, Tq, dtype=torch.bool)
    valid[1, 3] = False
    valid[1, 18:] = False
    p = torch.rand(B, 2, Tq, Tq, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    p = p * valid[:, None, None, :]
    got = pool_columns(p, K=K, causal=False, valid=valid)
    x = torch.rand(B, 2, Tq, K, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    ex = expand_columns(x, causal=False, valid=valid, T=Tq)
    for b in range(B):
        pos = [i for i in range(Tq) if valid[b, i]]
        L = len(pos)
        for c in range(K):
            lo, hi = pyround(c * L / K), pyround((c + 1) * L / K)
            cols = pos[lo:hi]
            torch.testing.assert_close(got[b, :, :, c], p[b][:, :, cols].sum(-1))
            for j in cols:
                torch.testing.assert_close(ex[b, :, :, j], x[b, :, :, c])
        for j in range(Tq):
            if not valid[b, j]:
                assert torch.all(ex[b, :, :, j] == 0)


@pytest.mark.parametrize("shape,size", [((1, 3, 7, 4), (5, 8)), ((2, 2, 8, 6), (7, 12)), ((1, 1, 9, 3), (9, 3)),
                                        ((1, 2, 5, 4), (10, 16)), ((1, 2, 38, 32), (37, 64))])
def test_nearest_resize_equals_interpolate(shape, size):
    from methods.sea.estimator import nearest_resize

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))     # [B, C, R, S]
    got = nearest_resize(x, *size)
    assert torch.equal(got, F.interpolate(x, size=size, mode="nearest"))
    assert torch.equal(x.repeat_interleave(2, dim=2), F.interpolate(x, scale_factor=(2, 1), mode="nearest"))


@pytest.mark.parametrize("causal", [False, True])
def test_favor_bf16_operands_restated(causal):
    """operands="bf16": features in fp32, rounded to bf16 with the values, products accumulated in fp32 (the
    bidirectional path also rounds its [m, Dv] summary). Restated with explicit casts and a T x T matrix."""
    from methods.sea.favor import relu_features

    d, dv, m = 8, 6, 9
    q, k, v = (rnd(B, H, T, n, seed=s, dtype=torch.float32) for s, n in ((21, d), (22, d), (23, dv)))
    w = orthogonal_random_features(m, d, torch.Generator().manual_seed(4))
    kernel = "relu" if causal else "softmax"
    got = favor_attention(q, k, v, w, kernel=kernel, causal=causal, backend="torch", operands="bf16", eps=0.0)
    if causal:
        fq, fk = relu_features(q, w), relu_features(k, w)
    else:
        fq, fk = softmax_features(q, w, is_query=True), softmax_features(k, w, is_query=False)
    r = lambda x: x.to(torch.bfloat16).double()                          # noqa: E731
    if causal:
        a = (r(fq) @ r(fk).transpose(-1, -2)) * torch.ones(T, T, dtype=torch.float64).tril()   # [B, H, T, T]
        want = (a @ r(v)) / a.sum(-1, keepdim=True)
    else:
        kv = (r(fk).transpose(-1, -2) @ r(v)).to(torch.bfloat16).double()                 # [B, H, m, dv]
        want = (r(fq) @ kv) / (fq.double() @ fk.double().sum(-2)[..., None])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=2e-2, atol=2e-3)
    fp32 = favor_attention(q, k, v, w, kernel=kernel, causal=causal, backend="torch", eps=0.0)
    assert not torch.equal(got, fp32)                                    # the option changes the arithmetic
    with pytest.raises(ValueError, match="operands"):
        favor_attention(q, k, v, w, kernel=kernel, causal=causal, operands="fp8")


@pytest.mark.parametrize("causal", [False, True])
def test_estimator_bf16_performer_stays_close_to_fp32(causal):
    K = 64 if causal else 128
    kw = dict(d=D, H=H, K=K, causal=causal, nbf=8.0 if causal else 1.0, max_len=64, seed=0)
    e32, e16 = Estimator(**kw), Estimator(**kw, performer_dtype="bf16")
    q, k, v = (rnd(B, H, T, D, seed=s, dtype=torch.float32) for s in (1, 2, 3))
    lg32, _, _ = e32(q, k, v, valid=None)
    lg16, _, _ = e16(q, k, v, valid=None)
    rel = ((lg16 - lg32).norm() / lg32.norm()).item()
    assert 0 < rel < 2e-2, rel


def test_favor_bf16_operands_triton_kernel_matches_torch_path():
    d, dv, m = 8, 16, 9
    q, k, v = (rnd(1, 2, 40, n, seed=s, dtype=torch.float32) for s, n in ((31, d), (32, d), (33, dv)))
    w = orthogonal_random_features(m, d, torch.Generator().manual_seed(4))
    kw = dict(kernel="relu", causal=True, operands="bf16")
    got = favor_attention(q, k, v, w, backend="triton", **kw)            # bf16 dots, fp32 outputs
    want = favor_attention(q, k, v, w, backend="torch", **kw)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=3e-2, atol=3e-2)


def test_row_buckets_select_what_one_full_ranking_selects():
    """Ranking rows in ranges with small caps (causal budgets fall like 1/t) selects exactly what a single
    top-k over all candidates selects (random scores: no ties)."""
    from methods.sea.interp import cell_bounds, row_lengths
    from methods.sea.topk import _rank_select, _rank_select_rows, budgets, row_buckets

    H_, K_, k_ = 4, 16, 4
    for mode, T_ in (("causal_per_batch", 300), ("per_query", 300)):
        bk = row_buckets(mode, H=H_, T=T_, K=K_, k=k_, causal=True, min_rows=8)
        assert len(bk) >= 3 and bk[0][0] == 0 and bk[-1][1] == T_
        assert all(a[1] == b[0] and a[2] >= b[2] for a, b in zip(bk, bk[1:]))     # contiguous, caps falling
        L = row_lengths(1, T_, causal=True, valid=None, device="cpu")
        n = budgets(mode, L, k=k_, K=K_, H=H_)                           # [1, T]
        lo, hi = cell_bounds(L, K_)                                      # [1, T, K]
        G = H_ * K_ if mode == "causal_per_batch" else K_
        eligible = (hi > lo).repeat(1, 1, G // K_)                       # [1, T, G]
        scores = torch.rand(1, T_, G, generator=torch.Generator().manual_seed(8)).masked_fill(~eligible, -math.inf)
        assert all(int(n[0, s:e].max()) <= cap for s, e, cap in bk)
        assert torch.equal(_rank_select_rows(scores, n, bk), _rank_select(scores, n, G))
    # the default buckets of a long causal SEA call: a full sort only for the first rows
    bk = row_buckets("causal_per_batch", H=16, T=65536, K=64, k=64, causal=True)
    assert bk[0][2] == 1024 and bk[0][1] < 4096 and bk[-1][2] == 1


def test_select_topk_with_default_buckets_matches_one_ranking(monkeypatch):
    from methods.sea import topk
    from methods.sea.interp import cell_bounds, row_lengths
    from methods.sea.topk import _rank_select, budgets, row_buckets

    monkeypatch.setattr(topk, "BUCKETS_FROM_T", 0)                      # ranges at this short T too

    H_, T_, K_, k_ = 16, 3100, 64, 64
    assert len(row_buckets("causal_per_batch", H=H_, T=T_, K=K_, k=k_, causal=True)) == 2
    probs = torch.rand(1, H_, T_, K_, generator=torch.Generator().manual_seed(9))   # [B, H, T, K]
    got = select_topk(probs, mode="causal_per_batch", k=k_, causal=True)
    L = row_lengths(1, T_, causal=True, valid=None, device="cpu")
    lo, hi = cell_bounds(L, K_)
    flat = probs.masked_fill(~(hi > lo)[:, None], -math.inf).permute(0, 2, 1, 3).reshape(1, T_, H_ * K_)
    want = _rank_select(flat, budgets("causal_per_batch", L, k=k_, K=K_, H=H_), H_ * K_)
    assert torch.equal(got, want.view(1, T_, H_, K_).permute(0, 2, 1, 3))


def test_detached_scaler_input_keeps_scaler_gradients_out_of_the_encoder():
    kw = dict(d=D, H=H, K=64, causal=True, nbf=8.0, max_len=64, seed=0)
    shared, detached = Estimator(**kw), Estimator(**kw, scaler_input="detached")
    q, k, v = (rnd(B, H, T, D, seed=s, dtype=torch.float32) for s in (1, 2, 3))
    out_s, out_d = shared(q, k, v, valid=None), detached(q, k, v, valid=None)
    for a, b in zip(out_s, out_d):
        assert torch.equal(a, b)                                         # same values
    for est, (_, sp, sm) in ((shared, out_s), (detached, out_d)):
        (sp.sum() + sm.sum()).backward()
    enc = lambda e: sum(float(p.grad.abs().sum()) for p in e.enc.parameters() if p.grad is not None)   # noqa: E731
    assert enc(shared) > 0 and enc(detached) == 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in detached.scaler.parameters())
    with pytest.raises(ValueError, match="scaler input"):
        Estimator(**kw, scaler_input="frozen")
