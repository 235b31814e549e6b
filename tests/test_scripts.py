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


def test_sass_counts_reads_opcodes_past_control_codes_and_predicates():
    """scripts/compile_sm90.py's SASS histogram: the opcode after the control field and any predicate, without its
    modifiers; labels and blank lines are not instructions."""
    from scripts.compile_sm90 import sass_counts

    listing = ("Function:_k\n--:-:1:-:8\tLDC R1, c[0x0][0x28];\nLBB0:\n"
               "08:-:-:Y:6\t@!P0 FFMA R2, R3, R4, R5;\n--:-:-:-:1\t@P1 MUFU.EX2 R6, R7;\n"
               "--:-:-:-:2\tFFMA.FTZ R8, R9, R10, R11;\n\n--:-:-:-:1\t@!UP0 BRA LBB0;\n")
    assert sass_counts(listing) == {"LDC": 1, "FFMA": 2, "MUFU": 1, "BRA": 1}


def test_compile_sm90_reports_a_kernel_compiled_without_a_gpu():
    """scripts/compile_sm90.py compiles SEA's bidirectional head for sm_90a through a stand-in driver (no GPU, no
    launch) and reads its registers and SASS from the compiler's outputs; under TRITON_INTERPRET=1 it refuses. Run in
    a subprocess: the interpreter flag is fixed when kernels are imported."""
    import os
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(root)
    cmd = [sys.executable, str(root / "scripts" / "compile_sm90.py"), "--what", "head", "--T", "64", "--heads", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    m = re.search(r"_head_kernel grid \(8, 1\): (\d+) registers, .* (\d+) SASS instructions", done.stdout)
    assert m and 0 < int(m.group(1)) <= 255 and int(m.group(2)) > 100, done.stdout
    assert "HMMA" in done.stdout or "HGMMA" in done.stdout              # the encoder's products, on tensor cores
    refused = subprocess.run(cmd, capture_output=True, text=True, env={**env, "TRITON_INTERPRET": "1"}, timeout=600,
                             check=False)
    assert refused.returncode == 2 and "unset TRITON_INTERPRET" in refused.stderr
