"""SEA's fast paths: chunked cumulative mean (mix stage), reduced-precision decoder, no host sync in the
no-padding forward (CUDA-graph capturable)."""
from __future__ import annotations

import pytest
import torch

from kernels.scan import chunked_rev_cumsum
from methods.sea.layer import causal_mean, chunked_cumsum

B, H, T, D = 2, 4, 37, 16


def old_causal_mean(v, valid):
    """The previous formula (a plain cumsum along T), evaluated in float64."""
    v = v.double()
    if valid is not None:
        w = valid[:, None, :, None].double()                             # [B, 1, T, 1]
        return (v * w).cumsum(2) / w.cumsum(2).clamp(min=1)
    n = torch.arange(1, v.shape[2] + 1, dtype=torch.float64)
    return v.cumsum(2) / n[:, None]


@pytest.mark.parametrize("T_, chunk", [(1, 4), (37, 4), (37, 64), (64, 8), (300, 4), (1000, 16)])
def test_chunked_cumsum_equals_cumsum_float64(T_, chunk):
    x = torch.randn(B, H, T_, D, dtype=torch.float64, generator=torch.Generator().manual_seed(T_))
    got = chunked_cumsum(x, chunk)
    assert got.shape == (B, H, T_, D)
    torch.testing.assert_close(got, x.cumsum(2), rtol=1e-12, atol=1e-12)
    rev = chunked_rev_cumsum(x, chunk)                                   # suffix sums (linear attention's grad)
    torch.testing.assert_close(rev, x.flip(2).cumsum(2).flip(2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padded", [False, True])
def test_causal_mean_fp32_matches_old_formula_in_float64(padded):
    g = torch.Generator().manual_seed(3)
    Tl = 700                                                             # several chunks of 64, 2 levels
    v = torch.randn(B, H, Tl, D, generator=g) + 0.5                      # non-zero mean: the sums grow
    valid = (torch.rand(B, Tl, generator=g) > 0.3) if padded else None
    want = old_causal_mean(v, valid)
    got = causal_mean(v.float(), valid)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)   # fp32 rounding only
    got64 = causal_mean(v.double(), valid)                              # same algorithm in float64: exact
    torch.testing.assert_close(got64, want, rtol=1e-12, atol=1e-12)


def build_sea(causal, **opts):
    from methods.base import Problem, get

    M = get("sea")
    cfg = M.resolve_config({key: str(val) for key, val in dict(dict(k=3, K=16, backend="torch"), **opts).items()})
    return M.build(cfg, Problem(B, H, H // 2, T, D, dtype="fp32", causal=causal, device="cpu"), seed=5)


def qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, D, generator=g), torch.randn(B, H // 2, T, D, generator=g),
            torch.randn(B, H // 2, T, D, generator=g))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dt", ["bf16", "fp16"])
def test_reduced_precision_decoder_close_to_fp32(causal, dt):
    ref, low = build_sea(causal), build_sea(causal, estimator_dtype=dt)
    low.load_state_dict(ref.state_dict())
    q, k, v = qkv(1)
    with torch.no_grad():
        ref(q, k, v, causal=causal)
        out = low(q, k, v, causal=causal)
    a, b = ref.last_aux["logits"], low.last_aux["logits"]               # [B, H, T, K]
    assert b.dtype == torch.float32 and out.dtype == q.dtype
    rel = float((b.double() - a.double()).norm() / a.double().norm())
    assert 0 < rel < 2e-2, rel                                           # > 0: the decoder really ran in dt
    assert f"estimator_dtype={dt}" in low.impl and "estimator_dtype=fp32" in ref.impl
    # the scalers come from the fp32 encoder and are unchanged
    torch.testing.assert_close(low.last_aux["s_prob"], ref.last_aux["s_prob"])


def test_reduced_precision_decoder_has_gradients():
    m = build_sea(True, estimator_dtype="bf16")
    q, k, v = qkv(2)
    m(q, k, v, causal=True)
    m.last_aux["logits"].square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.estimator.dec.parameters())


@pytest.mark.parametrize("kernel", ["relu", "softmax"])
def test_favor_causal_kernel_path_matches_torch_path(kernel):
    from methods.sea.favor import favor_attention, orthogonal_random_features

    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(2, 3, 70, 8, generator=g), torch.randn(2, 3, 70, 8, generator=g)
    v = torch.randn(2, 3, 70, 12, generator=g)
    valid = torch.rand(2, 70, generator=g) > 0.2
    proj = orthogonal_random_features(6, 8, g)
    want = favor_attention(q, k, v, proj, kernel=kernel, causal=True, valid=valid, backend="torch")
    got = favor_attention(q, k, v, proj, kernel=kernel, causal=True, valid=valid, backend="triton")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk, block_e, warps", [(64, 64, 4), (16, 16, 2), (32, 128, 8)])
def test_favor_causal_kernel_tilings_match_torch_path_with_gradients(monkeypatch, chunk, block_e, warps):
    """favor.LINEAR_CHUNK / LINEAR_BLOCK_E / LINEAR_WARPS (the causal linear-attention kernel's tiling): output and
    gradients of q, k, v equal the PyTorch path's for several chunks and value blocks (40 value columns)."""
    import methods.sea.favor as favor

    monkeypatch.setattr(favor, "LINEAR_CHUNK", chunk)
    monkeypatch.setattr(favor, "LINEAR_BLOCK_E", block_e)
    monkeypatch.setattr(favor, "LINEAR_WARPS", warps)
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(1, 2, 70, 8, generator=g), torch.randn(1, 2, 70, 8, generator=g)
    v = torch.randn(1, 2, 70, 40, generator=g)
    proj = favor.orthogonal_random_features(6, 8, g)
    dout = torch.randn(1, 2, 70, 40, generator=g)
    res = []
    for backend in ("torch", "triton"):
        x = [t.clone().requires_grad_() for t in (q, k, v)]
        out = favor.favor_attention(*x, proj, kernel="relu", causal=True, backend=backend)
        res.append((out.detach(), torch.autograd.grad(out, x, dout)))
    (want, gw), (got, gg) = res
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for a, b in zip(gg, gw):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


class HostSync(AssertionError):
    pass


def _raise(name):
    def f(*a, **kw):
        raise HostSync(f"host sync: {name} called during the no-padding forward")
    return f


@pytest.mark.parametrize("causal", [True, False])
def test_no_padding_forward_has_no_host_sync(monkeypatch, causal):
    """What CUDA-graph capture needs, checked on CPU: with no padding mask and input validation off, the
    forward reads no device value on the host (.item, bool/int/float of a tensor, tolist, data-dependent
    nonzero / repeat_interleave / masked_select). The sparse kernel's own argument check reads row_ptr[-1]
    only for CPU tensors (documented there; skipped on CUDA), so it runs with the guard lifted. The sparse
    backend is the Triton row kernel (what CUDA runs; sea.backend=torch gathers with data-dependent sizes and
    is not capturable)."""
    import kernels.sea_sparse_attention as ssa

    m = build_sea(causal, backend="triton", K=8, k=2)
    if causal:
        m.estimator.performer_backend = "triton"                         # the CUDA path of the Performer
    q, k, v = qkv(6)
    with torch.no_grad():
        want = m(q, k, v, causal=causal)                                 # eager, validated; warms the caches
    m.validate_inputs = False
    guards = {(torch.Tensor, n): _raise(n) for n in ("item", "__bool__", "__int__", "__float__", "__index__",
                                                     "tolist", "nonzero", "masked_select", "numpy")}
    guards.update({(torch, n): _raise(n) for n in ("nonzero", "masked_select", "unique")})
    real_ri = torch.repeat_interleave

    def repeat_interleave(x, repeats=None, *a, output_size=None, **kw):
        if isinstance(repeats, torch.Tensor) and output_size is None:
            raise HostSync("repeat_interleave with tensor repeats and no output_size")
        return real_ri(x, repeats, *a, output_size=output_size, **kw)

    real_check = ssa._check

    def check_unguarded(q_, k_, v_, row_ptr, col):
        assert col.device.type == "cpu"                                  # the read it does is CPU-only
        with monkeypatch.context() as mp:
            for (obj, n) in guards:
                mp.setattr(obj, n, originals[(obj, n)])
            real_check(q_, k_, v_, row_ptr, col)

    originals = {(obj, n): getattr(obj, n) for (obj, n) in guards}
    with monkeypatch.context() as mp:
        mp.setattr(ssa, "_check", check_unguarded)
        for (obj, n), f in guards.items():
            mp.setattr(obj, n, f)
        mp.setattr(torch, "repeat_interleave", repeat_interleave)
        with torch.no_grad():
            got = m(q, k, v, causal=causal)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # the guard is live: the validated call (and a padding mask) do read the device (the finite check's flags,
    # by tolist at the end of the forward)
    m.validate_inputs = True
    with monkeypatch.context() as mp:
        for n in ("__bool__", "tolist"):
            mp.setattr(torch.Tensor, n, _raise(n))
        with pytest.raises(HostSync):
            m(q, k, v, causal=causal)


def test_bench_script_cpu_smoke_rows_have_estimator_dtype_and_parts(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import bench_sea

    out = tmp_path / "rows.jsonl"
    rc = bench_sea.main(["--cpu-smoke", "--T", "48", "--dirs", "causal", "--variants", "torch", "--H", "2",
                         "--D", "16", "--estimator-dtypes", "fp32,bf16", "--args", "k=4,K=16", "--json", str(out),
                         "--before", ""])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rc == 0 and [r["estimator_dtype"] for r in rows] == ["fp32", "bf16"]
    for r in rows:
        assert "error" not in r, r
        assert all(f"est_{p}_ms" in r for p in bench_sea.EST_PARTS) and r["total_ms"] > 0
        assert f"estimator_dtype={r['estimator_dtype']}" in r["impl"]
