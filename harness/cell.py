"""Run one cell in this process: inputs, correctness gate, error metrics, latency, memory -> Row.

The worker process (harness/worker.py) calls `run_cell`; nothing here isolates failures from the
process, so use it directly only in tests.
"""
from __future__ import annotations

import datetime as _dt
import math
import time
import traceback
from pathlib import Path

import torch

import methods
from harness import measure, reference
from harness.grid import Cell
from harness.rows import Row, row_for
from methods.base import DTYPES, Problem

N_PROB_ROWS = 32      # query rows sampled for attention KL / top-k recall
TOPK = 32


class CellFailure(Exception):
    """A failure with a status (oom, error, wrong) and a message for the row."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def problem_of(cell: Cell) -> Problem:
    return Problem(batch=cell.batch, heads=cell.heads, kv_heads=cell.kv_heads, seq_len=cell.seq_len,
                   head_dim=cell.head_dim, dtype=cell.dtype, causal=cell.causal, device=cell.device,
                   backward=cell.backward)


def make_inputs(cell: Cell) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded standard-normal q, k, v ([B, H, T, D], k/v with kv_heads), or captured ones from a file."""
    dtype = DTYPES[cell.dtype]
    if cell.inputs != "gaussian":
        return load_captured(cell)
    gen = torch.Generator(device=cell.device).manual_seed(cell.seed)
    shape_q = (cell.batch, cell.heads, cell.seq_len, cell.head_dim)
    shape_kv = (cell.batch, cell.kv_heads, cell.seq_len, cell.head_dim)
    q = torch.randn(shape_q, generator=gen, device=cell.device, dtype=torch.float32).to(dtype)
    k = torch.randn(shape_kv, generator=gen, device=cell.device, dtype=torch.float32).to(dtype)
    v = torch.randn(shape_kv, generator=gen, device=cell.device, dtype=torch.float32).to(dtype)
    return q, k, v


def load_captured(cell: Cell):
    """q, k, v from a safetensors file with tensors 'q', 'k', 'v' as [B, H, T, D] (see the fidelity task),
    cut to the cell's batch, heads and seq_len."""
    from safetensors.torch import load_file

    path = Path(cell.inputs)
    if not path.exists():
        raise CellFailure("error", f"inputs file {path} does not exist")
    t = load_file(str(path))
    missing = [n for n in ("q", "k", "v") if n not in t]
    if missing:
        raise CellFailure("error", f"inputs file {path} lacks tensors {missing}")
    q, k, v = t["q"], t["k"], t["v"]
    if q.shape[2] < cell.seq_len or q.shape[0] < cell.batch or q.shape[1] < cell.heads:
        raise CellFailure("error", f"inputs file {path} holds q {tuple(q.shape)}, smaller than the cell")
    hkv = cell.kv_heads
    dtype = DTYPES[cell.dtype]
    sl = slice(0, cell.seq_len)
    return (q[:cell.batch, :cell.heads, sl].to(cell.device, dtype).contiguous(),
            k[:cell.batch, :hkv, sl].to(cell.device, dtype).contiguous(),
            v[:cell.batch, :hkv, sl].to(cell.device, dtype).contiguous())


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError))


def _describe(exc: BaseException, stage: str) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return f"{stage}: {type(exc).__name__}: {first[:400]}{loc}"


def _stage(stage: str, fn):
    try:
        return fn()
    except CellFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a typed row
        if _is_oom(exc):
            raise CellFailure("oom", _describe(exc, stage)) from exc
        raise CellFailure("error", _describe(exc, stage)) from exc


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _prob_rows(T: int, causal: bool, device) -> torch.Tensor:
    n = min(N_PROB_ROWS, T)
    lo = T // 4 if causal and T >= 4 * n else 0     # causal rows early in the sequence see few keys
    return torch.linspace(lo, T - 1, n, device=device).round().long().unique()


def run_cell(cell: Cell, run_id: str, *, warmup_ms: float = 25, rep_ms: float = 100, cpu_budget_s: float = 0.5,
             cuda_graph: bool = False, device_name: str = "") -> Row:
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t_start = time.perf_counter()
    common = dict(device_name=device_name, started_at=started)
    method = methods.get(cell.method)
    cfg = method.resolve_config(cell.config_dict)
    problem = problem_of(cell)
    reasons = method.supports(problem, cfg)
    if reasons:
        return row_for(cell, run_id, "unsupported", reason="; ".join(reasons), **common)

    values: dict = {}     # filled as the cell goes, so a failed cell keeps what was measured before
    try:
        _measure(cell, method, cfg, problem, values, warmup_ms=warmup_ms, rep_ms=rep_ms,
                 cpu_budget_s=cpu_budget_s, cuda_graph=cuda_graph)
        status = "ok"
    except CellFailure as failure:
        status = failure.status
        values["reason"] = str(failure)
    finally:
        if cell.device == "cuda":
            torch.cuda.empty_cache()
    values["wall_s"] = round(time.perf_counter() - t_start, 3)
    return row_for(cell, run_id, status, **common, **values)


def _measure(cell: Cell, method, cfg, problem: Problem, out_values: dict, *, warmup_ms, rep_ms, cpu_budget_s,
             cuda_graph) -> None:
    dev = cell.device
    q, k, v = _stage("inputs", lambda: make_inputs(cell))
    module = _stage("build", lambda: method.build(cfg, problem, layer=0, seed=cell.seed).to(dev))
    module.eval()

    # --- correctness gate (also warms up kernels and compilation) -------------------------------------
    backward = cell.backward
    if backward:
        q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
        gen = torch.Generator(device=dev).manual_seed(cell.seed + 1)
        grad_out = torch.randn(q.shape, generator=gen, device=dev, dtype=torch.float32).to(q.dtype)

    def forward():
        return module(q, k, v, causal=cell.causal)

    # The gate checks the output of a second call, the path the timing repeats: a method may compile, autotune
    # or capture a CUDA graph in its first call and take another path afterwards (impl names the latter).
    if backward:
        _stage("forward", forward)
        out = _stage("forward", forward)
        grads = _stage("backward", lambda: torch.autograd.grad(out, (q, k, v), grad_out))
    else:
        with torch.no_grad():
            _stage("forward", forward)
            out = _stage("forward", forward)
    _sync(dev)
    impl = getattr(module, "impl", "") or ""
    out_values["impl"] = impl
    if tuple(out.shape) != tuple(q.shape):
        raise CellFailure("wrong", f"output shape {tuple(out.shape)}, expected {tuple(q.shape)}")
    if out.dtype != q.dtype:
        raise CellFailure("wrong", f"output dtype {out.dtype}, expected {q.dtype}")
    if not torch.isfinite(out).all():
        raise CellFailure("wrong", "output has non-finite values")
    if backward and not all(torch.isfinite(g).all() for g in grads):
        raise CellFailure("wrong", "gradients have non-finite values")

    ref_dev, ref_dtype = reference.reference_plan(cell.batch, cell.heads, cell.seq_len, cell.head_dim, dev)
    macs = 2.0 * cell.batch * cell.heads * cell.seq_len ** 2 * cell.head_dim
    sampled = macs > reference.FULL_BUDGET
    rows_ref = None
    if sampled:   # evenly spaced query rows, the last one included
        n = min(reference.SAMPLED_ROWS, cell.seq_len)
        rows_ref = torch.linspace(0, cell.seq_len - 1, n, device=ref_dev).round().long().unique()
    out_values["ref"] = (f"{ref_dev} {str(ref_dtype).replace('torch.', '')} softmax attention"
                         + (f", {len(rows_ref)} sampled query rows, no gradient reference" if sampled else ""))

    def ref_errors():
        qr, kr, vr = (t.detach().to(ref_dev, ref_dtype) for t in (q, k, v))
        vals = {}
        if backward and not sampled:
            qr, kr, vr = (t.requires_grad_(True) for t in (qr, kr, vr))
            ref_out = reference.reference_attention(qr, kr, vr, causal=cell.causal)
            ref_grads = torch.autograd.grad(ref_out, (qr, kr, vr), grad_out.to(ref_dev, ref_dtype))
            num = sum(((g.to(ref_dev, ref_dtype) - rg) ** 2).sum().item() for g, rg in zip(grads, ref_grads))
            den = sum((rg ** 2).sum().item() for rg in ref_grads)
            vals["grad_err_rel_l2"] = math.sqrt(num / den) if den > 0 else math.sqrt(num)
            ref_out = ref_out.detach()
            qr, kr, vr = qr.detach(), kr.detach(), vr.detach()
        else:
            with torch.no_grad():
                ref_out = reference.reference_attention(qr, kr, vr, causal=cell.causal, rows=rows_ref)
        o = out.detach()
        o = (o[:, :, rows_ref.to(o.device)] if sampled else o).to(ref_dev)
        vals["err_rel_l2"] = reference.rel_l2(o, ref_out)
        vals["err_max_abs"] = reference.max_abs(o, ref_out)
        with torch.no_grad():
            rows = _prob_rows(cell.seq_len, cell.causal, dev)
            probs = module.attention_probs(q.detach(), k.detach(), v.detach(), causal=cell.causal, rows=rows)
            if probs is not None:
                p_ref = reference.reference_probs(qr, kr, causal=cell.causal, rows=rows.to(ref_dev))
                probs = probs.to(ref_dev, ref_dtype)
                vals["attn_kl"] = reference.attention_kl(p_ref, probs)
                vals["topk_recall"] = reference.topk_recall(p_ref, probs, TOPK)
        return vals

    out_values.update(_stage("reference", ref_errors))
    if method.exact:
        tol = reference.EXACT_TOL[cell.dtype]
        gate = f"exact: rel L2 <= {tol:g}"
        if backward and not sampled:
            gate += f", grad rel L2 <= {reference.EXACT_GRAD_TOL[cell.dtype]:g}"
        out_values["gate"] = gate
        if out_values["err_rel_l2"] > tol:
            raise CellFailure("wrong", f"rel L2 error {out_values['err_rel_l2']:.3g} > {tol:g} (exact method)")
        if backward and not sampled and out_values["grad_err_rel_l2"] > reference.EXACT_GRAD_TOL[cell.dtype]:
            raise CellFailure("wrong", f"grad rel L2 error {out_values['grad_err_rel_l2']:.3g} > "
                                       f"{reference.EXACT_GRAD_TOL[cell.dtype]:g} (exact method)")
    else:
        out_values["gate"] = "approximate: finite output" + (" and gradients" if backward else "")
    del out
    if backward:
        del grads

    # --- timing and memory (inputs, module and compiled kernels already exist) -------------------------
    if backward:
        def step():
            o = module(q, k, v, causal=cell.causal)
            return torch.autograd.grad(o, (q, k, v), grad_out)
    else:
        def step():
            with torch.no_grad():
                return module(q, k, v, causal=cell.causal)

    if dev == "cuda":
        timing = _stage("timing", lambda: measure.time_cuda(step, warmup_ms=warmup_ms, rep_ms=rep_ms,
                                                             cuda_graph=cuda_graph))
        mem = _stage("memory", lambda: measure.peak_memory_cuda(step))
        out_values["memory_metric"] = measure.CUDA_MEMORY_METRIC
    else:
        timing = _stage("timing", lambda: measure.time_cpu(step, budget_s=cpu_budget_s))
        mem = _stage("memory", lambda: measure.peak_memory_cpu(step))
        out_values["memory_metric"] = measure.CPU_MEMORY_METRIC
    kept = int(module.retained_memory_bytes()) if hasattr(module, "retained_memory_bytes") else 0
    if kept:                             # e.g. captured CUDA graphs: reserved before the measured call began
        out_values["memory_metric"] += " + memory the module keeps between calls"
        out_values["extra"] = {**out_values.get("extra", {}), "retained_memory_bytes": kept}
    out_values.update(latency_ms=timing.median_ms, latency_p20_ms=timing.p20_ms, latency_p80_ms=timing.p80_ms,
                      n_timed=timing.n, timer=timing.timer, memory_bytes=int(mem) + kept)
    if dev == "cuda":
        def stage_timer(fn):
            return measure.time_cuda(fn, warmup_ms=warmup_ms, rep_ms=max(10.0, rep_ms / 4)).median_ms
    else:
        def stage_timer(fn):
            return measure.time_cpu(fn, min_runs=3, budget_s=cpu_budget_s / 4).median_ms
    if not backward:
        with torch.no_grad():
            stages = _stage("stage profile", lambda: module.stage_profile(q, k, v, causal=cell.causal,
                                                                         timer=stage_timer))
        if stages:
            out_values["extra"] = {**out_values.get("extra", {}), "stages_ms": dict(stages)}
    else:                                               # the backward's own stages (forward ones: fwd cells)
        stages = _stage("backward stage profile", lambda: module.stage_profile_backward(
            q, k, v, causal=cell.causal, timer=stage_timer))
        if stages:
            out_values["extra"] = {**out_values.get("extra", {}), "stages_bwd_ms": dict(stages)}
    impl_after = getattr(module, "impl", "") or impl
    out_values["impl"] = impl_after
    if method.exact:
        flops = measure.attention_flops(cell.batch, cell.heads, cell.seq_len, cell.head_dim, cell.causal, backward)
        out_values["tflops"] = flops / (timing.median_ms * 1e-3) / 1e12
        out_values["flops_formula"] = measure.FLOPS_FORMULA
