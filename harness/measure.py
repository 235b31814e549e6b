"""Latency and peak memory of a callable, measured honestly for the device.

CUDA: `triton.testing.do_bench` (CUDA events, L2 flushed between calls) or CUDA-graph replays;
median with the 20th/80th percentiles. CPU: fixed thread count, repeated wall-clock calls until a time
budget is spent (torch.utils.benchmark style), same statistics.
Memory on CUDA: peak allocated bytes above what was allocated before the call (stats reset per cell).
Memory on CPU: peak resident set size above the level before the call, sampled every 0.5 ms, while
glibc is told (mallopt) to serve allocations >= 64 KiB by mmap, so freed tensors leave RSS at once. That
is an approximation of live tensor bytes; the row names the metric. Timing runs with the threshold at
32 MiB instead (a fixed value near glibc's own adaptive one), so the memory setting never slows timing.
"""
from __future__ import annotations

import gc
import os
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch

CPU_MEMORY_METRIC = "cpu peak RSS above pre-call (sampled 0.5 ms)"
CUDA_MEMORY_METRIC = "cuda max_memory_allocated above pre-call"


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    n: int
    timer: str


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(times_ms: list[float], timer: str) -> Timing:
    return Timing(statistics.median(times_ms), _quantile(times_ms, 0.2), _quantile(times_ms, 0.8), len(times_ms), timer)


def exact_fp32() -> None:
    """The harness's numeric setting for every command (run workers, fidelity, perplexity, accuracy, distill): float32
    matmuls and cuDNN convolutions in true fp32, no TF32 (torch's own default allows TF32 in cuDNN convolutions). A
    method that wants TF32 asks for it in its options (e.g. sea.estimator_precision=tf32, which allows it for its
    own calls only), so "fp32" means the same thing in a latency row and in a quality table."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def time_cuda(fn: Callable[[], object], *, warmup_ms: float = 25, rep_ms: float = 100,
              cuda_graph: bool = False) -> Timing:
    import triton.testing as tt

    if cuda_graph:
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            fn()                                          # warm up on the side stream before capture
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
        torch.cuda.synchronize()
        times = tt.do_bench(graph.replay, warmup=warmup_ms, rep=rep_ms, return_mode="all")
        return summarize(list(times), "cuda-graph replay, do_bench events")
    times = tt.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="all")
    return summarize(list(times), "do_bench cuda events, L2 flushed")


def time_cpu(fn: Callable[[], object], *, warmup: int = 1, min_runs: int = 5, max_runs: int = 100,
             budget_s: float = 0.5) -> Timing:
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (len(times) < max_runs and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return summarize(times, f"cpu wall clock, {torch.get_num_threads()} threads")


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MEASURE = 64 << 10
MMAP_THRESHOLD_TIMING = 32 << 20


def _libc():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def set_mmap_threshold(nbytes: int) -> bool:
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, nbytes))


def _malloc_trim() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def peak_memory_cpu(fn: Callable[[], object], interval_s: float = 0.0005) -> int:
    set_mmap_threshold(MMAP_THRESHOLD_MEASURE)
    try:
        return _peak_rss(fn, interval_s)
    finally:
        set_mmap_threshold(MMAP_THRESHOLD_TIMING)


def _peak_rss(fn: Callable[[], object], interval_s: float) -> int:
    gc.collect()
    _malloc_trim()
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            r = _rss()
            if r > peak[0]:
                peak[0] = r
            time.sleep(interval_s)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out = fn()
        peak[0] = max(peak[0], _rss())
        del out
    finally:
        stop.set()
        th.join()
    return max(0, peak[0] - base)


def peak_memory_cuda(fn: Callable[[], object]) -> int:
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak


def attention_flops(batch: int, heads: int, seq_len: int, head_dim: int, causal: bool, backward: bool) -> float:
    """4*B*H*T^2*D for the forward (two matmuls), halved for causal; forward+backward counts 3.5x forward
    (the backward recomputes QK^T and does four matmuls: 2.5x the forward's)."""
    f = 4.0 * batch * heads * seq_len * seq_len * head_dim
    if causal:
        f /= 2
    return f * 3.5 if backward else f


FLOPS_FORMULA = "fwd 4*B*H*T^2*D (/2 causal); fwd+bwd 3.5x fwd"
