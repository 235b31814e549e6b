"""sea.backend=triton_rows: the row-block sparse forward (kernels/sea_sparse_rows.py) inside the SEA layer, whole and in
query blocks, against the row kernel (backend=triton) of the same layer; the row kernel when a gradient is needed,
said in impl. Runs under TRITON_INTERPRET=1 on CPU (tests/conftest.py)."""
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


def test_gradients_take_the_row_kernel_and_say_so():
    M, cfg, prob = build(backend="triton_rows")
    mod = M.build(cfg, prob, seed=3)
    q, k, v = (x.requires_grad_() for x in qkv(2))
    mod(q, k, v, causal=True).sum().backward()
    assert "sparse=triton (rows kernel is forward-only)" in mod.impl
    assert q.grad is not None and torch.isfinite(q.grad).all()
