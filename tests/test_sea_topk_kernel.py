"""SEA's grouped top-k kernels (kernels/sea_topk.py): the sort-free bisect kernel against the stable-sort
restatement and the sort kernel, bit for bit (CPU: TRITON_INTERPRET=1, tiny sizes), and both timed at the real
size on a GPU (pytest -m gpu -s tests/test_sea_topk_kernel.py prints the times)."""

import pytest
import torch

import kernels.sea_topk as st

B, H, T, K = 2, 4, 9, 16


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(st, "POISON_OUTPUTS", True)        # outputs start as 0x55 bytes: a skipped write shows


def run(monkeypatch, a, width, n, hg, algo, snap=True, cells=None):
    """select_rows with ALGO / BISECT_SNAP / BISECT_CELLS set; checks every byte was written (0 or 1)."""
    monkeypatch.setattr(st, "ALGO", algo)
    monkeypatch.setattr(st, "BISECT_SNAP", snap)
    if cells is not None:
        monkeypatch.setattr(st, "BISECT_CELLS", cells)
    out = st.select_rows(a, width, n, heads_per_group=hg)
    raw = out.view(torch.int8)
    assert out.dtype == torch.bool and out.shape == a.shape and ((raw == 0) | (raw == 1)).all()
    return out


def inputs(kind, hg, seed):
    """scores [B, H, T, K], widths [T, K] (some 0) and budgets [T] covering 0, 1, more than the eligible cells."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        a = torch.randn(B, H, T, K, generator=g)                                   # [B, H, T, K]
        a[torch.rand(B, H, T, K, generator=g) < 0.1] = float("-inf")
    else:   # few distinct values: ties at the threshold, signed zeros, extremes, infinities, NaN
        vals = torch.tensor([-3.4e38, -2.0, -0.5, -1e-45, -0.0, 0.0, 1e-45, 0.5, 2.0, 3.4e38,
                             float("inf"), float("-inf"), float("nan")])
        p = torch.tensor([1, 2, 3, 1, 4, 4, 1, 3, 3, 1, 0.3, 1, 0.5])
        a = vals[torch.multinomial(p, B * H * T * K, replacement=True, generator=g)].view(B, H, T, K)
    width = torch.randint(0, 3, (T, K), generator=g)                               # 0: an empty cell
    width[4] = 0                                                                   # a row with no eligible cell
    n = torch.randint(2, hg * K + 3, (T,), generator=g)                            # varies per t
    n[0], n[1], n[2] = 0, hg * K + 5, 1                                            # none, all eligible, one
    return a, width, n


@pytest.mark.parametrize("hg", [1, 4])
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_bisect_equals_sort_and_stable_sort_restatement(monkeypatch, kind, hg):
    """Bisect (snapped, several rows a program where hg=1 so the last program has masked rows; count-only, one
    row a program) == sort kernel == select_rows_ref, bit for bit."""
    a, width, n = inputs(kind, hg, seed=hg + (10 if kind == "ties" else 0))
    want = st.select_rows_ref(a, width, n, heads_per_group=hg)
    assert want.any() and not want[:, :, 4].any() and not want[:, :, 0].any()
    got_sort = run(monkeypatch, a, width, n, hg, "sort")
    assert torch.equal(got_sort, want)
    got_snap = run(monkeypatch, a, width, n, hg, "bisect", snap=True, cells=64)      # hg=1: 4 rows a program
    assert torch.equal(got_snap, want)
    got_count = run(monkeypatch, a, width, n, hg, "bisect", snap=False, cells=16)    # one row a program
    assert torch.equal(got_count, want)
    # the combined (count, min, max) reduction the GPU runs, here under the interpreter too (BISECT_SPLIT False)
    monkeypatch.setattr(st, "BISECT_SPLIT", False)
    assert torch.equal(run(monkeypatch, a, width, n, hg, "bisect", snap=True, cells=64), want)
    # the semantics spelled out: per group, min(n, eligible) cells, never an ineligible one
    x = a.masked_fill(~(width > 0) | torch.isnan(a), float("-inf"))                  # [B, H, T, K]
    elig = (x > float("-inf")).view(B, H // hg, hg, T, K).sum((2, 4))              # [B, H/g, T]
    kept = want.view(B, H // hg, hg, T, K).sum((2, 4))                             # [B, H/g, T]
    assert torch.equal(kept, torch.minimum(elig, n.clamp(min=0)))
    assert not (want & (x == float("-inf"))).any()


def test_bisect_bf16_and_signed_zero_ties(monkeypatch):
    """A bf16 estimate (SEA's model dtype) of coarse values, -0.0 and +0.0 mixed: float equality, lowest index."""
    g = torch.Generator().manual_seed(3)
    a = (torch.randint(-2, 3, (B, H, T, K), generator=g).float() / 4).to(torch.bfloat16)   # [B, H, T, K]
    a[a == 0] = torch.where(torch.rand(int((a == 0).sum()), generator=g) < 0.5, -0.0, 0.0).to(torch.bfloat16)
    assert (torch.signbit(a) & (a == 0)).any() and (~torch.signbit(a) & (a == 0)).any()
    width = torch.ones(T, K, dtype=torch.int64)
    n = torch.arange(T) * 7 + 1                                                    # [T] 1 .. 57 of 64 cells
    want = st.select_rows_ref(a, width, n, heads_per_group=4)
    assert torch.equal(run(monkeypatch, a, width, n, 4, "bisect"), want)
    x = a.float().view(B, 1, 4, T, K).permute(0, 1, 3, 2, 4).reshape(B, T, 4 * K)    # [B, T, H*K]
    w = want.view(B, 1, 4, T, K).permute(0, 1, 3, 2, 4).reshape(B, T, 4 * K)         # [B, T, H*K]
    thr = torch.where(w, x, torch.inf).amin(-1, keepdim=True)                       # [B, T, 1] lowest kept
    assert ((x == thr) & ~w & (thr == 0)).any(), "a row must cut through the tie of signed zeros"


def test_algo_is_validated(monkeypatch):
    monkeypatch.setattr(st, "ALGO", "radix")
    with pytest.raises(ValueError, match="ALGO"):
        st.select_rows(torch.zeros(1, 1, 2, 4), torch.ones(2, 4), torch.ones(2), heads_per_group=1)


def test_bisect_config_fills_programs():
    assert st.bisect_config(1024) == (1, 2) and st.bisect_config(64) == (8, 1) and st.bisect_config(48) == (8, 1)


@pytest.mark.gpu
def test_topk_algorithms_agree_and_timed_at_real_size(monkeypatch):
    """B=1, H=16, T=65536, K=64, one group per (b, t) (causal_per_batch, SEA's budgets for k=64): every bisect
    variant == the sort kernel on random scores and on SEA-like ties; prints the medians of the harness's timer
    (harness.measure.time_cuda)."""
    from harness.measure import time_cuda
    from methods.sea.topk import budgets

    monkeypatch.setattr(st, "POISON_OUTPUTS", False)
    Bg, Hg, Tg, Kg = 1, 16, 65536, 64
    g = torch.Generator(device="cuda").manual_seed(0)
    n = budgets("causal_per_batch", torch.arange(1, Tg + 1, device="cuda")[None], k=64, K=Kg, H=Hg)[0]   # [T]
    width = torch.randint(0, 4, (Tg, Kg), device="cuda", generator=g)                                      # [T, K]
    width[torch.rand(Tg, Kg, device="cuda", generator=g) < 0.7] += 1                                       # ~8% 0
    z = torch.randn(Bg, Hg, Tg, Kg // 4, device="cuda", generator=g) * 2                          # [B, H, T, K/4]
    scores = {"random": torch.randn(Bg, Hg, Tg, Kg, device="cuda", generator=g).to(torch.bfloat16),
              "sea-ties": z.softmax(-1).repeat_interleave(4, -1).to(torch.bfloat16)}                     # [B, H, T, K]
    variants = [("sort", True, 16), ("bisect", True, 16), ("bisect", False, 16), ("bisect", True, 8),
                ("bisect", True, 32)]
    for name, a in scores.items():
        line, want = [], None
        for algo, snap, per_thread in variants:
            monkeypatch.setattr(st, "ALGO", algo)
            monkeypatch.setattr(st, "BISECT_SNAP", snap)
            monkeypatch.setattr(st, "BISECT_CELLS_PER_THREAD", per_thread)
            got = st.select_rows(a, width, n, heads_per_group=Hg)
            want = got if want is None else want
            assert torch.equal(got, want), (name, algo, snap, per_thread)
            ms = time_cuda(lambda: st.select_rows(a, width, n, heads_per_group=Hg), rep_ms=50).median_ms
            tag = "sort" if algo == "sort" else f"bisect{'-snap' if snap else '-count'}/{per_thread}pt"
            line.append(f"{tag} {ms:.3f} ms")
        print(f"topk T={Tg} {name}: " + ", ".join(line))
