#!/usr/bin/env python
"""SEA's forward, stage by stage, beside dense attention: stacked bars from a harness run's rows.

One panel per (direction, sequence length), linear axis: a bar per method; SEA variants with `extra.stages_ms`
stacked by stage (estimator, top-k, interpolation, sparse attention, mix; each timed alone, so their sum differs
from the measured forward a little), and every method's measured forward latency as a black dash with its value.

    python scripts/plot_sea_stages.py results/nvidia-h200/sea-vs-dense/eager --out stages.png
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))       # methods/ (SEA's defaults) from any directory

STAGES = ("estimator", "topk", "interpolate", "sparse_attention", "mix")


@functools.lru_cache(maxsize=1)
def sea_defaults() -> dict:
    """SEA's options at their defaults, as the method registry resolves them (once: label() runs per row)."""
    from methods.base import get

    return dict(get("sea").resolve_config({}))


def label(row: dict) -> str:
    c = row.get("config") or {}
    if row["method"] != "sea":
        return f"{row['method']}[{c['backend']}]" if "backend" in c else row["method"]
    # every option that differs from the method's defaults (max_len aside: a sweep sets it for its longest T), the
    # common ones shortened; two variants never share a label, so none drops out of the plot
    short = {"performer_dtype": "perf", "performer_backend": "front", "mix_backend": "mix", "compile": "compile",
             "query_blocks": "blocks", "query_chunk": "chunk", "estimator_precision": "prec",
             "estimator_dtype": "dec", "topk_backend": "topk", "decoder_backend": "decoder", "backend": "sparse",
             "shared_keys": "shared", "shared_span": "span", "cuda_graph": "graph", "sparse_pieces": "pieces"}
    defaults = sea_defaults()
    diff = [f"{short.get(k, k)}={c[k]}" for k in c if k != "max_len" and c[k] != defaults.get(k)]
    return "sea" + (f"[{','.join(diff)}]" if diff else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    rows = [json.loads(line) for line in (a.run / "rows.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["status"] == "ok" and r.get("latency_ms") is not None]
    if not rows:
        print(f"{a.run}: no timed rows", file=sys.stderr)
        return 1
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = sorted({r["causal"] for r in rows}, reverse=True)
    Ts = sorted({r["seq_len"] for r in rows})
    fig, axes = plt.subplots(len(dirs), len(Ts), figsize=(3.6 * len(Ts), 3.6 * len(dirs)), squeeze=False)
    colors = dict(zip(STAGES, ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")))
    for ax_row, causal in zip(axes, dirs):
        for ax, T in zip(ax_row, Ts):
            sub = [r for r in rows if r["causal"] == causal and r["seq_len"] == T]
            names = sorted({label(r) for r in sub}, key=lambda n: (n.startswith("sea"), n))
            for x, name in enumerate(names):
                r = next(r for r in sub if label(r) == name)
                stages = (r.get("extra") or {}).get("stages_ms") or {}
                bottom = 0.0
                for st in STAGES if stages else ():
                    ax.bar(x, stages.get(st, 0.0), 0.7, bottom=bottom, color=colors[st],
                           label=st if x == len(names) - 1 else None)
                    bottom += stages.get(st, 0.0)
                ax.plot(x, r["latency_ms"], "k_", markersize=22, markeredgewidth=2,
                        label="measured forward" if x == 0 else None)
                ax.annotate(f"{r['latency_ms']:.3g}", (x, r["latency_ms"]), fontsize=7, ha="center",
                            va="bottom", xytext=(0, 2), textcoords="offset points")
            ax.set_xticks(range(len(names)), [n.replace(",", ",\n").replace("[", "\n[") for n in names], fontsize=6)
            ax.set_title(f"{'causal' if causal else 'bidirectional'}, T = {T // 1024}k", fontsize=9)
            ax.set_ylabel("ms", fontsize=8)
            ax.grid(True, axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
