#!/usr/bin/env python
"""Where SEA's forward spends its GPU time, kernel by kernel (torch.profiler), for one T and direction.

Builds `sea` through the method registry (B=1, H=16, D=64, bf16 q/k/v by default, untrained estimator, the
given sea options), runs a few warm-up forwards, then profiles --iters forwards and prints the CUDA kernels
sorted by total device time (ms per forward, calls per forward, share of the forward), plus the forward's
wall time measured with CUDA events outside the profiler. Used to attribute the estimator's time (issue 7).

    python scripts/profile_sea.py --T 65536 --causal --opts performer_dtype=bf16
    python scripts/profile_sea.py --T 65536 --opts performer_dtype=bf16,compile=estimator --top 30
    python scripts/profile_sea.py --T 32768 --causal --backward    # forward + backward, as the harness times it
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def host_profile(fn, top: int) -> None:
    """One call of fn under cProfile (synchronised at the end), the top Python functions by own time: where the
    host spends a host-bound forward (launches, small tensor operations, syncs)."""
    import cProfile
    import io
    import pstats

    pr = cProfile.Profile()
    pr.enable()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    pr.disable()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(top)
    print("host profile of one forward (cProfile, by own time):")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:8000])


def ops_profile(step, top: int, iters: int, trace: str) -> None:
    """Host and device profile of `iters` steps: the `top` host operations by device time including their
    children (the same kernel counts once per enclosing operation, so shares overlap and do not add up), then the
    Chrome trace of the last step when `trace` names a file."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    if top:
        with profile(activities=acts) as prof:
            for _ in range(iters):
                step()
            torch.cuda.synchronize()
        rows = []
        for ev in prof.key_averages():
            t = getattr(ev, "device_time_total", None)
            t = ev.cuda_time_total if t is None else t
            cpu = ev.cpu_time_total
            if t > 0 and ev.count > 0 and ev.device_type.name == "CPU":
                rows.append((t / 1e3 / iters, cpu / 1e3 / iters, ev.count / iters, ev.key))
        rows.sort(reverse=True)
        print(f"host operations by device time, inclusive ({iters} steps):")
        print(f"{'dev ms':>8} {'host ms':>8} {'calls':>6}  operation")
        for t, cpu, n, key in rows[:top]:
            print(f"{t:8.3f} {cpu:8.3f} {n:6.1f}  {key[:110]}")
    if trace:
        with profile(activities=acts) as prof:
            step()
            torch.cuda.synchronize()
        prof.export_chrome_trace(trace)
        print(f"trace of one step: {trace}")


def project_site(stack, depth: int = 2) -> str:
    """The innermost `depth` frames of a profiler stack (innermost first) that lie in this project's methods/,
    kernels/ or harness/ folders, shortened to the path from that folder: 'methods/sea/layer.py(512): f < ...'."""
    out = []
    for frame in stack or []:
        for top in ("methods/", "kernels/", "harness/"):
            i = frame.find(top)
            if i >= 0 and (i == 0 or frame[i - 1] in "/\\"):
                out.append(frame[i:])
                break
        if len(out) == depth:
            break
    return " < ".join(out) or "-"


def sites_profile(step, top: int, iters: int) -> None:
    """Host operations by the device time of the kernels they launch themselves (not their children's), each with
    the innermost frames of this project's code that called it (torch.profiler with stacks): which line of SEA a
    small launch comes from. Kernels launched by Triton or compiled regions without an aten operation around them
    are not listed here (the kernel table names them)."""
    from torch.profiler import ProfilerActivity, profile

    from torch._C._profiler import _ExperimentalConfig

    # verbose: without it the ops' Python stacks come back empty (torch 2.11 on the H200, 2.13 here)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True,
                 experimental_config=_ExperimentalConfig(verbose=True)) as prof:
        for _ in range(iters):
            step()
        torch.cuda.synchronize()
    rows = []
    for ev in prof.key_averages(group_by_stack_n=16):
        t = getattr(ev, "self_device_time_total", None)
        t = ev.self_cuda_time_total if t is None else t
        if t > 0 and ev.count > 0 and ev.device_type.name == "CPU":
            rows.append((t / 1e3 / iters, ev.count / iters, ev.key, project_site(ev.stack)))
    rows.sort(reverse=True)
    print(f"host operations by their own kernels' device time, with the calling lines ({iters} steps):")
    print(f"{'dev ms':>8} {'calls':>6}  operation  <- site")
    for t, n, key, site in rows[:top]:
        print(f"{t:8.3f} {n:6.1f}  {key[:40]}  <- {site[:150]}")


def triton_kernel_stats() -> list[str]:
    """One line per compiled Triton kernel of the project's kernels/ modules imported so far: registers per thread
    and spilled registers (from the loaded binary), warps, stages, shared memory bytes, and the constexprs' key."""
    from triton.runtime.jit import JITFunction

    lines = []
    for mod_name, module in sorted(sys.modules.items()):
        if not mod_name.startswith("kernels.") or module is None:
            continue
        for attr, fn in sorted(vars(module).items()):
            if not isinstance(fn, JITFunction):
                continue
            for entry in getattr(fn, "device_caches", {}).values():
                for key, kern in entry[0].items():
                    md = getattr(kern, "metadata", None)
                    n_regs, n_spills = getattr(kern, "n_regs", None), getattr(kern, "n_spills", None)
                    lines.append(f"{mod_name}.{attr}: {n_regs} registers, {n_spills} spilled, "
                                 f"{getattr(md, 'num_warps', '?')} warps, {getattr(md, 'num_stages', '?')} stages, "
                                 f"{getattr(md, 'shared', '?')} B shared  [{str(key)[:160]}]")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=65536)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    ap.add_argument("--opts", default="", help="sea options, comma-separated key=value")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=3, help="forwards before timing (compiles, autotunes)")
    ap.add_argument("--host", action="store_true",
                    help="also profile the host side of one forward (cProfile: Python functions by own time), for "
                         "host-bound calls such as query blocks")
    ap.add_argument("--backward", action="store_true",
                    help="profile forward + backward as the harness's fwd+bwd cells time it: the output's gradient "
                         "to q, k, v (seeded Gaussian output gradient)")
    ap.add_argument("--ops", type=int, default=0, metavar="N",
                    help="also list the N host-side operations with the most device time, inclusive of what they "
                         "launch (aten ops, autograd backward nodes, compiled regions): which step the kernels serve")
    ap.add_argument("--sites", type=int, default=0, metavar="N",
                    help="also list the N host operations whose own kernels take the most device time, each with "
                         "the project lines that called it (profiler stacks): where small launches come from")
    ap.add_argument("--trace", default="", metavar="FILE",
                    help="also write a Chrome trace (host and device) of one step to FILE: launch gaps, host syncs")
    ap.add_argument("--kernel-stats", action="store_true",
                    help="after the profile, each compiled Triton kernel's registers, spills, warps, stages, shared "
                         "memory")
    ap.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
                    help="set a module constant before building (e.g. kernels.sea_sparse_rows_bwd.BACKWARD=row, "
                         "methods.sea.layer.AUTO_ROWS_GRAD=True); the value is a Python literal or a plain string")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("profile_sea.py needs a CUDA device", file=sys.stderr)
        return 2
    from scripts._sea_setup import build_sea, gaussian_qkv, parse_opts, set_constants

    set_constants(a.set)

    mod = build_sea(parse_opts(a.opts), T=a.T, causal=a.causal, heads=a.heads, head_dim=a.head_dim, dtype=a.dtype,
                    backward=a.backward)
    q, k, v, g = gaussian_qkv(a.T, heads=a.heads, head_dim=a.head_dim, dtype=a.dtype)
    if a.backward:
        q, k, v = (x.requires_grad_() for x in (q, k, v))
        grad_out = torch.randn(q.shape, device=q.device, dtype=q.dtype, generator=g)

        def step():
            return torch.autograd.grad(mod(q, k, v, causal=a.causal), (q, k, v), grad_out)
    else:
        def step():
            return mod(q, k, v, causal=a.causal)
    with torch.set_grad_enabled(a.backward):
        for _ in range(a.warmup):
            step()
        torch.cuda.synchronize()
        if a.host:
            host_profile(step, a.top)
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(a.iters):
            step()
        end.record()
        torch.cuda.synchronize()
        wall = start.elapsed_time(end) / a.iters
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(a.iters):
                step()
            torch.cuda.synchronize()
        if a.ops or a.trace:
            ops_profile(step, a.ops, a.iters, a.trace)
        if a.sites:
            sites_profile(step, a.sites, a.iters)
    rows = []
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None)
        if t is None:
            t = ev.cuda_time_total
        if t > 0 and ev.count > 0:
            rows.append((t / 1e3 / a.iters, ev.count / a.iters, ev.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    what = "forward+backward" if a.backward else "forward"
    print(f"T={a.T} causal={a.causal} {what} opts={a.opts or '-'} impl={mod.impl}")
    print(f"{what} wall {wall:.3f} ms (CUDA events, {a.iters} calls); kernels sum {total:.3f} ms per call; "
          f"peak memory {peak:.0f} MiB above what the timed steps started with")
    print(f"{'ms/call':>8} {'calls':>6} {'share':>6}  kernel")
    for t, n, key in rows[:a.top]:
        print(f"{t:8.3f} {n:6.1f} {t / total:6.1%}  {key[:110]}")
    rest = rows[a.top:]
    if rest:
        print(f"{sum(r[0] for r in rest):8.3f} {sum(r[1] for r in rest):6.1f}         ({len(rest)} other kernels)")
    if a.kernel_stats:
        print("compiled Triton kernels (registers per thread, spills):")
        for line in triton_kernel_stats():
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
