"""sea.backend=triton_rows: the row-block sparse forward (kernels/sea_sparse_rows.py) inside the SEA layer, whole and in
query blocks, against the row kernel (backend=triton) of the same layer; with gradients (its backward,
kernels/sea_sparse_rows_bwd.py) in both directions. Runs under TRITON_INTERPRET=1 on CPU (tests/conftest.py)."""
from __future__ import annotations

import pytest
import torch

import kernels.sea_sparse_rows as sr
from tests.helpers import gaussian_qkv, sea_case

B, H, Hkv, T, D = 2, 4, 2, 40, 16


@pytest.fixture(autouse=True)
def _small_steps(monkeypatch):
    monkeypatch.setattr(sr, "POISON_OUTPUTS", True)
    monkeypatch.setattr(sr, "ENTRIES_PER_STEP", 16)


def build(**opts):
    return sea_case(B, H, Hkv, T, D, **dict(dict(max_len=128), **opts))


def qkv(seed=0):
    return gaussian_qkv(B, H, Hkv, T, D, seed=seed, dtype=torch.float32)


@pytest.mark.parametrize("query_chunk", [0, 16])
def test_layer_rows_kernel_matches_row_kernel(query_chunk):
    M, cfg, prob = build(backend="triton_rows", query_chunk=query_chunk)
    assert M.supports(prob, cfg) == []
    got_mod = M.build(cfg, prob, seed=3)
    M2, cfg2, _ = build(backend="triton", query_chunk=query_chunk)
    want_mod = M2.build(cfg2, prob, seed=3)
    want_mod.load_state_dict(got_mod.state_dict())
    q, k, v = qkv(1)
    with torch.no_grad():
        got = got_mod(q, k, v, causal=True)
        want = want_mod(q, k, v, causal=True)
    assert "sparse=triton_rows" in got_mod.impl and "sparse=triton]" in want_mod.impl
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal, sparse_backward", [(True, "auto"), (False, "auto"), (True, "row"),
                                                     (True, "keys_rows")])
def test_layer_gradients_on_rows_kernel_match_row_kernel(monkeypatch, causal, sparse_backward):
    """With gradients the rows kernel runs with its backward (kernels/sea_sparse_rows_bwd.py, the one the
    sparse_backward option names): the layer's output and the gradients of q, k, v and the estimator's parameters
    equal the row kernel's up to float summation order."""
    import kernels.sea_sparse_rows_bwd as srb

    ran = []
    real = srb.rows_backward
    monkeypatch.setattr(srb, "rows_backward", lambda *a, **kw: (ran.append(kw.get("backward")), real(*a, **kw))[1])
    M, cfg, prob = sea_case(B, H, Hkv, T, D, causal=causal, backend="triton_rows", max_len=128,
                            sparse_backward=sparse_backward)
    got_mod = M.build(cfg, prob, seed=3)
    M2, cfg2, _ = sea_case(B, H, Hkv, T, D, causal=causal, backend="triton", max_len=128)
    want_mod = M2.build(cfg2, prob, seed=3)
    want_mod.load_state_dict(got_mod.state_dict())
    g = torch.Generator().manual_seed(9)
    dout = torch.randn(B, H, T, D, generator=g)
    grads = []
    for mod in (got_mod, want_mod):
        x = [t.requires_grad_() for t in qkv(2)]
        params = [p for p in mod.parameters() if p.requires_grad]
        out = mod(x[0], x[1], x[2], causal=causal)
        grads.append((out.detach(), torch.autograd.grad(out, x + params, dout, allow_unused=True)))
    assert "sparse=triton_rows" in got_mod.impl and "sparse=triton]" in want_mod.impl
    assert ran == [None if sparse_backward == "auto" else sparse_backward]
    (out, got), (want_out, want) = grads
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    assert sum(a is not None for a in got) >= 4                          # q, k, v and some estimator parameters
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_gpu_auto_backend_with_gradients_matches_row_kernel():
    """On CUDA, backend=auto with gradients runs the rows forward and the row kernel's backward (AUTO_ROWS_GRAD):
    output and q / k / v gradients equal backend=triton's (the row kernel both ways) up to summation order; bf16."""
    from methods.base import Problem, get

    Tg, Hg, Dg = 2048, 4, 64
    M = get("sea")
    prob = Problem(1, Hg, Hg, Tg, Dg, dtype="bf16", causal=True, device="cuda", backward=True)
    mods = []
    for backend in ("auto", "triton"):
        cfg = M.resolve_config({"backend": backend, "max_len": str(Tg)})
        assert M.supports(prob, cfg) == []
        mods.append(M.build(cfg, prob, seed=3).cuda())
    mods[1].load_state_dict(mods[0].state_dict())
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, dout = (torch.randn(1, Hg, Tg, Dg, device="cuda", generator=g).to(torch.bfloat16) for _ in range(4))
    res = []
    for mod in mods:
        x = [t.clone().requires_grad_() for t in (q, k, v)]
        out = mod(x[0], x[1], x[2], causal=True)
        res.append((out.detach(), torch.autograd.grad(out, x, dout)))
    assert "sparse=triton_rows" in mods[0].impl and "sparse=triton]" in mods[1].impl
    (out_a, g_a), (out_b, g_b) = res
    assert float((out_a.float() - out_b.float()).abs().max()) <= 2 ** -7 * float(out_b.float().abs().max())
    for name, a, b in zip("qkv", g_a, g_b):
        assert torch.isfinite(a).all(), name
        assert float((a.float() - b.float()).abs().max()) <= 2 ** -7 * float(b.float().abs().max()) + 1e-6, name


def test_sparse_pieces_option_reaches_the_rows_kernels(monkeypatch):
    """sea.sparse_pieces: the rows kernels get it in forward-only and gradient calls (sparse_rows_forward's and
    rows_backward's pieces; fp32 inputs get 3), impl names it, and the layer's bf16 output stays within the rounding
    of P to bf16 of the fp32-accurate one (kernel-level bounds: tests/test_sea_sparse_rows_bwd.py); bad values are
    refused."""
    import kernels.sea_sparse_rows_bwd as srb
    from methods.base import MethodConfigError

    seen = []
    real_fwd, real_bwd = sr.sparse_rows_forward, srb.rows_backward
    monkeypatch.setattr(sr, "sparse_rows_forward", lambda *a, **kw: (seen.append(("fwd", kw.get("pieces"))),
                                                                     real_fwd(*a, **kw))[1])
    monkeypatch.setattr(srb, "sparse_rows_forward", sr.sparse_rows_forward)
    monkeypatch.setattr(srb, "rows_backward", lambda *a, **kw: (seen.append(("bwd", kw.get("pieces"))),
                                                                real_bwd(*a, **kw))[1])
    outs = {}
    for pieces in (1, 3):
        M, cfg, prob = build(backend="triton_rows", sparse_pieces=str(pieces))
        mod = M.build(cfg, prob, seed=3)
        q, k, v = (t.to(torch.bfloat16) for t in qkv(4))
        with torch.no_grad():
            outs[pieces] = mod(q, k, v, causal=True).float()
        assert ("/pieces=1" in mod.impl) == (pieces == 1), mod.impl
        x = [t.clone().requires_grad_() for t in (q, k, v)]
        torch.autograd.grad(mod(*x, causal=True), x, torch.ones_like(q))
    assert seen == [("fwd", 1), ("fwd", 1), ("bwd", 1), ("fwd", 3), ("fwd", 3), ("bwd", 3)]
    assert not torch.equal(outs[1], outs[3])
    assert float((outs[1] - outs[3]).abs().max()) <= 2 ** -6 * float(outs[3].abs().max())
    seen.clear()                                                         # fp32 inputs: fp32 products, impl says so
    M, cfg, prob = build(backend="triton_rows", sparse_pieces="1")
    mod = M.build(cfg, prob, seed=3)
    with torch.no_grad():
        mod(*qkv(4), causal=True)
    assert seen == [("fwd", 3)] and "/pieces" not in mod.impl, (seen, mod.impl)
    with pytest.raises(MethodConfigError, match="sparse_pieces=4"):
        build(backend="triton_rows", sparse_pieces="4")
    from methods.sea import SPARSE_BACKWARDS, SPARSE_PIECES              # the options' values are the kernels'

    assert SPARSE_PIECES == sr.PIECES_CHOICES and set(SPARSE_BACKWARDS) == set(srb.BACKWARDS)
