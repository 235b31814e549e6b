"""kernels/sea_interp.py: the blocked interpolation kernel (several time steps of one (b, h) per program, one selected
cell per row per step) against the plain-loop restatement csr_columns_ref, on shapes that hit its edges: partial
time blocks (T = 37), several (b, h) and time blocks per launch, runs longer than a slot block, rows of many cells,
empty rows and blocks, cells of width 0, filler entries past row_ptr[-1] (poisoned buffer, several fill programs)
and a capacity below nnz; and the in-kernel cell geometry (csr_columns_cells) against the cell_bounds tables."""
from __future__ import annotations

import pytest
import torch


def _row_ptr(sel: torch.Tensor, width: torch.Tensor, k: int) -> torch.Tensor:
    """int64 [R + 1]: prefix sum of the rows' key counts sum_c sel min(width, k); sel [R, K], width [T, K]."""
    (R, K), T = sel.shape, width.shape[0]
    counts = (sel.view(R // T, T, K) * width.clamp(max=k)).sum(-1).reshape(R)   # [R]
    row_ptr = torch.zeros(R + 1, dtype=torch.int64)
    row_ptr[1:] = torch.cumsum(counts, 0)
    return row_ptr


def _inputs(R: int, T: int, K: int, k: int, p: float, seed: int, max_width: int = 12):
    """Random selections and arbitrary cells (the kernel assumes no geometry): sel bool [R, K], lo, width int64
    [T, K] (width 0 included), row_ptr int64 [R + 1] from the rows' key counts sum_c sel min(width, k)."""
    g = torch.Generator().manual_seed(seed)
    sel = torch.rand(R, K, generator=g) < p                                # [R, K]
    lo = torch.randint(0, 1000, (T, K), generator=g)                       # [T, K]
    width = torch.randint(0, max_width + 1, (T, K), generator=g)           # [T, K]
    return sel, lo, width, _row_ptr(sel, width, k)


@pytest.fixture
def si(monkeypatch):
    import kernels.sea_interp as si

    monkeypatch.setattr(si, "POISON_OUTPUTS", True)                        # a skipped entry keeps -123456789
    return si


@pytest.mark.parametrize("K,k,rows_per_program,slot_block", [
    (8, 3, 16, 64),      # R = 2*3*37 = 222 rows: 6 (b, h) x 3 time blocks, the last one partial
    (5, 8, 4, 4),        # K not a power of two; runs of up to 8 keys loop over slot blocks of 4
    (16, 1, 8, 64),      # k = 1: one key per cell, many cells per row; T = 37: a partial last time block per (b, h)
    (8, 70, 2, 64),      # k > SLOT_BLOCK: runs of up to 70 keys loop (widths up to 90)
])
def test_blocked_kernel_matches_loop_reference(si, monkeypatch, K, k, rows_per_program, slot_block):
    monkeypatch.setattr(si, "ROWS_PER_PROGRAM", rows_per_program)
    monkeypatch.setattr(si, "SLOT_BLOCK", slot_block)
    monkeypatch.setattr(si, "FILL_BLOCK", 16)                              # several fill programs
    R, T = 2 * 3 * 37, 37
    sel, lo, width, row_ptr = _inputs(R, T, K, k, 0.3, seed=K + k, max_width=90 if k > 64 else 12)
    nnz = int(row_ptr[-1])
    cap = nnz + 53                                                         # filler past row_ptr[-1]
    got = si.csr_columns(sel, lo, width, row_ptr, k, cap)
    want = si.csr_columns_ref(sel, lo, width, row_ptr, k, cap)
    assert nnz > 0 and got.dtype == torch.int32 and got.shape == (cap,)
    assert torch.equal(got, want)
    assert not got[nnz:].any()


def test_long_rows_all_cells_and_empty_blocks(si, monkeypatch):
    """Rows selecting every cell (K k = 12 * 20 = 240 keys each, cells wider than k) next to blocks of empty rows:
    t = 0..3 select everything, t = 4..20 nothing."""
    monkeypatch.setattr(si, "ROWS_PER_PROGRAM", 4)
    monkeypatch.setattr(si, "SLOT_BLOCK", 16)
    R, T, K, k = 2 * 21, 21, 12, 20
    sel = torch.zeros(R // T, T, K, dtype=torch.bool)                      # [BH, T, K]
    sel[:, :4] = True
    sel = sel.reshape(R, K)
    g = torch.Generator().manual_seed(3)
    lo = torch.randint(0, 500, (T, K), generator=g)
    width = torch.randint(21, 40, (T, K), generator=g)                     # every cell gives k = 20 keys
    row_ptr = _row_ptr(sel, width, k)
    assert int((row_ptr[1:] - row_ptr[:-1]).max()) == K * k
    cap = int(row_ptr[-1])
    got = si.csr_columns(sel, lo, width, row_ptr, k, cap)
    assert torch.equal(got, si.csr_columns_ref(sel, lo, width, row_ptr, k, cap))


def test_no_keys_capacity_below_nnz_single_step_and_no_rows(si, monkeypatch):
    monkeypatch.setattr(si, "FILL_BLOCK", 8)
    R, T, K, k = 30, 10, 8, 4
    sel, lo, width, row_ptr = _inputs(R, T, K, k, 0.0, seed=1)
    got = si.csr_columns(sel, lo, width, row_ptr, k, 37)                   # no keys at all: all filler
    assert int(row_ptr[-1]) == 0 and torch.equal(got, torch.zeros(37, dtype=torch.int32))
    sel, lo, width, row_ptr = _inputs(R, T, K, k, 0.5, seed=2)
    nnz = int(row_ptr[-1])
    got = si.csr_columns(sel, lo, width, row_ptr, k, nnz - 7)              # truncated, like the tensor-op path
    full = si.csr_columns_ref(sel, lo, width, row_ptr, k, nnz)
    assert nnz > 20 and torch.equal(got, full[:nnz - 7])
    sel, lo, width, row_ptr = _inputs(5, 1, K, k, 0.5, seed=4)             # T = 1: one row per (b, h)
    cap = int(row_ptr[-1]) + 3
    one = si.csr_columns(sel, lo, width, row_ptr, k, cap)
    assert cap > 3 and torch.equal(one, si.csr_columns_ref(sel, lo, width, row_ptr, k, cap))
    empty = si.csr_columns(torch.zeros(0, K, dtype=torch.bool), lo, width, torch.zeros(1, dtype=torch.int64), k, 5)
    assert torch.equal(empty, torch.zeros(5, dtype=torch.int32))
    with pytest.raises(ValueError, match="k=0"):
        si.csr_columns(sel, lo, width, row_ptr, 0, nnz)


@pytest.mark.parametrize("k,slot_block", [(64, 64), (50000, 4096)])
def test_wide_cells_do_not_overflow(si, monkeypatch, k, slot_block):
    """Cells of up to 10^8 keys (query blocks far into a long sequence): j w passes 2^31 but the kernel's
    j q + floor(j rem / n) does not; k = 50000 takes the int64 path (j rem may pass 2^31)."""
    monkeypatch.setattr(si, "SLOT_BLOCK", slot_block)
    R, T, K = 6, 3, 4
    g = torch.Generator().manual_seed(k)
    sel = torch.rand(R, K, generator=g) < 0.4                              # [R, K]
    sel[0, 1] = True
    lo = torch.randint(0, 10 ** 9, (T, K), generator=g)                    # [T, K]
    width = torch.randint(10 ** 7, 10 ** 8, (T, K), generator=g)           # [T, K]
    row_ptr = _row_ptr(sel, width, k)
    cap = int(row_ptr[-1])
    got = si.csr_columns(sel, lo, width, row_ptr, k, cap)
    assert torch.equal(got, si.csr_columns_ref(sel, lo, width, row_ptr, k, cap))


@pytest.mark.parametrize("causal,row0,T,K,k", [(True, 0, 37, 16, 3), (True, 21, 19, 8, 70), (False, 0, 13, 16, 1)])
def test_in_kernel_geometry_matches_tables_without_premasking(si, monkeypatch, causal, row0, T, K, k):
    """csr_columns_cells (cell edges from t, the mask read through its strides, selected width-0 cells NOT masked
    off) against the loop reference on the cell_bounds tables with the width-0 cells masked off. B = 2, H = 3;
    causal T = 37, K = 16 and bidirectional T = 13 < K = 16 select width-0 cells; k = 70 loops over slot blocks."""
    from methods.sea.interp import cell_bounds, row_lengths

    monkeypatch.setattr(si, "ROWS_PER_PROGRAM", 8)
    monkeypatch.setattr(si, "SLOT_BLOCK", 16)
    monkeypatch.setattr(si, "FILL_BLOCK", 16)
    B, H = 2, 3
    g = torch.Generator().manual_seed(T + K + k)
    mask = (torch.rand(B, T, H, K, generator=g) < 0.35).permute(0, 2, 1, 3)   # [B, H, T, K], non-contiguous
    L = row_lengths(1, T, causal=causal, valid=None, device="cpu", row0=row0)   # [1, T]
    lo, hi = cell_bounds(L, K)                                           # [1, T, K]
    width = (hi - lo)[0]                                                 # [T, K]
    sel = (mask & (width > 0)).reshape(B * H * T, K)                     # [R, K] the old pre-masked flags
    assert bool((mask & (width == 0)).any()) == bool((width == 0).any())
    row_ptr = _row_ptr(sel, width, k)
    cap = int(row_ptr[-1]) + 21
    got = si.csr_columns_cells(mask, row_ptr, k, cap, causal=causal, row0=row0)
    assert int(row_ptr[-1]) > 0 and torch.equal(got, si.csr_columns_ref(sel, lo[0], width, row_ptr, k, cap))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("causal,mode,T,K,k", [(True, "causal_per_batch", 65536, 64, 64),
                                               (False, "per_batch", 16384, 128, 13)])
def test_real_size_matches_torch_lists_on_cuda(causal, mode, T, K, k):
    """The benchmark geometry (B=1, H=16): the Triton lists equal the tensor-op lists, filler included; prints the
    kernel time (the module docstring predicts 0.08-0.2 ms at T=65536 causal on an H200)."""
    import kernels.sea_interp as si
    from methods.sea.interp import _row_key_counts, cell_bounds, mask_to_csr, row_lengths
    from methods.sea.topk import select_topk, selection_caps

    B, H = 1, 16
    g = torch.Generator(device="cuda").manual_seed(0)
    a_hat = torch.rand(B, H, T, K, device="cuda", generator=g)            # [B, H, T, K] stand-in estimate
    mask = select_topk(a_hat, mode=mode, k=k, causal=causal, valid=None)  # [B, H, T, K]
    caps = selection_caps(mode, B=B, H=H, T=T, K=K, k=k, causal=causal)
    rp_t, col_t = mask_to_csr(mask, k=k, causal=causal, caps=caps, backend="torch")
    rp_k, col_k = mask_to_csr(mask, k=k, causal=causal, caps=caps, backend="triton")
    assert int(rp_t[-1]) > 0 and torch.equal(rp_t, rp_k) and torch.equal(col_t, col_k)

    L = row_lengths(1, T, causal=causal, valid=None, device="cuda")
    lo, hi = cell_bounds(L, K)                                           # [1, T, K]
    width = (hi - lo)[0]                                                 # [T, K]
    sel = (mask & (width > 0)).reshape(B * H * T, K)                     # [R, K]
    rp = torch.zeros(B * H * T + 1, dtype=torch.int64, device="cuda")
    torch.cumsum(_row_key_counts(sel.view(B, H, T, K), width.clamp(max=k), k).reshape(-1), 0, out=rp[1:])
    args = (sel, lo[0], width, rp, k, max(caps[1], 1))
    for _ in range(3):
        si.csr_columns(*args)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        si.csr_columns(*args)
    stop.record()
    torch.cuda.synchronize()
    print(f"\ncsr_columns T={T} K={K} k={k} {mode}: {start.elapsed_time(stop) / 20:.3f} ms per call "
          f"(nnz {int(rp[-1])}, capacity {caps[1]})")
