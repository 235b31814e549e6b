#!/usr/bin/env python
"""The longest sequence each method fits on this GPU: one forward per (method, T), T doubling, until it runs out of
memory (or a forward gets too slow to try the next T within the time cap).

For every method variant (`name[:key=value...]`, as `python -m harness run --methods` takes them; a method with a
`max_len` option gets max_len = T unless one is given) and direction, T runs over --start, 2 --start, ... --stop:
the inputs (bf16 Gaussian q, k, v [B, H, T, D]) are allocated, the peak-memory counter is reset, one forward runs
under no_grad and is synchronised (it fits or it does not); when it took at most --max-sec / 4 a second forward gives
the steady-state peak (the first call's peak also counts one-time allocations). Each attempt becomes one JSON line in
--out (status ok / oom / inputs-oom / error / unsupported / not-tried, peak bytes above the inputs of the first and
the second call, seconds of the first), and a table is printed at the end.
A method stops at its first failure; after a forward slower than --max-sec the next T (at least twice the time) is
not tried and the row says so: that T's fit is then unknown, not a failure.

    python scripts/fit_probe.py --methods sdpa:backend=cudnn,sea:query_blocks=64 --causal --start 262144 \\
        --stop 8388608 --max-sec 60 --out fit.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    name, *pairs = spec.split(":")
    opts = {}
    for p in pairs:
        if "=" not in p:
            raise SystemExit(f"method variant {spec!r}: option {p!r} is not key=value")
        key, val = p.split("=", 1)
        opts[key] = val
    return name, opts


def attempt(cls, opts: dict, *, T: int, causal: bool, a, dt) -> dict:
    from methods.base import Problem

    opts = dict(opts)
    if "max_len" in cls.option_map() and "max_len" not in opts:
        opts["max_len"] = str(T)
    row = dict(T=T, causal=causal, batch=a.batch, heads=a.heads, head_dim=a.head_dim, dtype=a.dtype)
    try:
        cfg = cls.resolve_config(opts)
        prob = Problem(a.batch, a.heads, a.heads, T, a.head_dim, dtype=a.dtype, causal=causal, device="cuda")
        reasons = cls.supports(prob, cfg)
    except Exception as e:                                               # noqa: BLE001 - recorded, the probe goes on
        return dict(row, status="error", reason=f"{type(e).__name__}: {e}")
    if reasons:
        return dict(row, status="unsupported", reason="; ".join(reasons))
    q = k = v = mod = out = None
    try:
        g = torch.Generator(device="cuda").manual_seed(0)
        try:
            q, k, v = (torch.randn(a.batch, a.heads, T, a.head_dim, device="cuda", dtype=dt, generator=g)
                       for _ in range(3))
        except torch.cuda.OutOfMemoryError:
            return dict(row, status="inputs-oom", reason="q, k, v alone do not fit")
        mod = cls.build(cfg, prob, seed=0)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = mod(q, k, v, causal=causal)
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        peak_first = torch.cuda.max_memory_allocated() - base
        if not torch.isfinite(out).all():
            return dict(row, status="error", reason="non-finite output", seconds=secs)
        peak = None
        if secs <= a.max_sec / 4:                    # a second call: the steady-state peak (no one-time allocations)
            del out
            out = None
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            with torch.no_grad():
                out = mod(q, k, v, causal=causal)
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        return dict(row, status="ok", seconds=round(secs, 3), peak_first_call=peak_first, peak_above_inputs=peak,
                    impl=getattr(mod, "impl", ""))
    except torch.cuda.OutOfMemoryError as e:
        return dict(row, status="oom", reason=str(e).splitlines()[0][:200])
    except Exception as e:                                               # noqa: BLE001
        return dict(row, status="error", reason=f"{type(e).__name__}: {str(e)[:300]}")
    finally:
        del q, k, v, mod, out
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", required=True, help="comma-separated variants, e.g. sdpa:backend=flash,sea")
    d = ap.add_mutually_exclusive_group()
    d.add_argument("--causal", action="store_true")
    d.add_argument("--both-directions", action="store_true")
    ap.add_argument("--start", type=int, default=65536)
    ap.add_argument("--stop", type=int, default=1 << 24)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    ap.add_argument("--max-sec", type=float, default=60.0, help="do not try a longer T after a forward this slow")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("fit_probe.py needs a CUDA device", file=sys.stderr)
        return 2
    if a.start < 1 or a.stop < a.start:
        print(f"--start {a.start} / --stop {a.stop}: need 1 <= start <= stop", file=sys.stderr)
        return 2
    import methods

    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    dirs = [True, False] if a.both_directions else [a.causal]
    total = torch.cuda.get_device_properties(0).total_memory
    rows = []
    for spec in a.methods.split(","):
        name, opts = parse_variant(spec)
        cls = methods.all_methods().get(name)
        if cls is None:
            print(f"unknown method {name!r}", file=sys.stderr)
            return 2
        for causal in dirs:
            T = a.start
            while T <= a.stop:
                r = dict(method=spec, device=torch.cuda.get_device_name(0), device_memory=total,
                         torch=torch.__version__, **attempt(cls, opts, T=T, causal=causal, a=a, dt=dt))
                print(json.dumps(r), flush=True)
                rows.append(r)
                with a.out.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                if r["status"] != "ok":
                    break
                if r["seconds"] > a.max_sec and 2 * T <= a.stop:
                    r2 = dict(r, T=2 * T, status="not-tried", seconds=None, peak_above_inputs=None,
                              peak_first_call=None,
                              reason=f"time cap: the forward at T={T} took {r['seconds']:.1f} s > "
                                     f"--max-sec {a.max_sec}")
                    print(json.dumps(r2), flush=True)
                    rows.append(r2)
                    with a.out.open("a") as f:
                        f.write(json.dumps(r2) + "\n")
                    break
                T *= 2
    print("\n| method | direction | longest T that ran | its peak above the inputs | what stopped the probe |")
    print("|---|---|---|---|---|")
    for spec in a.methods.split(","):
        for causal in dirs:
            mine = [r for r in rows if r["method"] == spec and r["causal"] == causal]
            ok = [r for r in mine if r["status"] == "ok"]
            longest = f"{ok[-1]['T']}" if ok else "none"
            peak = "-"
            if ok:
                second = ok[-1]["peak_above_inputs"]
                peak = (f"{ok[-1]['peak_first_call'] / 2**30:.2f} GiB first call"
                        + ("" if second is None else f", {second / 2**30:.2f} GiB second"))
            last = mine[-1] if mine else None
            why = ("--stop reached" if last is None or last["status"] == "ok"
                   else f"T={last['T']}: {last['status']} ({last.get('reason', '')[:90]})")
            print(f"| {spec} | {'causal' if causal else 'bidirectional'} | {longest} | {peak} | {why} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
