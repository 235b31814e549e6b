"""pytest-benchmark micro-benchmarks of every registered method (not part of the CI test command).

    python -m pytest tests/benchmarks --benchmark-only            # CPU, or CUDA when present
    python -m pytest tests/benchmarks --benchmark-compare         # against a saved run

These time one forward call at a fixed small shape through pytest-benchmark's own statistics; the
harness sweep (`python -m harness run`) is the tool for real measurements across shapes and devices.
"""
import pytest
import torch

import methods
from methods.base import Problem

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = "bf16" if DEVICE == "cuda" else "fp32"
B, H, T, D = 1, 8, (4096 if DEVICE == "cuda" else 512), 64


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("name", sorted(methods.all_methods()))
def test_forward(benchmark, name, causal):
    cls = methods.get(name)
    cfg = cls.resolve_config({})
    problem = Problem(batch=B, heads=H, kv_heads=H, seq_len=T, head_dim=D, dtype=DTYPE, causal=causal, device=DEVICE)
    reasons = cls.supports(problem, cfg)
    if reasons:
        pytest.skip("; ".join(reasons))
    mod = cls.build(cfg, problem, seed=0).to(DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=g, device=DEVICE).to(problem.torch_dtype) for _ in range(3))

    def call():
        with torch.no_grad():
            out = mod(q, k, v, causal=causal)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return out

    out = benchmark(call)
    assert torch.isfinite(out).all()
