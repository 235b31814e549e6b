"""Helpers of the device scripts under scripts/ that can run without a GPU."""
from __future__ import annotations

import sys
import types

import pytest

triton = pytest.importorskip("triton")


def test_triton_kernel_stats_lists_each_compiled_kernel(monkeypatch):
    """scripts/profile_sea.py --kernel-stats: one line per compiled kernel of a kernels.* module (registers, spills,
    warps, stages, shared memory), nothing for modules outside kernels/ or kernels not compiled."""
    import triton.language as tl

    from scripts.profile_sea import triton_kernel_stats

    def body(X, N: tl.constexpr):
        tl.store(X + tl.arange(0, N), 0.0)

    compiled, idle, outside = (triton.JITFunction(body) for _ in range(3))
    md = types.SimpleNamespace(num_warps=8, num_stages=2, shared=4096)
    kern = types.SimpleNamespace(n_regs=168, n_spills=12, metadata=md)
    compiled.device_caches = {0: ({"N=128": kern}, None, None, None, None)}
    outside.device_caches = {0: ({"N=64": kern}, None, None, None, None)}
    fake = types.ModuleType("kernels._stats_probe")
    fake.compiled_kernel, fake.idle_kernel = compiled, idle
    other = types.ModuleType("elsewhere._stats_probe")
    other.outside_kernel = outside
    monkeypatch.setitem(sys.modules, "kernels._stats_probe", fake)
    monkeypatch.setitem(sys.modules, "elsewhere._stats_probe", other)
    lines = [ln for ln in triton_kernel_stats() if "_stats_probe" in ln]
    assert lines == ["kernels._stats_probe.compiled_kernel: 168 registers, 12 spilled, 8 warps, 2 stages, "
                     "4096 B shared  [N=128]"]
