"""kernels/sea_interp.py row_key_counts / csr_columns_cells (cell edges computed in-kernel from t) against the
tensor-op reference of methods/sea/interp.py: the per-row key counts equal _row_key_counts on the cells of
cell_bounds, and the whole _mask_to_csr_nosync(..., backend="triton") equals backend="torch" (row pointers and the
capacity-long columns, filler included). Masks are random (cells of width 0 selected too: T < K rows), contiguous or
the permuted view causal_per_batch selects; causal and bidirectional, row0 > 0 (query blocks), partial time blocks
and partial (b, h) groups of the counts kernel."""
from __future__ import annotations

import pytest
import torch

from methods.sea.interp import _mask_to_csr_nosync, _row_key_counts, cell_bounds, mask_to_csr, row_lengths


def _n_cell(T: int, K: int, k: int, causal: bool, row0: int) -> torch.Tensor:
    """int64 [T, K]: keys each cell of row t gives when selected, min(width, k) (width 0 kept)."""
    L = row_lengths(1, T, causal=causal, valid=None, device="cpu", row0=row0)   # [1, T]
    lo, hi = cell_bounds(L, K)                                           # [1, T, K]
    return (hi - lo)[0].clamp(max=k)                                     # [T, K]


def _mask(B: int, H: int, T: int, K: int, p: float, seed: int, permuted: bool) -> torch.Tensor:
    """Random bool [B, H, T, K]; permuted: a view of a [B, T, H, K] tensor (strides as causal_per_batch's)."""
    g = torch.Generator().manual_seed(seed)
    if permuted:
        return (torch.rand(B, T, H, K, generator=g) < p).permute(0, 2, 1, 3)   # [B, H, T, K], non-contiguous
    return torch.rand(B, H, T, K, generator=g) < p                       # [B, H, T, K]


@pytest.fixture
def si(monkeypatch):
    import kernels.sea_interp as si

    monkeypatch.setattr(si, "POISON_OUTPUTS", True)                        # a skipped write keeps -123456789
    return si


# B = 2, H = 3: 6 (b, h) rows of the counts kernel's groups (COUNT_HEADS = 4: a partial group), T = 37 with
# COUNT_ROWS = 8: a partial time block. Causal T = 37, K = 16: rows t < 15 have cells of width 0.
CASES = [  # causal, row0, T, K, k
    (True, 0, 37, 8, 3),
    (True, 0, 37, 16, 1),
    (True, 5, 37, 16, 64),       # query block: rows 5..41, widths 0 at t + 6 < 16
    (True, 300, 20, 8, 3),      # far into the sequence: all cells wide, k binds
    (False, 0, 37, 8, 64),
    (False, 0, 11, 16, 3),      # bidirectional T < K: 5 of the 16 cells of every row are empty
    (True, 40_000_000, 5, 64, 64),   # 2 c L passes 2^31: the cell edges need int64 (keys still int32)
]


@pytest.mark.parametrize("causal,row0,T,K,k", CASES)
@pytest.mark.parametrize("permuted", [False, True])
def test_counts_kernel_matches_row_key_counts(si, monkeypatch, causal, row0, T, K, k, permuted):
    monkeypatch.setattr(si, "COUNT_ROWS", 8)
    monkeypatch.setattr(si, "COUNT_HEADS", 4)
    B, H = 2, 3
    mask = _mask(B, H, T, K, 0.4, seed=T + K + k + row0, permuted=permuted)   # [B, H, T, K]
    n_cell = _n_cell(T, K, k, causal, row0)                              # [T, K]
    want = _row_key_counts(mask, n_cell, k)                              # [B, H, T] int64
    assert bool((mask & (n_cell == 0)).any()) == bool((n_cell == 0).any())   # width-0 cells are selected here
    got = si.row_key_counts(mask, k, causal=causal, row0=row0)           # [B*H*T]
    assert got.dtype == torch.int64 and got.shape == (B * H * T,)
    assert int(want.sum()) > 0 and torch.equal(got, want.reshape(-1))
    rp = si.row_key_counts(mask, k, causal=causal, row0=row0, row_ptr=True)   # [B*H*T + 1]
    assert torch.equal(rp, torch.cat([torch.zeros(1, dtype=torch.int64), want.reshape(-1).cumsum(0)]))


def _both(mask, k, causal, row0, keys_cap):
    cells_cap = int(mask.sum())
    ref = _mask_to_csr_nosync(mask, k=k, causal=causal, cells_cap=cells_cap, keys_cap=keys_cap,
                              backend="torch", row0=row0)
    got = _mask_to_csr_nosync(mask, k=k, causal=causal, cells_cap=cells_cap, keys_cap=keys_cap,
                              backend="triton", row0=row0)
    return ref, got


@pytest.mark.parametrize("causal,row0,T,K,k", CASES)
def test_triton_lists_equal_torch_lists(si, monkeypatch, causal, row0, T, K, k):
    """Random masks (width-0 cells selected, permuted strides), capacity above nnz: identical row pointers and
    columns, the filler past row_ptr[-1] included (0 on both paths)."""
    monkeypatch.setattr(si, "COUNT_ROWS", 8)
    monkeypatch.setattr(si, "COUNT_HEADS", 4)
    monkeypatch.setattr(si, "FILL_BLOCK", 16)
    B, H = 2, 3
    mask = _mask(B, H, T, K, 0.3, seed=7 * T + K + k + row0, permuted=True)   # [B, H, T, K]
    nnz = int(_row_key_counts(mask, _n_cell(T, K, k, causal, row0), k).sum())
    (rp_t, col_t), (rp_k, col_k) = _both(mask, k, causal, row0, nnz + 29)
    assert nnz > 0 and int(rp_t[-1]) == nnz
    assert torch.equal(rp_t, rp_k)
    assert col_k.dtype == torch.int32 and col_k.shape == col_t.shape == (nnz + 29,)
    assert torch.equal(col_t, col_k)


@pytest.mark.parametrize("mode,causal,row0", [("causal_per_batch", True, 0), ("per_query", True, 9),
                                              ("per_batch", False, 0)])
def test_topk_masks_through_mask_to_csr(mode, causal, row0):
    """What the layer passes: a select_topk mask and selection_caps (capacity = the host bound), the public
    mask_to_csr; B = 2, H = 4, T = 24, K = 8 (causal rows t < 7 have empty cells), k = 3."""
    from methods.sea.topk import select_topk, selection_caps

    B, H, T, K, k = 2, 4, 24, 8, 3
    g = torch.Generator().manual_seed(11)
    a_hat = torch.rand(B, H, T, K, generator=g)                          # [B, H, T, K] stand-in estimate
    mask = select_topk(a_hat, mode=mode, k=k, causal=causal, row0=row0)  # [B, H, T, K]
    caps = selection_caps(mode, B=B, H=H, T=T, K=K, k=k, causal=causal, row0=row0)
    rp_t, col_t = mask_to_csr(mask, k=k, causal=causal, caps=caps, backend="torch", row0=row0)
    rp_k, col_k = mask_to_csr(mask, k=k, causal=causal, caps=caps, backend="triton", row0=row0)
    assert int(rp_t[-1]) > 0 and torch.equal(rp_t, rp_k) and torch.equal(col_t, col_k)


def test_empty_and_truncated_and_refusals(si):
    """No selected cell (all filler), a capacity below nnz (both paths keep the first entries), T = 1, and the
    refusals: bidirectional rows with row0, k = 0."""
    B, H, T, K, k = 1, 2, 9, 8, 3
    none = torch.zeros(B, H, T, K, dtype=torch.bool)
    (rp_t, col_t), (rp_k, col_k) = _both(none, k, True, 0, 13)
    assert int(rp_k[-1]) == 0 and torch.equal(rp_t, rp_k) and torch.equal(col_t, col_k)
    mask = _mask(B, H, T, K, 0.5, seed=5, permuted=False)
    nnz = int(_row_key_counts(mask, _n_cell(T, K, k, True, 0), k).sum())
    (rp_t, col_t), (rp_k, col_k) = _both(mask, k, True, 0, nnz - 4)
    assert nnz > 8 and torch.equal(rp_t, rp_k) and torch.equal(col_t, col_k)
    one = _mask(3, 1, 1, K, 0.6, seed=6, permuted=False)                 # T = 1: one row per (b, h)
    (rp_t, col_t), (rp_k, col_k) = _both(one, 64, False, 0, 40)
    assert int(rp_t[-1]) > 0 and torch.equal(rp_t, rp_k) and torch.equal(col_t, col_k)
    with pytest.raises(ValueError, match="causal rows only"):
        si.row_key_counts(mask, k, causal=False, row0=3)
    with pytest.raises(ValueError, match="k=0"):
        si.row_key_counts(mask, 0, causal=True)


def _old_triton_stage(mask, k, causal, keys_cap):
    """The interpolation stage of the triton backend before the counts kernel (glue of [T, K] tables, a
    `mask & (width > 0)` copy, a uint8 product and a cumsum), for the GPU timing below."""
    from kernels.sea_interp import csr_columns

    B, H, T, K = mask.shape
    L = row_lengths(1, T, causal=causal, valid=None, device=mask.device)   # [1, T]
    lo, hi = cell_bounds(L, K)                                           # [1, T, K]
    width = (hi - lo)[0]                                                 # [T, K]
    n_cell = width.clamp(max=k)
    sel = mask & (n_cell > 0)                                            # [B, H, T, K]
    counts = _row_key_counts(sel, n_cell, k).reshape(-1)
    row_ptr = torch.zeros(B * H * T + 1, dtype=torch.int64, device=mask.device)
    torch.cumsum(counts, 0, out=row_ptr[1:])
    return row_ptr, csr_columns(sel.reshape(B * H * T, K), lo[0], width, row_ptr, k, max(keys_cap, 1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_size_stage_time_on_cuda():
    """B=1, H=16, T=65536 causal, K=64, k=64, causal_per_batch: new lists == old lists == torch lists; prints the
    old and new stage times and the counts kernel alone (kernels/sea_interp.py predicts about -1 ms)."""
    import kernels.sea_interp as si
    from methods.sea.topk import select_topk, selection_caps

    B, H, T, K, k, mode, causal = 1, 16, 65536, 64, 64, "causal_per_batch", True
    g = torch.Generator(device="cuda").manual_seed(0)
    a_hat = torch.rand(B, H, T, K, device="cuda", generator=g)            # [B, H, T, K] stand-in estimate
    mask = select_topk(a_hat, mode=mode, k=k, causal=causal)             # [B, H, T, K] (a permuted view)
    caps = selection_caps(mode, B=B, H=H, T=T, K=K, k=k, causal=causal)
    new = lambda: mask_to_csr(mask, k=k, causal=causal, caps=caps, backend="triton")   # noqa: E731
    old = lambda: _old_triton_stage(mask, k, causal, caps[1])            # noqa: E731
    cnt = lambda: si.row_key_counts(mask, k, causal=causal, row_ptr=True)   # noqa: E731
    rp_t, col_t = mask_to_csr(mask, k=k, causal=causal, caps=caps, backend="torch")
    rp_n, col_n = new()
    rp_o, col_o = old()
    assert int(rp_t[-1]) > 0 and torch.equal(rp_t, rp_n) and torch.equal(col_t, col_n)
    assert torch.equal(rp_o, rp_n) and torch.equal(col_o, col_n)

    def ms(f, n=20):
        for _ in range(3):
            f()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            f()
        stop.record()
        torch.cuda.synchronize()
        return start.elapsed_time(stop) / n

    t_old, t_new, t_cnt = ms(old), ms(new), ms(cnt)
    print(f"\ninterp stage T={T} K={K} k={k} {mode}: old {t_old:.3f} ms, new {t_new:.3f} ms "
          f"({t_new - t_old:+.3f} ms); row_key_counts + cumsum alone {t_cnt:.3f} ms (nnz {int(rp_n[-1])})")
