"""The yardstick and the instruments: reference attention, error metrics, timers, memory."""
import math
import time

import pytest
import torch

from harness import measure, reference
from methods.exact import softmax_attention_probs


def _naive(q, k, v, causal):
    H = q.shape[1]
    k = k.repeat_interleave(H // k.shape[1], 1)
    v = v.repeat_interleave(H // v.shape[1], 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        T = q.shape[2]
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return s.softmax(-1) @ v


@pytest.mark.parametrize("causal", [True, False])
def test_chunked_reference_matches_naive_with_grads(causal):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 37, 16, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 37, 16, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 37, 16, generator=g, dtype=torch.float64, requires_grad=True)
    go = torch.randn(2, 4, 37, 16, generator=g, dtype=torch.float64)
    out = reference.reference_attention(q, k, v, causal=causal, chunk=8)   # 5 chunks, the last partial
    grads = torch.autograd.grad(out, (q, k, v), go)
    ref = _naive(q, k, v, causal)
    ref_grads = torch.autograd.grad(ref, (q, k, v), go)
    assert torch.allclose(out, ref, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-11)


def test_probs_rows_and_metrics():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 3, 29, 8, generator=g, dtype=torch.float64)
    k = torch.randn(1, 3, 29, 8, generator=g, dtype=torch.float64)
    rows = torch.tensor([0, 5, 28])
    p = reference.reference_probs(q, k, causal=True, rows=rows)
    assert p.shape == (1, 3, 3, 29)
    assert torch.allclose(p.sum(-1), torch.ones(1, 3, 3, dtype=torch.float64))
    assert (p[:, :, 0, 1:] == 0).all() and (p[:, :, 1, 6:] == 0).all()
    same = softmax_attention_probs(q, k, causal=True, rows=rows)
    assert torch.allclose(p, same)
    assert reference.attention_kl(p, p) == pytest.approx(0.0, abs=1e-9)
    assert reference.topk_recall(p, p, 4) == 1.0
    uniform = torch.full_like(p, 1 / 29)
    assert reference.attention_kl(p, uniform) > 0.01
    # rel L2 and max abs
    x = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert reference.rel_l2(x * 1.1, x) == pytest.approx(0.1)
    assert reference.max_abs(x + torch.tensor([0.0, 0.5], dtype=torch.float64), x) == pytest.approx(0.5)


def test_reference_plan_switches_to_device_fp32_for_large_problems():
    assert reference.reference_plan(1, 4, 256, 32, "cpu") == ("cpu", torch.float64)
    assert reference.reference_plan(1, 16, 65536, 64, "cuda") == ("cuda", torch.float32)
    assert reference.reference_plan(1, 16, 65536, 64, "cpu") == ("cpu", torch.float32)


def test_summary_quantiles():
    t = measure.summarize([5.0, 1.0, 3.0, 2.0, 4.0], "x")
    assert (t.median_ms, t.p20_ms, t.p80_ms, t.n) == (3.0, 1.8, 4.2, 5)


def test_cpu_timer_repeats_and_is_ordered():
    x = torch.randn(256, 256)
    t = measure.time_cpu(lambda: x @ x, min_runs=5, budget_s=0.05)
    assert t.n >= 5 and 0 < t.p20_ms <= t.median_ms <= t.p80_ms
    assert "threads" in t.timer


def test_cpu_peak_memory_sees_a_transient_allocation():
    n = 32 << 20          # 32 MiB allocated, touched, and freed inside the call

    def f():
        buf = torch.ones(n // 4, dtype=torch.float32)
        time.sleep(0.05)  # lives long enough for the sampler even on a loaded 2-core machine
        return float(buf[-1])

    peak = measure.peak_memory_cpu(f)
    assert 0.8 * n <= peak <= 1.5 * n, peak / 2**20
    small = measure.peak_memory_cpu(lambda: torch.ones(16).sum())
    assert small < 4 << 20


def test_flops_formula():
    f = measure.attention_flops(1, 2, 100, 8, causal=False, backward=False)
    assert f == 4 * 1 * 2 * 100 * 100 * 8
    assert measure.attention_flops(1, 2, 100, 8, causal=True, backward=False) == f / 2
    assert measure.attention_flops(1, 2, 100, 8, causal=False, backward=True) == f * 3.5


def test_every_command_runs_fp32_as_fp32(capsys):
    """harness.cli.main sets the run workers' numeric setting (no TF32 in matmuls or cuDNN convolutions) before any
    command, so a quality table (fidelity, perplexity) and a latency row compute fp32 alike."""
    import torch

    from harness.cli import main

    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        assert main(["list"]) == 0
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    assert "sea" in capsys.readouterr().out
