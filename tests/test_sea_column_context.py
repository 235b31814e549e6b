"""kernels/sea_column_context.py: SEA's bidirectional average context from the block scores (Triton under
TRITON_INTERPRET=1 on CPU, tests/conftest.py) against a float64 statement of the same formula and against the
layer's tensor-op form; chunked programs, partial steps, strided and 16-bit values, repeated calls (the tickets go
back to 0), refusals."""
import pytest
import torch

import kernels.sea_column_context as cc


def _statement(scores, v):
    """float64: colmean_i = (sum_j S[j, i] / T) / W, C_avg = sum_i colmean_i sum_{t in cell i} v[t]."""
    B, H, NB, K = scores.shape
    T, D = v.shape[2], v.shape[3]
    W = T // K
    colmean = scores.double().sum(2) / T / W                            # [B, H, K]
    cells = v.double().reshape(B, H, K, W, D).sum(3)                    # [B, H, K, D]
    scale = (colmean.abs()[..., None] * v.double().abs().reshape(B, H, K, W, D).sum(3)).sum(2)   # sum |terms|
    return (colmean[..., None] * cells).sum(2)[:, :, None], scale[:, :, None]


@pytest.mark.parametrize("B,H,NB,K,W,D,dtype,target,block_t,block_nb", [
    (1, 2, 5, 8, 7, 16, torch.float32, 4, 4, 2),        # 2 cells a program, partial key and block-row steps
    (2, 3, 4, 6, 16, 24, torch.bfloat16, 5, 16, 128),   # cells not dividing K: a short last chunk; D not 2^n
    (1, 16, 16, 16, 4, 64, torch.float16, 1024, 64, 128),  # one cell a program
    (1, 1, 3, 1, 33, 8, torch.float32, 1, 8, 2),        # K = 1: one chunk
])
def test_context_equals_the_float64_statement(monkeypatch, B, H, NB, K, W, D, dtype, target, block_t, block_nb):
    monkeypatch.setattr(cc, "TARGET_PROGRAMS", target)
    monkeypatch.setattr(cc, "BLOCK_T", block_t)
    monkeypatch.setattr(cc, "BLOCK_NB", block_nb)
    g = torch.Generator().manual_seed(B + H + NB + K + W + D)
    T = K * W
    scores = torch.rand(B, H, NB, K, generator=g) * 3
    v = torch.randn(B, T, H, D, generator=g).to(dtype).transpose(1, 2)   # a strided view, as SEA's v
    want, scale = _statement(scores, v)
    for _ in range(2):                                                   # the second call: tickets back at 0
        got = cc.column_context(scores, v)
        assert got.dtype == torch.float32 and got.shape == (B, H, 1, D)
        assert ((got.double() - want).abs() <= 1e-6 * scale + 1e-12).all()
    other = scores.clone()
    other[..., 0] += 1.0                                                 # cell 0's mass moves the context
    assert not torch.allclose(cc.column_context(other, v), got)


def test_context_matches_the_layers_tensor_ops():
    """The same quantity as average_context's tensor ops on A_hat's column sums (K dividing T, no padding mask):
    equal within fp32 rounding of sums over T terms."""
    from methods.base import Problem, get

    g = torch.Generator().manual_seed(4)
    B, H, T, D, K, R = 1, 4, 256, 16, 16, 32
    M = get("sea")
    lay = M.build(M.resolve_config({"k": "4", "K": str(K)}), Problem(B, H, H, T, D, dtype="fp32", causal=False,
                                                                      device="cpu"), seed=1)
    scores = torch.rand(B, H, T // R, K, generator=g)
    v = torch.randn(B, H, T, D, generator=g)
    want, _ = lay.average_context(None, v, causal=False, valid=None, col_sums=scores.sum(2), weights=False)
    got = cc.column_context(scores, v)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_context_refuses_bad_input():
    s = torch.rand(1, 2, 4, 8)
    v = torch.randn(1, 2, 32, 16)
    with pytest.raises(ValueError, match="float32"):
        cc.column_context(s.double(), v)
    with pytest.raises(ValueError, match="multiple of K=8"):
        cc.column_context(s, v[:, :, :30])
    with pytest.raises(ValueError, match="differ in B, H"):
        cc.column_context(s, v[:, :1])
    with pytest.raises(ValueError, match="floating"):
        cc.column_context(s, v.long())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_context_on_the_gpu_at_sea_widths():
    """At SEA's 8k widths (B=1, H=16, NB=128 blocks of 64 rows, K=128, bf16 v as a strided view): the float64
    statement within fp32 rounding, the same bits on a second call (chunk order, no atomics in the sums)."""
    g = torch.Generator(device="cuda").manual_seed(5)
    scores = torch.rand(1, 16, 128, 128, device="cuda", generator=g) / 128
    v = torch.randn(1, 8192, 16, 64, device="cuda", generator=g).to(torch.bfloat16).transpose(1, 2)
    want, scale = _statement(scores, v)
    got = cc.column_context(scores, v)
    assert ((got.double() - want).abs() <= 1e-6 * scale + 1e-12).all()
    assert torch.equal(cc.column_context(scores, v), got)
