"""kernels/finite_check.py: the non-finite flags kernel (Triton under TRITON_INTERPRET=1 on CPU, tests/conftest.py)
against torch.isfinite, on every floating dtype, with the bad value in the first, a middle and the last partial
block of several programs; float64 values beyond float32's range stay finite; the PyTorch form and the refusals."""
import pytest
import torch

import kernels.finite_check as fc


@pytest.fixture(autouse=True)
def _small_programs(monkeypatch):
    monkeypatch.setattr(fc, "BLOCK", 64)
    monkeypatch.setattr(fc, "ITERS", 2)                                  # 128 values per program


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_flags_match_isfinite(dtype, backend):
    g = torch.Generator().manual_seed(1)
    n = 1000                                                             # 8 programs, the last one partial
    x = (torch.randn(n, generator=g) * 50).to(dtype)
    if dtype == torch.float64:
        x[17] = 1e300                                                    # finite in float64, Inf in float32
    clean = [x, x[:0].clone(), x[:5].clone()]
    assert fc.nonfinite_flags(*clean, backend=backend).tolist() == [0, 0, 0]
    for bad in (float("nan"), float("inf"), float("-inf")):
        for where in (0, 129, 500, n - 1):
            y = x.clone()
            y[where] = bad
            got = fc.nonfinite_flags(x, y, x, backend=backend)
            assert got.dtype == torch.int32 and got.tolist() == [0, 1, 0], (bad, where)
            assert got.tolist() == [int(not torch.isfinite(t).all()) for t in (x, y, x)]


def test_three_tensors_of_different_sizes_and_dtypes_in_one_launch(monkeypatch):
    """Three contiguous tensors share one launch (_nonfinite3_kernel): each program range reads its own tensor, in
    its own dtype, and flags only that tensor; more tensors go in groups of three."""
    launches = []
    real = fc._nonfinite3_kernel

    class Spy:
        def __getitem__(self, grid):
            launches.append(grid)
            return real[grid]

    monkeypatch.setattr(fc, "_nonfinite3_kernel", Spy())
    g = torch.Generator().manual_seed(2)
    ts = [torch.randn(300, generator=g), torch.randn(7, 40, generator=g).to(torch.bfloat16),
          torch.randn(129, generator=g).to(torch.float16)]                 # 3 + 3 + 2 programs of 128 values
    assert fc.nonfinite_flags(*ts, backend="triton").tolist() == [0, 0, 0]
    assert launches == [(8,)]
    for i in range(3):
        for where in (0, ts[i].numel() - 1):
            bad = [t.clone() for t in ts]
            bad[i].view(-1)[where] = float("nan") if where else float("-inf")
            want = [int(j == i) for j in range(3)]
            assert fc.nonfinite_flags(*bad, backend="triton").tolist() == want, (i, where)
    # more tensors: groups of three and a rest, a view (PyTorch form) and an empty tensor skipped by the grouping
    launches.clear()
    x = torch.randn(6, 40, generator=g)
    bad_view = x.clone()
    bad_view[5, 39] = float("inf")
    more = [ts[0], bad_view.t(), torch.zeros(0), ts[1], ts[2], ts[0].clone(), ts[2].clone()]
    more[-1][3] = float("nan")
    assert fc.nonfinite_flags(*more).tolist() == [0, 1, 0, 0, 0, 0, 1]
    assert launches == [(3 + 3 + 2,), (3 + 2,)]                           # [0, 3, 4] then [5, 6]
    launches.clear()
    monkeypatch.setattr(fc, "ONE_LAUNCH", False)                        # the A/B switch: one launch a tensor
    assert fc.nonfinite_flags(*ts, backend="triton").tolist() == [0, 0, 0]
    assert launches == [(3,), (3,), (2,)]


def test_auto_falls_back_for_non_contiguous_and_refuses_bad_input():
    x = torch.randn(6, 40)
    y = x.clone()
    y[3, 7] = float("nan")
    assert fc.nonfinite_flags(x.t(), y.t(), x).tolist() == [0, 1, 0]      # views: the PyTorch form
    with pytest.raises(ValueError, match="not contiguous"):
        fc.nonfinite_flags(x.t(), backend="triton")
    with pytest.raises(ValueError, match="not floating"):
        fc.nonfinite_flags(x, torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least one"):
        fc.nonfinite_flags()
    with pytest.raises(ValueError, match="backend='cuda'"):
        fc.nonfinite_flags(x, backend="cuda")



@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_copy_to_fills_each_destination_with_its_tensor_and_flags_the_same(backend):
    """copy_to: every destination equals its tensor bit for bit (NaN payloads and signed zeros included, so a
    copy through float32 or a skipped partial block would show), across program boundaries and dtypes, and the
    flags are those of the plain call; a non-contiguous destination takes the PyTorch form; shapes or dtypes that
    differ and a wrong count are refused."""
    g = torch.Generator().manual_seed(3)
    ts = [torch.randn(300, generator=g), (torch.randn(7, 40, generator=g) * 1e3).to(torch.bfloat16),
          torch.randn(129, generator=g).to(torch.float16)]
    ts[0][5], ts[0][299] = -0.0, float("inf")
    ts[1].view(-1)[130] = float("nan")
    ts[2][128] = -0.0
    ys = [torch.full_like(t, 7.0) for t in ts]
    flags = fc.nonfinite_flags(*ts, backend=backend, copy_to=ys)
    assert flags.tolist() == fc.nonfinite_flags(*ts, backend=backend).tolist() == [1, 1, 0]
    for t, y in zip(ts, ys):
        assert torch.equal(t.view(-1).view(torch.int16 if t.element_size() == 2 else torch.int32),
                           y.view(-1).view(torch.int16 if y.element_size() == 2 else torch.int32))
    strided = torch.zeros(40, 7).t()                                     # a view: copied by PyTorch, same values
    x = torch.randn(7, 40, generator=g)
    assert fc.nonfinite_flags(x, copy_to=[strided]).tolist() == [0] and torch.equal(strided, x)
    with pytest.raises(ValueError, match="destination 0 must be"):
        fc.nonfinite_flags(ts[0], copy_to=[torch.zeros(300, dtype=torch.float64)])
    with pytest.raises(ValueError, match="destination 1 must be"):
        fc.nonfinite_flags(ts[0], ts[1], copy_to=[ys[0], torch.zeros(7, 41, dtype=torch.bfloat16)])
    with pytest.raises(ValueError, match="2 destinations for 1"):
        fc.nonfinite_flags(ts[0], copy_to=ys[:2])

@pytest.mark.gpu
def test_gpu_flags_and_time():
    """On CUDA at SEA's 32k size (bf16 [1, 16, 32768, 64] x 3): same flags as isfinite; time against aminmax
    (printed)."""
    from harness.measure import time_cuda

    fc.BLOCK, fc.ITERS = 4096, 8
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 16, 32768, 64, device="cuda", generator=g).to(torch.bfloat16) for _ in range(3))
    assert fc.nonfinite_flags(q, k, v).tolist() == [0, 0, 0]
    k2 = k.clone()
    k2.view(-1)[-1] = float("inf")
    assert fc.nonfinite_flags(q, k2, v).tolist() == [0, 1, 0]
    t_kernel = time_cuda(lambda: fc.nonfinite_flags(q, k, v), rep_ms=50).median_ms
    t_torch = time_cuda(lambda: fc.nonfinite_flags(q, k, v, backend="torch"), rep_ms=50).median_ms
    print(f"\nnonfinite flags of q, k, v at 32k bf16: kernel {t_kernel:.4f} ms, aminmax {t_torch:.4f} ms")
