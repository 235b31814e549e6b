"""SEA sparse attention kernel (Triton, under TRITON_INTERPRET=1 on CPU) vs the dense-masked reference."""
import math

import pytest
import torch

import kernels.sea_sparse_attention as ssa
from kernels.sea_sparse_attention_ref import dense_mask_from_indices, sparse_attention_ref

B, H, HKV, T, D = 2, 4, 2, 37, 16


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(ssa, "POISON_OUTPUTS", True)


def random_lists(B, H, T, W, gen, causal=False):
    """Random per-row index lists: distinct keys, random count (0..W, some rows empty), -1 after count."""
    idx = torch.full((B, H, T, W), -1, dtype=torch.int32)
    count = torch.zeros(B, H, T, dtype=torch.int32)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                span = t + 1 if causal else T
                n = int(torch.randint(0, min(W, span) + 1, (1,), generator=gen))
                keys = torch.randperm(span, generator=gen)[:n]
                idx[b, h, t, :n] = keys.int()
                count[b, h, t] = n
    count[0, 0, 3] = 0
    idx[0, 0, 3] = -1                                   # an empty row: output must be 0
    return idx, count


def make(dtype=torch.float32, seed=0, W=20, causal=False, hkv=HKV):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=gen).to(dtype).requires_grad_()
    k = torch.randn(B, hkv, T, D, generator=gen).to(dtype).requires_grad_()
    v = torch.randn(B, hkv, T, D, generator=gen).to(dtype).requires_grad_()
    idx, count = random_lists(B, H, T, W, gen, causal)
    return q, k, v, idx, count


@pytest.mark.parametrize("hkv,W", [(HKV, 20), (H, 37)])
def test_triton_matches_dense_reference_outputs_and_grads(hkv, W):
    q, k, v, idx, count = make(hkv=hkv, W=W)
    scale = 0.3
    out = ssa.sparse_attention_triton(q, k, v, idx, count, scale)
    ref = sparse_attention_ref(q, k, v, idx, count, scale)               # float64
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
    q, k, v, idx, count = make(seed=1)
    out = torch.full_like(q, float("nan"))
    lse = torch.full((B, H, T), float("nan"))
    ssa._triton_forward(q.detach().contiguous(), k.detach().contiguous(), v.detach().contiguous(), idx, count, 0.25,
                        out=out, lse=lse)
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    # lse equals the log-sum-exp of the selected scores (rows with keys)
    kr = k.detach().repeat_interleave(H // HKV, 1)
    s = (q.detach() @ kr.transpose(-1, -2)) * 0.25
    mask = dense_mask_from_indices(idx, count, T)
    want = torch.logsumexp(s.masked_fill(~mask, float("-inf")), -1)
    live = count > 0
    torch.testing.assert_close(lse[live], want[live], atol=1e-5, rtol=1e-5)


def test_triton_half_precision():
    q, k, v, idx, count = make(dtype=torch.float16, seed=2)
    out = ssa.sparse_attention_triton(q, k, v, idx, count, 1 / math.sqrt(D))
    ref = sparse_attention_ref(q, k, v, idx, count, 1 / math.sqrt(D))
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), ref, atol=2e-3, rtol=2e-3)


def test_torch_gather_fallback_matches_reference():
    q, k, v, idx, count = make(seed=3, causal=True)
    out, ran = ssa.sea_sparse_attention(q, k, v, idx, count, 0.4, backend="torch")
    assert ran == "torch-gather"
    ref = sparse_attention_ref(q, k, v, idx, count, 0.4)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-5)
    g = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(6))
    got = torch.autograd.grad(out, (q, k, v), g)
    want = torch.autograd.grad(ref, (q, k, v), g.double())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b.double(), atol=5e-5, rtol=1e-4)


def test_auto_backend_names_what_ran():
    q, k, v, idx, count = make(seed=4)
    _, ran = ssa.sea_sparse_attention(q, k, v, idx, count)
    assert ran == ("triton" if ssa.triton_usable(q.device) else "torch-gather")
