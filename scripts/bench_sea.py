#!/usr/bin/env python
"""SEA forward on CUDA: kernel variants, per-stage times and total latency against cuDNN / flash SDPA.

For each T and direction (B=1, H=16, D=64, bf16 by default) this builds `sea` once per sparse backend with
the same seed (so the same untrained estimator and the same selection), checks every variant's output
against the row kernel (relative L2), times each stage through SEAAttention.stage_profile and the whole
forward with triton.testing.do_bench, and times SDPA (cuDNN and flash backends) in the same process.
Causal runs raise sea.max_len to T (the learned V_I rows).
Each variant also runs per estimator dtype (--estimator-dtypes: sea.estimator_dtype, the CNN decoder's dtype),
the estimator is split into its parts (est_* columns: inputs, performer, encoder, decoder, scaler), and with
--cuda-graph the whole forward is captured once (torch.cuda.graph around module(q, k, v)) and the replay timed
(its output is checked against the eager output). --before reads an earlier run's JSON rows (default: the
committed H200 table) and prints its stage times beside the new ones.

    python scripts/bench_sea.py                       # T = 4096 16384 65536, causal and bidirectional
    python scripts/bench_sea.py --T 4096 --dirs causal --variants triton,triton_tiled --rep-ms 50
    python scripts/bench_sea.py --variants triton --estimator-dtypes fp32,bf16 --cuda-graph
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

STAGES = ("estimator", "topk", "interpolate", "sparse_attention", "mix")
EST_PARTS = ("inputs", "performer", "encoder", "decoder", "scaler")
BEFORE = Path(__file__).resolve().parents[1] / "results" / "nvidia-h200" / "sea-stages" / "rows.jsonl"


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def sdpa_ms(q, k, v, causal, backend, rep_ms):
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    which = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]
    try:
        with sdpa_kernel([which]):
            fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
            fn()
            return triton.testing.do_bench(fn, rep=rep_ms)
    except RuntimeError as exc:                      # backend not available for this shape / build
        print(f"  sdpa[{backend}] unavailable: {str(exc).splitlines()[0][:120]}", file=sys.stderr)
        return float("nan")


def graph_forward(mod, q, k, v, causal, eager_out, bench, rep_ms) -> dict:
    """Capture module(q, k, v) (no padding) in a CUDA graph, replay it, compare with the eager output and
    time the replay. The finite-input check is skipped inside the capture (see SEAAttention._prepare)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):                    # warm-up on a side stream (Triton compiles, caches)
        for _ in range(2):
            mod(q, k, v, causal=causal)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = mod(q, k, v, causal=causal)
    static_out.zero_()                               # the replay must rewrite it
    graph.replay()
    torch.cuda.synchronize()
    res = dict(graph_rel_l2_vs_eager=rel_l2(static_out, eager_out))
    res["graph_ms"] = bench(graph.replay, rep=rep_ms)
    del graph, static_out
    return res


def load_before(path):
    rows = {}
    if path and Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if "error" not in r:
                    rows[(r["T"], r["dir"], r["variant"], r.get("estimator_dtype", "fp32"))] = r
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", default="4096,16384,65536")
    ap.add_argument("--dirs", default="causal,bidir")
    ap.add_argument("--variants", default="triton,triton_tiled", help="sea.backend values; the first is the "
                    "correctness baseline")
    ap.add_argument("--estimator-dtypes", default="fp32", help="sea.estimator_dtype values, e.g. fp32,bf16 "
                    "(the first variant with the first dtype is the correctness baseline)")
    ap.add_argument("--cuda-graph", action="store_true", help="also capture the whole forward in a CUDA graph "
                    "and time its replay (output checked against eager)")
    ap.add_argument("--before", default=str(BEFORE), help="JSON rows of an earlier run to print beside the "
                    "new stage times ('' for none)")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--H", type=int, default=16)
    ap.add_argument("--D", type=int, default=64)
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    ap.add_argument("--rep-ms", type=float, default=100.0)
    ap.add_argument("--args", default="", help="extra sea options, e.g. k=32,K=64")
    ap.add_argument("--json", default=None, help="also write the rows as JSON lines here")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny CPU run of the script's logic "
                    "(TRITON_INTERPRET=1, wall-clock timer, no SDPA backends, no CUDA graph): for CI, not "
                    "for numbers")
    a = ap.parse_args(argv)
    dev = "cpu" if a.cpu_smoke else "cuda"
    if not a.cpu_smoke and not torch.cuda.is_available():
        print("bench_sea.py needs CUDA (or --cpu-smoke)", file=sys.stderr)
        return 2
    if a.cpu_smoke:
        import os
        import time
        os.environ.setdefault("TRITON_INTERPRET", "1")

        def bench(fn, rep=None):
            fn()
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
    else:
        import triton.testing
        bench = triton.testing.do_bench

    from methods.base import DTYPES, Problem, get

    dtype = DTYPES[a.dtype]
    variants = [x for x in a.variants.split(",") if x]
    est_dtypes = [x for x in a.estimator_dtypes.split(",") if x]
    extra = dict(kv.split("=", 1) for kv in a.args.split(",") if kv)
    before = load_before(a.before)
    M = get("sea")
    rows = []
    for T in (int(x) for x in a.T.split(",")):
        for d in a.dirs.split(","):
            causal = d == "causal"
            g = torch.Generator(device=dev).manual_seed(T)
            q, k, v = (torch.randn(a.B, a.H, T, a.D, device=dev, generator=g, dtype=torch.float32).to(dtype)
                       for _ in range(3))
            ref_sdpa = {b: (float("nan") if a.cpu_smoke else sdpa_ms(q, k, v, causal, b, a.rep_ms))
                        for b in ("cudnn", "flash")}
            base_out = None
            for var in variants:
                for edt in est_dtypes:
                    opts = dict(extra, backend=var, max_len=str(max(32768, T)), estimator_dtype=edt)
                    cfg = M.resolve_config(opts)
                    problem = Problem(a.B, a.H, a.H, T, a.D, dtype=a.dtype, causal=causal, device=dev)
                    reasons = M.supports(problem, cfg)
                    if reasons:
                        print(f"T={T} {d} {var} {edt}: unsupported: {'; '.join(reasons)}")
                        continue
                    mod = M.build(cfg, problem, seed=0)
                    row = dict(T=T, dir=d, variant=var, estimator_dtype=edt)
                    out = None
                    try:
                        with torch.no_grad():
                            out = mod(q, k, v, causal=causal)
                            row["impl"] = mod.impl
                            if base_out is None:
                                base_out, row["rel_l2_vs_rows"] = out, 0.0
                            else:
                                row["rel_l2_vs_rows"] = rel_l2(out, base_out)
                            row["nnz"] = int(mod.last_aux["count"].sum())
                            stages = mod.stage_profile(q, k, v, causal=causal,
                                                       timer=lambda fn: bench(fn, rep=a.rep_ms / 2),
                                                       estimator_parts=True)
                            row.update({f"{s}_ms": t for s, t in stages.items()})
                            if not a.cpu_smoke:
                                torch.cuda.reset_peak_memory_stats()
                                base_mem = torch.cuda.memory_allocated()
                            row["total_ms"] = bench(lambda: mod(q, k, v, causal=causal), rep=a.rep_ms)
                            if not a.cpu_smoke:
                                row["peak_mib"] = (torch.cuda.max_memory_allocated() - base_mem) / 2 ** 20
                            if a.cuda_graph and not a.cpu_smoke:
                                try:
                                    row.update(graph_forward(mod, q, k, v, causal, out, bench, a.rep_ms))
                                except Exception as exc:  # noqa: BLE001 - report, keep the eager numbers
                                    row["graph_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                                    torch.cuda.synchronize()
                    except torch.cuda.OutOfMemoryError as exc:
                        row["error"] = f"OOM: {str(exc).splitlines()[0][:100]}"
                    except Exception as exc:          # noqa: BLE001 - report and go on with the next variant
                        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                    row.update({f"sdpa_{b}_ms": ms for b, ms in ref_sdpa.items()})
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    del mod, out
                    gc.collect()
                    if not a.cpu_smoke:
                        torch.cuda.empty_cache()
            del q, k, v, base_out
    print_tables(rows, before, a)
    if a.json:
        with open(a.json, "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    return 0


def _f(x) -> str:
    return "-" if x is None or x != x else f"{x:.3g}"


def print_tables(rows, before, a) -> None:
    name = "CPU smoke (TRITON_INTERPRET)" if a.cpu_smoke else torch.cuda.get_device_name()
    print(f"\nSEA forward, B={a.B} H={a.H} D={a.D} {a.dtype}, {name}  (ms, median; 'new (before)' where an "
          f"earlier row matches: {a.before or 'none'})")
    head = ["T", "dir", "variant", "est dtype", "relL2/base", *STAGES, "total", "graph", "graph relL2",
            "cudnn", "flash", "total/cudnn", "graph/cudnn"]
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        lead = [str(r["T"]), r["dir"], r["variant"], r["estimator_dtype"]]
        if "error" in r:
            print(" | ".join(lead + [r["error"]]))
            continue
        old = before.get((r["T"], r["dir"], r["variant"], r["estimator_dtype"]), {})

        def cell(key):
            return _f(r.get(key)) + (f" ({_f(old[key])})" if key in old else "")

        cudnn = r["sdpa_cudnn_ms"]
        graph = r.get("graph_ms")
        cells = lead + [f"{r['rel_l2_vs_rows']:.2e}", *(cell(s + "_ms") for s in STAGES), cell("total_ms"),
                        _f(graph) if "graph_error" not in r else "error: " + r["graph_error"][:60],
                        f"{r['graph_rel_l2_vs_eager']:.1e}" if "graph_rel_l2_vs_eager" in r else "-",
                        _f(cudnn), _f(r["sdpa_flash_ms"]), _f(r["total_ms"] / cudnn),
                        _f(graph / cudnn) if graph is not None else "-"]
        print(" | ".join(cells))
    print("\nestimator parts (ms): " + ", ".join(EST_PARTS))
    head = ["T", "dir", "variant", "est dtype", "estimator", *EST_PARTS]
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        if "error" not in r:
            print(" | ".join([str(r["T"]), r["dir"], r["variant"], r["estimator_dtype"], _f(r["estimator_ms"]),
                              *(_f(r.get(f"est_{p}_ms")) for p in EST_PARTS)]))


if __name__ == "__main__":
    raise SystemExit(main())
