"""Regression check between two runs of the same device kind.

Cells are matched by identity: method, the options that differ from the method's current defaults, shape,
dtype, direction, mode, seed, inputs. (So a method that gains an option keeps matching its baseline; an option
whose default changes makes new cells.)
- status: a cell that was `ok` and is not any more is a regression.
- error: err_rel_l2 growing by more than --max-error-increase (relative) and by more than --error-abs-floor
  (absolute) is a regression. The floor keeps rounding noise out: an exact method's fp32 error (~2-4e-7 relative L2 at
  the CPU smoke's sizes) moves by ~20 % between CPUs whose BLAS kernels sum in another order (the committed CPU
  baseline came from an AMD EPYC; an Intel Xeon gave 2.98e-7 -> 3.61e-7), while every approximate method's error is
  orders of magnitude above it.
- latency: with --reference-method, each cell's latency is divided by the reference method's latency on
  the same problem *in the same run*, and those ratios are compared, so a machine that is uniformly
  slower or busier does not trip the check. A slowdown counts only when it exceeds --max-slowdown and
  also --abs-floor-ms in absolute terms (the ratio change times the new run's reference latency).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.provenance import device_kind
from harness.rows import Row
from harness.runner import UsageError
from harness.store import RunDir


def parse_percent(text: str) -> float:
    t = str(text).strip()
    try:
        return float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError(f"expected a percentage like 5% or a fraction like 0.05, got {text!r}") from None


def _defaults(method: str) -> dict:
    import methods

    try:
        return {o.name: o.default for o in methods.get(method).options}
    except KeyError:          # a method no longer registered: compare its options as recorded
        return {}


def match_key(r: Row) -> tuple:
    """A row's identity for matching across runs (see the module docstring)."""
    defaults = _defaults(r.method)
    opts = tuple(sorted((k, str(v)) for k, v in r.config.items() if k not in defaults or defaults[k] != v))
    return (r.method, opts) + _problem_key(r)


def _problem_key(r: Row) -> tuple:
    return (r.batch, r.heads, r.kv_heads, r.seq_len, r.head_dim, r.dtype, r.causal, r.mode, r.device, r.seed,
            r.inputs)


@dataclass
class Comparison:
    regressions: list[str] = field(default_factory=list)
    improvements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    matched: int = 0

    @property
    def text(self) -> str:
        lines = [f"compared {self.matched} cells: {len(self.regressions)} regressions, "
                 f"{len(self.improvements)} improvements"]
        lines += [f"REGRESSION {x}" for x in self.regressions]
        lines += [f"improved   {x}" for x in self.improvements]
        lines += [f"note       {x}" for x in self.notes]
        return "\n".join(lines)


def _label(r: Row) -> str:
    cfg = ",".join(f"{k}={v}" for k, v in sorted(r.config.items()))
    return (f"{r.method}[{cfg}] T={r.seq_len} B={r.batch} H={r.heads}/{r.kv_heads} D={r.head_dim} {r.dtype} "
            f"{'causal' if r.causal else 'bidir'} {r.mode}")


def _ref_latency(rows: list[Row], method: str) -> dict[tuple, float]:
    return {_problem_key(r): r.latency_ms for r in rows if r.method == method and r.status == "ok"
            and r.latency_ms}


def compare_runs(base: Path, new: Path, *, max_slowdown: float, abs_floor_ms: float, reference_method: str | None,
                 max_error_increase: float, metrics: set[str], error_abs_floor: float = 0.0) -> Comparison:
    b_run, n_run = RunDir(base), RunDir(new)
    kb, kn = device_kind(b_run.meta()), device_kind(n_run.meta())
    if kb != kn:
        raise UsageError(f"refusing to compare different device kinds: {base} ran on {kb}, {new} on {kn}")
    b_rows, n_rows = b_run.rows(), n_run.rows()
    b_by = {match_key(r): r for r in b_rows}
    result = Comparison()
    b_ref = _ref_latency(b_rows, reference_method) if reference_method else {}
    n_ref = _ref_latency(n_rows, reference_method) if reference_method else {}
    if reference_method and not n_ref:
        raise UsageError(f"--reference-method {reference_method}: no ok rows of it in {new}")
    for r in n_rows:
        b = b_by.get(match_key(r))
        if b is None:
            result.notes.append(f"new cell, not in base: {_label(r)}")
            continue
        result.matched += 1
        if "status" in metrics and b.status != r.status:
            if b.status == "ok":
                result.regressions.append(f"{_label(r)}: status ok -> {r.status} ({r.reason[:160]})")
            elif r.status == "ok":
                result.improvements.append(f"{_label(r)}: status {b.status} -> ok")
            else:
                result.notes.append(f"{_label(r)}: status {b.status} -> {r.status}")
        if b.status != "ok" or r.status != "ok":
            continue
        if "error" in metrics and b.err_rel_l2 is not None and r.err_rel_l2 is not None:
            allowed = max(b.err_rel_l2 * (1 + max_error_increase), b.err_rel_l2 + error_abs_floor) + 1e-12
            if r.err_rel_l2 > allowed:
                result.regressions.append(f"{_label(r)}: err_rel_l2 {b.err_rel_l2:.4g} -> {r.err_rel_l2:.4g} "
                                          f"(allowed {allowed:.4g})")
        if "latency" in metrics and b.latency_ms and r.latency_ms:
            if reference_method:
                if r.method == reference_method:
                    continue
                key = _problem_key(r)
                if key not in b_ref or key not in n_ref:
                    result.notes.append(f"{_label(r)}: no {reference_method} row on this problem; latency skipped")
                    continue
                old, cur, scale = b.latency_ms / b_ref[key], r.latency_ms / n_ref[key], n_ref[key]
                unit = f"x {reference_method}"
            else:
                old, cur, scale, unit = b.latency_ms, r.latency_ms, 1.0, "ms"
            change = cur / old - 1
            if change > max_slowdown and (cur - old) * scale > abs_floor_ms:
                result.regressions.append(f"{_label(r)}: latency {old:.4g} -> {cur:.4g} {unit} "
                                          f"(+{change:.1%} > {max_slowdown:.1%})")
            elif change < -max_slowdown and (old - cur) * scale > abs_floor_ms:
                result.improvements.append(f"{_label(r)}: latency {old:.4g} -> {cur:.4g} {unit} ({change:.1%})")
    if "status" in metrics:
        missing = set(b_by) - {match_key(r) for r in n_rows}
        for key in sorted(missing, key=str):
            result.regressions.append(f"{_label(b_by[key])}: present in base, missing in new run")
    return result
