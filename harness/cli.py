"""Command line: `python -m harness run|list|report|compare ...`."""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import sys
from pathlib import Path

from harness.grid import MODES, PRESETS, SweepSpec, default_preset, spec_from_preset
from harness.runner import UsageError

# Model-level tasks register their own sub-commands: a module in this list exposes
# `register_cli(subparsers)` and sets `func` on its parser (see harness/tasks/).
TASK_MODULES: tuple[str, ...] = ("harness.tasks.perplexity", "harness.tasks.fidelity", "harness.tasks.accuracy",
                                  "harness.tasks.distill")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _detect_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness", description="Benchmark harness for efficient attention.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="sweep methods over sequence lengths and shapes",
                       description="Sweep methods x shapes; every cell ends as one typed row in the run directory.")
    r.add_argument("--methods", type=_names, default=None,
                   help="comma-separated method names, each optionally with inline options for one variant, "
                        "e.g. exact,sdpa:backend=cudnn,sdpa:backend=flash (default: every method available "
                        "on the device)")
    r.add_argument("--method-args", nargs="+", action="extend", default=[], metavar="NAME.key=value",
                   help="method options, e.g. sdpa.backend=math (unknown keys are errors)")
    r.add_argument("--preset", choices=sorted(PRESETS), help="named grid (default: cpu or gpu, by device)")
    r.add_argument("--seq-lens", type=_ints, help="e.g. 1024,2048,4096")
    r.add_argument("--batch", type=_ints)
    r.add_argument("--heads", type=_ints)
    r.add_argument("--kv-heads", type=_ints, help="key/value heads (GQA); default: same as --heads")
    r.add_argument("--head-dim", type=_ints)
    r.add_argument("--dtype", type=_names, help="fp32, fp16, bf16 (comma-separated for several)")
    direction = r.add_mutually_exclusive_group()
    direction.add_argument("--causal", dest="direction", action="store_const", const="causal")
    direction.add_argument("--bidirectional", dest="direction", action="store_const", const="bidirectional")
    direction.add_argument("--both-directions", dest="direction", action="store_const", const="both")
    r.add_argument("--mode", type=_names, help=f"comma-separated: {', '.join(MODES)}")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--inputs", default="gaussian", help="'gaussian' or a safetensors file of captured q/k/v")
    r.add_argument("--out", type=Path, help="run directory (default: runs/<time>-<device>)")
    r.add_argument("--resume", action="store_true", help="skip cells already recorded in --out")
    r.add_argument("--dry-run", action="store_true", help="print the grid and exit; writes nothing")
    r.add_argument("--timeout", type=float, default=None, help="seconds per cell (default 120 CPU, 300 CUDA)")
    r.add_argument("--schedule", choices=("static", "dynamic"), default="static",
                   help="under torchrun: static = deterministic cost-balanced assignment of cells to ranks; "
                        "dynamic = each rank takes the next unclaimed cell (better balance, rank per cell varies)")
    r.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all cores)")
    r.add_argument("--cuda-graph", action="store_true", help="time CUDA-graph replays (CUDA only)")
    r.add_argument("--rep-ms", type=float, default=100.0, help="CUDA: milliseconds of timed repetitions")
    r.add_argument("--cpu-budget", type=float, default=0.5, help="CPU: seconds of timed repetitions per cell")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)

    ls = sub.add_parser("list", help="registered methods, available here or not and why")
    ls.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    rep = sub.add_parser("report", help="Markdown/CSV tables and plots from run directories")
    rep.add_argument("runs", nargs="+", type=Path)
    rep.add_argument("--out", type=Path, help="output folder (default: the first run directory)")
    rep.add_argument("--no-plots", action="store_true")
    rep.set_defaults(func=cmd_report)

    cmp_ = sub.add_parser("compare", help="regression check of NEW against BASE (exit 1 on regression)")
    cmp_.add_argument("base", type=Path)
    cmp_.add_argument("new", type=Path)
    cmp_.add_argument("--max-slowdown", default="5%", help="allowed slowdown of latency ratios, e.g. 5%%")
    cmp_.add_argument("--abs-floor-ms", type=float, default=0.03,
                      help="ignore slowdowns smaller than this many milliseconds")
    cmp_.add_argument("--reference-method", default=None,
                      help="latency is compared as a ratio to this method measured in the same run")
    cmp_.add_argument("--max-error-increase", default="1%",
                      help="allowed relative growth of approximation error (err_rel_l2)")
    cmp_.add_argument("--error-abs-floor", type=float, default=1e-6,
                      help="ignore error growth smaller than this (absolute, in relative-L2 units): fp32 rounding "
                           "noise of exact methods differs between CPUs / BLAS builds")
    cmp_.add_argument("--metrics", default="latency,error,status",
                      help="what to compare: latency, error, status (comma-separated)")
    cmp_.set_defaults(func=cmd_compare)

    for mod in TASK_MODULES:
        importlib.import_module(mod).register_cli(sub)
    return p


def _spec_from_args(a, device: str, method_names: list[str]) -> SweepSpec:
    preset = a.preset or default_preset(device)
    spec = spec_from_preset(preset, method_names, device, a.seed)
    for axis in ("seq_lens", "batch", "heads", "kv_heads", "head_dim", "dtype", "mode"):
        if getattr(a, axis) is not None:           # an explicit flag overrides the preset's axis
            setattr(spec, axis, getattr(a, axis))
    if a.direction is not None:
        spec.causal = {"causal": [True], "bidirectional": [False], "both": [True, False]}[a.direction]
    spec.inputs = a.inputs
    return spec


def cmd_run(a) -> int:
    import methods
    from harness.runner import plan, run_sweep, summary_table

    device = _detect_device() if a.device == "auto" else a.device
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda, but torch sees no CUDA device here")
    for dt in a.dtype or []:
        if dt not in ("fp32", "fp16", "bf16", "fp64"):
            raise UsageError(f"--dtype {dt!r}: expected fp32, fp16, bf16 or fp64")
    raw_args = methods.parse_method_args(a.method_args)
    if a.methods is None:
        names = [n for n, cls in methods.all_methods().items() if not cls.availability(device)]
    else:
        names = a.methods
    spec = _spec_from_args(a, device, names)
    cells = plan(spec, raw_args)
    if a.dry_run:
        print(f"# {len(cells)} cells on {device} (preset {a.preset or default_preset(device)}); nothing is run")
        for c in cells:
            print(f"{c.cell_id}  {c.label()}  {dict(c.config) or ''}")
        return 0
    out = a.out or Path("runs") / f"{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{device}"
    timeout = a.timeout or (300.0 if device == "cuda" else 120.0)
    measure = {"rep_ms": a.rep_ms, "cuda_graph": a.cuda_graph, "cpu_budget_s": a.cpu_budget}
    run = run_sweep(spec, cells, out, resume=a.resume, timeout_s=timeout, threads=a.threads,
                    measure_settings=measure, argv=sys.argv[1:], quiet=a.quiet, schedule=a.schedule)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0                               # rank 0 of a distributed sweep reports
    rows = run.rows()
    print(summary_table(rows))
    print(f"\n{len(rows)} rows in {run.path} (report: python -m harness report {run.path})")
    return 0


def cmd_list(a) -> int:
    import methods
    from methods.base import describe, load_errors

    device = _detect_device() if a.device == "auto" else a.device
    entries = []
    for name, cls in methods.all_methods().items():
        d = describe(cls)
        d["why_not"] = cls.availability(device)
        d["available"] = not d["why_not"]
        entries.append(d)
    errors = load_errors()
    if a.json:
        print(json.dumps({"device": device, "methods": entries, "load_errors": errors}, indent=1))
        return 0
    print(f"methods on {device}:")
    width = max(len(e["name"]) for e in entries) if entries else 4
    for e in entries:
        state = "available" if e["available"] else "not available: " + "; ".join(e["why_not"])
        kind = "exact" if e["exact"] else "approx"
        print(f"  {e['name']:<{width}}  {kind:<6}  {state}\n  {'':<{width}}  {'':<6}  {e['summary']}")
    for where, msg in errors.items():
        print(f"  ! failed to load {where}: {msg}")
    return 0


def cmd_report(a) -> int:
    from harness.report import write_report

    for run in a.runs:
        if not (run / "meta.json").exists():
            raise UsageError(f"{run} is not a run directory (no meta.json)")
    out = write_report(a.runs, a.out or a.runs[0], plots=not a.no_plots)
    print(f"report written to {out}")
    return 0


def cmd_compare(a) -> int:
    from harness.compare import compare_runs, parse_percent

    for run in (a.base, a.new):
        if not (run / "meta.json").exists():
            raise UsageError(f"{run} is not a run directory (no meta.json)")
    try:
        slow = parse_percent(a.max_slowdown)
        err = parse_percent(a.max_error_increase)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not a.error_abs_floor >= 0:
        raise UsageError(f"--error-abs-floor must be >= 0, got {a.error_abs_floor}")
    metrics = set(_names(a.metrics))
    bad = metrics - {"latency", "error", "status"}
    if bad:
        raise UsageError(f"--metrics: unknown {', '.join(sorted(bad))}")
    result = compare_runs(a.base, a.new, max_slowdown=slow, abs_floor_ms=a.abs_floor_ms,
                          reference_method=a.reference_method, max_error_increase=err, metrics=metrics,
                          error_abs_floor=a.error_abs_floor)
    print(result.text)
    return 1 if result.regressions else 0


def main(argv: list[str] | None = None) -> int:
    from methods.base import MethodConfigError

    from harness.measure import exact_fp32

    parser = build_parser()
    a = parser.parse_args(argv)
    exact_fp32()                                 # as the run workers: fp32 is fp32 in every command
    try:
        return a.func(a)
    except (UsageError, MethodConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished rows are kept (use --resume to go on)", file=sys.stderr)
        return 130
