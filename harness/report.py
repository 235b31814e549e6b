"""Tables (Markdown, CSV) and plots (latency, memory, error vs latency) from one or more run directories."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from harness.provenance import device_kind
from harness.store import RunDir

GROUP = ["device_kind", "dtype", "causal", "mode", "batch", "heads", "kv_heads", "head_dim"]


def load_rows(runs: list[Path]) -> tuple[pd.DataFrame, list[dict]]:
    frames, metas = [], []
    for path in runs:
        run = RunDir(path)
        meta = run.meta()
        metas.append(meta)
        rows = [dataclasses.asdict(r) for r in run.rows()]
        if not rows:
            continue
        df = pd.DataFrame(rows)
        df["device_kind"] = device_kind(meta)
        df["run"] = str(path)
        frames.append(df)
    if not frames:
        return pd.DataFrame(), metas
    df = pd.concat(frames, ignore_index=True)
    df["variant"] = df.apply(_variant, axis=1)
    return df, metas


def _variant(row) -> str:
    """Method name plus its non-default options, e.g. 'sdpa[backend=cudnn]'."""
    cfg = row["config"] or {}
    from methods.base import get

    try:
        defaults = get(row["method"]).label_base(cfg)
    except KeyError:
        defaults = {}
    diff = {k: v for k, v in cfg.items() if defaults.get(k, object()) != v}
    return row["method"] + (("[" + ",".join(f"{k}={v}" for k, v in sorted(diff.items())) + "]") if diff else "")


def _fmt_cell(r) -> str:
    if r["status"] == "ok":
        lat = r.get("latency_ms")
        if lat is None or lat != lat:                    # rows that time nothing (fidelity runs): no latency
            return "ok (untimed)"
        return f"{lat:.3g}"
    return r["status"]


def latency_table(df: pd.DataFrame) -> str:
    """One Markdown table per problem group: rows = variant, columns = T, cells = median ms or status."""
    parts = []
    for key, g in df.groupby(GROUP, dropna=False, sort=True):
        title = ", ".join(f"{k}={v}" for k, v in zip(GROUP, key))
        pivot = g.assign(cell=g.apply(_fmt_cell, axis=1)).pivot_table(
            index="variant", columns="seq_len", values="cell", aggfunc="first")
        mem = g[g.status == "ok"].pivot_table(index="variant", columns="seq_len", values="memory_bytes",
                                               aggfunc="first") / 2**20
        err = g[g.status == "ok"].pivot_table(index="variant", columns="seq_len", values="err_rel_l2",
                                               aggfunc="first")
        parts.append(f"### {title}\n\nLatency, median ms (or the cell's status):\n\n" + _md(pivot.fillna("-"))
                     + "\n\nPeak memory above inputs, MiB:\n\n" + _md(mem.round(2).fillna("-"))
                     + "\n\nRelative L2 error vs exact attention:\n\n" + _md(err.map(lambda x: f"{x:.2e}").fillna("-")
                                                                               if not err.empty else err))
    return "\n\n".join(parts)


def _md(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([df.index.name or ""] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row.tolist()]) + " |")
    return "\n".join(lines)


def failures_table(df: pd.DataFrame) -> str:
    bad = df[df.status != "ok"]
    if bad.empty:
        return "(no failures)"
    lines = ["| variant | T | dtype | causal | mode | status | reason |", "|---|---|---|---|---|---|---|"]
    for _, r in bad.sort_values(["variant", "seq_len"]).iterrows():
        reason = str(r["reason"]).replace("|", "/").replace("\n", " ")[:200]
        lines.append(f"| {r['variant']} | {r['seq_len']} | {r['dtype']} | {r['causal']} | {r['mode']} | "
                     f"{r['status']} | {reason} |")
    return "\n".join(lines)


def legend_below(fig, ax, *, width_chars: int = 220) -> None:
    """One legend for the figure, under its panels, each label wrapped to the figure's width: variant labels carry
    every option (`sea:performer_dtype=bf16:...`) and an in-panel legend of them covers the data or leaves the
    figure. The figure grows by the legend's height; the panels keep theirs."""
    import textwrap

    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        fig.tight_layout()
        return
    wrapped = [textwrap.fill(label, width_chars, subsequent_indent="    ") for label in labels]
    lines = sum(w.count("\n") + 1 for w in wrapped)
    w, h = fig.get_size_inches()
    extra = 0.15 * lines + 0.25                                          # inches: 7-point lines and a margin
    fig.set_size_inches(w, h + extra)
    fig.legend(handles, wrapped, loc="lower left", bbox_to_anchor=(0.01, 0.0), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, extra / (h + extra), 1, 1))


def make_plots(df: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    written = []
    ok = df[(df.status == "ok") & pd.to_numeric(df.latency_ms, errors="coerce").notna()]   # timed rows only
    for key, g in ok.groupby(GROUP, dropna=False, sort=True):
        tag = "_".join(str(v) for v in key).replace("/", "-").replace(" ", "")
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        for variant, s in g.sort_values("seq_len").groupby("variant"):
            axes[0].errorbar(s.seq_len, s.latency_ms, yerr=[s.latency_ms - s.latency_p20_ms,
                                                            s.latency_p80_ms - s.latency_ms],
                             marker="o", capsize=2, label=variant)
            axes[1].plot(s.seq_len, s.memory_bytes / 2**20, marker="o", label=variant)
            if s.err_rel_l2.notna().any():
                axes[2].scatter(s.latency_ms, s.err_rel_l2.clip(lower=1e-12), label=variant)
        axes[0].set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="latency, ms (median, p20-p80)")
        axes[1].set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="peak memory above inputs, MiB")
        axes[2].set(xscale="log", yscale="log", xlabel="latency, ms", ylabel="relative L2 error vs exact")
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
        lens = sorted(int(t) for t in g.seq_len.unique())
        for ax in axes[:2]:                              # the swept lengths as ticks (log minor labels collide)
            ax.set_xticks(lens, [str(t) for t in lens])
            ax.xaxis.set_minor_formatter(NullFormatter())
        title = ", ".join(f"{k}={v}" for k, v in zip(GROUP, key))
        fig.suptitle(title, fontsize=9)
        legend_below(fig, axes[0])
        path = out / f"plot_{tag}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _metrics(run: str) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def training_section(df: pd.DataFrame, out: Path, plots: bool = True) -> list[str]:
    """Distillation runs (rows of mode 'train'): the evaluation at every evaluated step per method, the last
    training losses, and loss / evaluation curves from each run's metrics.jsonl."""
    lines = []
    latest = df.sort_values("run").groupby(["run", "variant"], sort=False).tail(1)
    curves = {}
    for _, r in latest.iterrows():
        curves[(r["variant"], r["run"])] = _metrics(r["run"])
    key = next((k for k in ("eval_ppl", "eval_accuracy")
                if any(k in m for ms in curves.values() for m in ms)), None)
    steps = sorted({m["step"] for ms in curves.values() for m in ms if m.get("kind") == "eval" and key in m})
    head = ["method", "steps done", "teacher", *[f"step {s}" for s in steps], "last loss", "train s", "notes"]
    lines += [f"Evaluation ({key or 'none'}) of the student at each evaluated step; teacher = the model with its own "
              "attention.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (variant, run), ms in curves.items():
        r = latest[(latest.variant == variant) & (latest.run == run)].iloc[0]
        extra = r["extra"] or {}
        evals = {m["step"]: m[key] for m in ms if m.get("kind") == "eval" and key in m}
        train = [m for m in ms if m.get("kind") == "train"]
        teacher = (extra.get("teacher") or {}).get(key)
        cells = [variant, str(extra.get("steps_done", (extra.get("final") or {}).get("step", "?"))),
                 f"{teacher:.4g}" if teacher is not None else "-",
                 *[f"{evals[s]:.4g}" if s in evals else "-" for s in steps],
                 f"{train[-1]['loss']:.4g}" if train else "-",
                 f"{train[-1].get('elapsed_s', float('nan')):.0f}" if train else "-",
                 "; ".join(extra.get("notes") or [])]
        lines.append("| " + " | ".join(cells) + " |")
    if plots and curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
        for (variant, _), ms in curves.items():
            train = [m for m in ms if m.get("kind") == "train"]
            if train:
                axes[0].plot([m["step"] for m in train], [m["loss"] for m in train], label=variant, lw=0.8)
            ev = [m for m in ms if m.get("kind") == "eval" and key in m]
            if ev:
                axes[1].plot([m["step"] for m in ev], [m[key] for m in ev], marker="o", label=variant)
        axes[0].set(yscale="log", xlabel="step", ylabel="training loss (weighted sum of terms)")
        axes[1].set(yscale="log" if key == "eval_ppl" else "linear", xlabel="step", ylabel=key or "")
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
        legend_below(fig, axes[1] if axes[1].get_legend_handles_labels()[0] else axes[0])
        path = out / "training_curves.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        lines += ["", f"![training curves]({path.name})"]
    return lines


def write_report(runs: list[Path], out: Path, plots: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df, metas = load_rows(runs)
    lines = ["# Attention benchmark report", ""]
    for path, meta in zip(runs, metas):
        dev = meta.get("device_info", {})
        vers = meta.get("versions", {})
        lines += [f"- run `{path}`: {dev.get('device_name', '?')}, torch {vers.get('torch', '?')}, "
                  f"triton {vers.get('triton', '-')}, commit {meta.get('git', {}).get('commit', '?')[:12]}"
                  f"{' (dirty)' if meta.get('git', {}).get('dirty') else ''}, command `{meta.get('command', '?')}`"]
    train = df[df["mode"] == "train"] if not df.empty else df
    if not train.empty:
        lines += ["", "## Training (distillation)", "", *training_section(train, out, plots)]
        df = df[df["mode"] != "train"]
    if df.empty:
        lines += ["", "(no rows)" if train.empty else ""]
    else:
        from harness.runner import summary_table
        from harness.rows import Row

        lines += ["", "## Summary", "", summary_table([Row.from_dict(r) for r in df.to_dict("records")]),
                  "", "## Results", "", latency_table(df), "", "## Failures", "", failures_table(df)]
        cols = [c for c in df.columns if c not in ("config", "extra")]
        flat = df[cols].copy()
        flat["config"] = df["config"].map(lambda c: json.dumps(c, sort_keys=True))
        flat.to_csv(out / "rows.csv", index=False)
        if plots:
            for p in make_plots(df, out):
                lines += ["", f"![{p.stem}]({p.name})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"
