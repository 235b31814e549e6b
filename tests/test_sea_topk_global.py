"""Global top-k for SEA's per_batch / per_head modes (kernels/sea_topk_global.py): the radix-select kernel against
the stable-sort restatement, bit for bit (CPU: TRITON_INTERPRET=1, tiny tiles so a group spans several programs of
several tiles), against torch.topk where the threshold value is unique, the fused count + pick form (FUSED_PICK)
against the unfused one, and timed against the torch.topk path at the real size on a GPU, both forms (pytest -m gpu
-s tests/test_sea_topk_global.py prints the times)."""

import pytest
import torch

import kernels.sea_topk_global as sg

G, K = 3, 8
N = 5 * 37 * K                                       # 1480 cells a group: 24 tiles of 64, 2 programs of 12


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch, request):
    monkeypatch.setattr(sg, "POISON_OUTPUTS", True)   # outputs start as 0x55 bytes: a skipped write shows
    if request.node.get_closest_marker("gpu"):        # timed at the module's own tiles (6 programs of 64-cell tiles
        return                                        # took 805 ms at 134M cells on an H200: a first run's mistake)
    monkeypatch.setattr(sg, "BLOCK", 64)
    monkeypatch.setattr(sg, "PROGRAMS", 6)            # 2 programs a group at G = 3 (the last one's tiles ragged)


def run(scores, n, width=None):
    out = sg.select_global(scores, n, width)
    raw = out.view(torch.int8)
    assert out.dtype == torch.bool and out.shape == (n.numel(), scores.numel() // n.numel())
    assert ((raw == 0) | (raw == 1)).all()
    return out


def scores_of(kind, dtype, seed, g=G, n=N):
    """[g, n] scores: 'random' (normal, ~10 % -inf, a few NaN / +inf) or 'ties' (a few levels incl. -0.0 / +0.0,
    extremes, infinities and NaN, each pair of columns equal as in SEA's bidirectional decoder)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "random":
        x = torch.randn(g, n, generator=gen)
        u = torch.rand(g, n, generator=gen)
        x[u < 0.1] = float("-inf")
        x[(u > 0.1) & (u < 0.12)] = float("nan")
        x[(u > 0.12) & (u < 0.125)] = float("inf")
    else:
        vals = torch.tensor([-3.0e38, -2.0, -1e-40, -0.0, 0.0, 1e-40, 0.25, 0.5, 3.0e38,
                             float("inf"), float("-inf"), float("nan")])
        p = torch.tensor([1, 2, 1, 4, 4, 1, 3, 3, 1, 0.3, 1, 0.5])
        half = vals[torch.multinomial(p, g * n // 2, replacement=True, generator=gen)].view(g, n // 2)
        x = half.repeat_interleave(2, dim=1)                             # [g, n]: columns 2j, 2j+1 equal
    return x.to(dtype)


WIDTH = torch.tensor([1, 0, 2, 3, 0, 1, 5, 1])       # cells 1 and 4 of every 8 cover no key


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_equals_stable_sort_restatement(kind, dtype):
    """Budgets none / one / some / all eligible / above, with widths: == select_global_ref bit for bit."""
    x = scores_of(kind, dtype, seed=1 if kind == "random" else 2)
    want_all = sg.select_global_ref(x, torch.tensor([N] * G), WIDTH)
    elig = int(want_all[1].sum())
    n = torch.tensor([0, elig, 301])
    want = sg.select_global_ref(x, n, WIDTH)
    assert want[2].sum() == 301 and want[1].equal(want_all[1]) and not want[0].any()
    assert torch.equal(run(x, n, WIDTH), want)
    n2 = torch.tensor([1, elig + 7, 900])
    assert torch.equal(run(x, n2, WIDTH), sg.select_global_ref(x, n2, WIDTH))


def test_budget_edges_without_width():
    """n = 0, 1, -5, eligible - 1, eligible, eligible + 1 and far above, on 7 groups of one tensor; a group of
    only -inf / NaN selects nothing whatever its budget."""
    x = scores_of("ties", torch.float32, seed=3, g=7, n=6 * 37)
    gen = torch.Generator().manual_seed(3)
    for r in range(1, 6):
        x[r] = x[0, torch.randperm(6 * 37, generator=gen)]             # same values (same eligible count), shuffled
    x[6, ::2] = float("-inf")
    x[6, 1::2] = float("nan")
    elig = int((~torch.isnan(x[0]) & (x[0] > float("-inf"))).sum())
    n = torch.tensor([0, 1, -5, elig - 1, elig, elig + 1, 10 ** 6])
    want = sg.select_global_ref(x, n)
    assert want.sum(1).tolist() == [0, 1, 0, elig - 1, elig, elig, 0]
    got = run(x, n)
    assert torch.equal(got, want) and not got[6].any()


def test_sea_like_duplicated_columns_heavy_ties():
    """Softmax rows [2, 4, 9, 16] of logits from 3 levels with each column duplicated: per_batch and per_head
    groupings (budgets cut through long runs of equal values) == restatement."""
    gen = torch.Generator().manual_seed(4)
    B, H, T, Kc = 2, 4, 9, 16
    logits = torch.randint(0, 3, (B, H, T, Kc // 2), generator=gen).float()
    probs = torch.softmax(logits.repeat_interleave(2, dim=-1), dim=-1)   # [B, H, T, K], pairs of equal columns
    width = torch.tensor([1] * 12 + [0] * 4)                               # the last 4 cells empty
    for groups, n in ((B, torch.tensor([200, 333])), (B * H, torch.tensor([5, 40, 0, 77, 100, 1, 60, 144]))):
        want = sg.select_global_ref(probs, n, width)
        assert torch.equal(run(probs, n, width), want)
        assert want.sum(1).tolist() == torch.minimum(n, torch.tensor(H * T * 12 * B // groups)).tolist()


@pytest.mark.parametrize("d32,d16,hist", [((8, 8, 8, 8), (4, 4, 4, 4), 4),   # every pass tl.histogram
                                          ((16, 16), (16,), 0)])             # every pass atomics; 1 pass
def test_digit_schedules(monkeypatch, d32, d16, hist):
    """Other digit widths and both counting paths in every pass (a one-pass schedule picks and ranks ties at once)
    give the same selection."""
    monkeypatch.setattr(sg, "DIGITS_32", d32)
    monkeypatch.setattr(sg, "DIGITS_16", d16)
    monkeypatch.setattr(sg, "HIST_PASSES", hist)
    for dtype, seed in ((torch.float32, 5), (torch.bfloat16, 6)):
        x = scores_of("ties", dtype, seed=seed, g=2, n=4 * 37 * K)
        n = torch.tensor([250, 3])
        assert torch.equal(run(x, n, WIDTH), sg.select_global_ref(x, n, WIDTH))


def test_signed_zero_ties_go_to_lowest_index():
    """-0.0 and +0.0 are one value: with the budget cutting through them the lowest flat indices win, whichever
    sign they carry."""
    x = torch.tensor([[-1.0, 0.0, -0.0, 2.0, -0.0, 0.0, 0.0, -3.0] * 9])   # [1, 72]
    got = run(x, torch.tensor([9 + 4]))                                   # the 9 twos and the first 4 zeros
    want = torch.zeros(72, dtype=torch.bool)
    want[3::8] = True
    want[[1, 2, 4, 5]] = True
    assert torch.equal(got[0], want)


def test_agrees_with_torch_topk_at_a_unique_threshold():
    """Distinct random values (no ties anywhere): the kernel's mask == torch.topk + scatter, per group."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randperm(G * N, generator=gen).float().view(G, N) / (G * N) - 0.5
    n = torch.tensor([1, 377, 1200])
    got = run(x, n)
    for g in range(G):
        ref = torch.zeros(N, dtype=torch.bool)
        ref[torch.topk(x[g], int(n[g])).indices] = True
        assert torch.equal(got[g], ref)


FORMS = {"fused": True, "unfused": False}


def both_forms(monkeypatch, x, n, width=None):
    """{form: mask} of select_global with FUSED_PICK on and off, on the same inputs."""
    outs = {}
    for form, fused in FORMS.items():
        monkeypatch.setattr(sg, "FUSED_PICK", fused)
        outs[form] = run(x, n, width)
    return outs


def mixed_scores(dtype, seed):
    """[3, N]: groups 0 and 2 'ties', group 1 'random' (distinct values but -inf / NaN / +inf)."""
    x = scores_of("ties", dtype, seed=seed)
    x[1] = scores_of("random", dtype, seed=seed + 100)[1]
    return x


@pytest.mark.parametrize("d32,d16,hist", [((8, 8, 8, 8), (8, 8), 1),        # the defaults: atomic passes 2..
                                          ((8, 12, 12), (4, 12), 1),        # 4096-bin rows, 16-bin ones
                                          ((8, 8, 8, 8), (8, 8), 0)])       # every pass atomic: rows zeroed first
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_pick_equals_unfused_and_restatement(monkeypatch, d32, d16, hist, dtype):
    """FUSED_PICK on and off give the same mask, == select_global_ref, on 3 groups of 3 programs of 8 tiles (the
    last one ragged) with widths: budgets through a run of equal values, 0, and above the eligible count. The
    fused form's buffer starts poisoned (POISON_OUTPUTS), so a row an atomic pass does not zero shows."""
    monkeypatch.setattr(sg, "DIGITS_32", d32)
    monkeypatch.setattr(sg, "DIGITS_16", d16)
    monkeypatch.setattr(sg, "HIST_PASSES", hist)
    monkeypatch.setattr(sg, "PROGRAMS", 9)
    assert sg._layout(G, N) == (3, 8)
    x = mixed_scores(dtype, seed=11)
    n = torch.tensor([301, 0, 10 ** 6])
    want = sg.select_global_ref(x, n, WIDTH)
    xf = x.float()
    thr = xf[0][want[0]].min()
    assert bool(((xf[0] == thr) & ~want[0] & (WIDTH.repeat(N // K) > 0)).any())   # group 0's budget splits ties
    assert not want[1].any() and 0 < int(want[2].sum()) < N
    outs = both_forms(monkeypatch, x, n, WIDTH)
    assert torch.equal(outs["fused"], outs["unfused"]) and torch.equal(outs["fused"], want)


def test_fused_pick_under_reversed_program_order(monkeypatch):
    """The interpreter runs a grid's programs in order, so the last ticket goes to program P - 1; run them in reverse
    (program 0 draws it) and the fused form still matches the restatement: the last program's work reads every
    row, not its own registers. (Patches the interpreter's InterpreterBuilder.set_grid_idx.)"""
    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    real = builder.set_grid_idx
    monkeypatch.setattr(builder, "set_grid_idx", lambda x, y, z: real(builder.grid_dim[0] - 1 - x, y, z))
    monkeypatch.setattr(sg, "DIGITS_32", (8, 12, 12))
    monkeypatch.setattr(sg, "PROGRAMS", 9)
    monkeypatch.setattr(sg, "FUSED_PICK", True)
    x = mixed_scores(torch.float32, seed=12)
    n = torch.tensor([500, 40, 1])
    assert torch.equal(run(x, n, WIDTH), sg.select_global_ref(x, n, WIDTH))


def test_fused_pick_twice_in_a_row(monkeypatch):
    """Two calls on the same inputs give the same mask (each call's ticket counters start at 0, and each pass's
    last program sets them back to 0 for the next pass)."""
    monkeypatch.setattr(sg, "FUSED_PICK", True)
    monkeypatch.setattr(sg, "PROGRAMS", 9)
    x = mixed_scores(torch.float32, seed=13)
    n = torch.tensor([700, 3, 250])
    first = run(x, n, WIDTH)
    assert torch.equal(run(x, n, WIDTH), first) and torch.equal(first, sg.select_global_ref(x, n, WIDTH))


def test_rejects_bad_inputs():
    x = torch.zeros(2, 10)
    with pytest.raises(ValueError, match="groups"):
        sg.select_global(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="width"):
        sg.select_global(x, torch.tensor([1, 2]), torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="dtype"):
        sg.select_global(x.double(), torch.tensor([1, 2]))


@pytest.mark.gpu
@pytest.mark.parametrize("form", list(FORMS))
def test_gpu_time_against_torch_topk_per_batch(monkeypatch, form):
    """B=1, H=16, T=65536, K=128 (134M cells), n = 2^20, softmax-like fp32 estimate with duplicated column pairs:
    the kernel (eager and as a CUDA-graph replay) against SEA's torch path (masked_fill copy + torch.topk +
    scatter), both timed with harness.measure.time_cuda; masks equal where ties allow. Also bf16 input, and a
    launch-bound size (262144 cells: 64 programs of one tile, as SEA's bidirectional forward at T = 8192) == the
    restatement and timed. Once per form (FUSED_PICK on / off): the A/B of the fused count + pick launches."""
    from harness.measure import time_cuda

    monkeypatch.setattr(sg, "FUSED_PICK", FORMS[form])

    B, H, T, Kc = 1, 16, 65536, 128
    gen = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(B, H, T, Kc // 2, device="cuda", generator=gen) * 2.0
    probs = torch.softmax(logits.repeat_interleave(2, dim=-1), dim=-1).contiguous()   # [B, H, T, K]
    del logits
    n = torch.full((B,), 1 << 20, dtype=torch.int64, device="cuda")
    eligible = torch.ones(B, T, Kc, dtype=torch.bool, device="cuda")

    def torch_path():
        scores = probs.float().masked_fill(~eligible[:, None], float("-inf"))   # [B, H, T, K]
        flat = scores.reshape(B, H * T * Kc)
        vals, idx = torch.topk(flat, 1 << 20, dim=-1, sorted=True)
        keep = (torch.arange(1 << 20, device="cuda") < n[:, None]) & torch.isfinite(vals)
        return torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, idx, keep)

    def kernel():
        return sg.select_global(probs, n)

    ref, got = torch_path(), kernel()
    flat = probs.reshape(B, -1)
    for a, b in ((got, ref), (ref, got)):
        assert int(a.sum()) == int(b.sum()) == 1 << 20
        assert flat[a].min() >= flat[~b].max()                            # every selected >= every unselected
    thr = flat[got].min()
    assert torch.equal(got[flat != thr], ref[flat != thr])                # differences only among ties at thr
    t_torch = time_cuda(torch_path)
    t_kernel = time_cuda(kernel)
    t_graph = time_cuda(kernel, cuda_graph=True)
    pb = probs.bfloat16()
    got16 = sg.select_global(pb, n)
    fb = pb.reshape(B, -1)
    assert int(got16.sum()) == 1 << 20 and fb[got16].min() >= fb[~got16].max()
    t_bf16 = time_cuda(lambda: sg.select_global(pb, n))
    ties = int((flat == thr).sum())
    small = torch.softmax(torch.randn(2048, 128, device="cuda", generator=gen), dim=-1).reshape(1, -1)   # [1, 2^18]
    n_small = torch.tensor([4096], device="cuda")
    assert sg._layout(1, small.numel()) == (64, 1)
    assert torch.equal(sg.select_global(small, n_small), sg.select_global_ref(small, n_small))
    t_small = time_cuda(lambda: sg.select_global(small, n_small))
    t_small_graph = time_cuda(lambda: sg.select_global(small, n_small), cuda_graph=True)
    print(f"\nper_batch top-k ({form}), 134M cells, n=2^20: torch path {t_torch.median_ms:.3f} ms, kernel fp32 "
          f"{t_kernel.median_ms:.3f} ms (graph {t_graph.median_ms:.3f} ms), kernel bf16 {t_bf16.median_ms:.3f} ms; "
          f"ties at the threshold: {ties}; 262144 cells, n=4096: {t_small.median_ms:.4f} ms "
          f"(graph {t_small_graph.median_ms:.4f} ms)")


@pytest.mark.gpu
def test_gpu_fused_pick_equals_unfused_and_restatement(monkeypatch):
    """On the GPU the programs of a pass run concurrently, so which one draws the last ticket varies and its sum
    reads rows other SMs wrote just before (the interpreter runs them one after another): both forms ==
    the restatement over random cases (2 to 2048 programs a group, 1 to 8 groups, heavy ties, widths, budgets from
    0 to above the eligible count, fp32 and bf16), each case run 3 times (fresh ticket races)."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    for block, programs, d32, hist in ((4096, 1024, (8, 8, 8, 8), 1), (256, 1024, (8, 12, 12), 1),
                                       (64, 2048, (8, 8, 8, 8), 0)):
        monkeypatch.setattr(sg, "BLOCK", block)
        monkeypatch.setattr(sg, "PROGRAMS", programs)
        monkeypatch.setattr(sg, "DIGITS_32", d32)
        monkeypatch.setattr(sg, "HIST_PASSES", hist)
        for case in range(6):
            g = (1, 3, 8)[case % 3]
            cells = (1 << 17) + 8 * 37 * case                            # ragged last tile
            x = torch.randint(0, 40, (g, cells), device="cuda", generator=gen).float() / 7.0   # [g, cells]: ties
            if case % 2:
                x = x + torch.randn(g, cells, device="cuda", generator=gen) * 1e-3
            dtype = (torch.float32, torch.bfloat16)[case // 3]
            x = x.to(dtype)
            n = torch.randint(0, cells + cells // 4, (g,), device="cuda", generator=gen)
            n[0] = 0 if case % 2 else n[0]
            width = WIDTH.cuda()
            want = sg.select_global_ref(x, n, width)
            for rep in range(3):
                outs = both_forms(monkeypatch, x, n, width)
                for form, got in outs.items():
                    assert torch.equal(got, want), (block, programs, d32, hist, case, rep, form)


@pytest.mark.parametrize("mode", ["per_batch", "per_head"])
@pytest.mark.parametrize("T", [37, 5])                       # T = 5 < K = 8: cells without keys are never taken
def test_select_topk_routes_global_modes_to_the_kernel(mode, T):
    """methods/sea/topk.select_topk with backend=triton runs this kernel for per_batch / per_head (topk_path says
    'triton') and selects what the torch path selects (continuous scores: the threshold value is unique), with the
    cells of width 0 (T < K) never selected; auto keeps torch on the CPU."""
    from methods.sea.topk import select_topk, topk_path

    B, H, Kc = 2, 3, 8
    gen = torch.Generator().manual_seed(T)
    probs = torch.softmax(torch.randn(B, H, T, Kc, generator=gen), dim=-1)          # [B, H, T, K]
    assert topk_path(mode, H=H, K=Kc, valid=None, backend="triton", device="cpu") == "triton"
    assert topk_path(mode, H=H, K=Kc, valid=None, backend="auto", device="cpu") == "torch"
    calls = []
    real = sg.select_global
    try:
        sg.select_global = lambda *a, **kw: calls.append(1) or real(*a, **kw)
        got = select_topk(probs, mode=mode, k=3, causal=False, backend="triton")
    finally:
        sg.select_global = real
    want = select_topk(probs, mode=mode, k=3, causal=False, backend="torch")
    assert calls == [1]
    assert got.shape == (B, H, T, Kc) and got.dtype == torch.bool
    assert torch.equal(got, want) and want.any()
    if T < Kc:
        from methods.sea.interp import cell_bounds, row_lengths

        lo, hi = cell_bounds(row_lengths(1, T, causal=False, valid=None, device="cpu"), Kc)   # [1, T, K]
        empty = (hi <= lo)[0, 0]                              # [K]: the same cells of every row
        assert empty.any() and not got[..., empty].any()


def test_layer_output_with_the_global_kernel_equals_torch_path():
    """A bidirectional SEA layer (per_batch) gives the same output with topk_backend=triton as with torch."""
    from tests.helpers import gaussian_qkv, sea_case

    outs = []
    for backend in ("torch", "triton"):
        M, cfg, prob = sea_case(2, 4, 2, 37, 16, causal=False, K=8, k=3, backend="torch", topk_backend=backend)
        mod = M.build(cfg, prob, seed=0)
        q, k, v = gaussian_qkv(2, 4, 2, 37, 16, seed=1, dtype=torch.float32)
        with torch.no_grad():
            outs.append(mod(q, k, v, causal=False))
        assert f"topk={backend}" in mod.impl
    assert torch.equal(outs[0], outs[1])
