"""The sweep: validate everything first, then run each cell in isolation and store its row."""
from __future__ import annotations

import datetime as _dt
import sys
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import methods
from harness import provenance
from harness.grid import Cell, SweepSpec, expand, validate_spec
from harness.rows import Row
from harness.store import RunDir


class UsageError(Exception):
    """Bad input: reported in one message, exit code 2, nothing written."""


def split_entry(entry: str) -> tuple[str, dict[str, str]]:
    """'sdpa:backend=cudnn' -> ('sdpa', {'backend': 'cudnn'}): one variant of a method, inline options."""
    name, *opts = entry.split(":")
    inline = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or not key:
            raise UsageError(f"--methods entry {entry!r}: expected NAME or NAME:key=value[:key=value]")
        inline[key.strip()] = value.strip()
    return name.strip(), inline


def resolve_methods(entries: list[str], raw_args: dict[str, dict[str, str]]) -> list[tuple[str, dict[str, Any]]]:
    """(method, resolved config) per --methods entry; unknown methods or options raise UsageError.

    --method-args NAME.key=value applies to every variant of NAME; inline options of an entry win."""
    errors = []
    variants = []
    names = []
    for entry in entries:
        name, inline = split_entry(entry)
        names.append(name)
        try:
            cls = methods.get(name)
        except methods.UnknownMethodError as exc:
            errors.append(str(exc))
            continue
        try:
            cfg = cls.resolve_config({**raw_args.get(name, {}), **inline})
        except methods.MethodConfigError as exc:
            errors.append(str(exc))
            continue
        if (name, cfg) in variants:
            errors.append(f"--methods lists {entry!r} twice (same options)")
        variants.append((name, cfg))
    for name in raw_args:
        if name not in names:
            errors.append(f"--method-args names '{name}', which is not in --methods ({', '.join(names)})")
    if errors:
        raise UsageError("\n".join(errors))
    return variants


def plan(spec: SweepSpec, raw_args: dict[str, dict[str, str]]) -> list[Cell]:
    errors = validate_spec(spec)
    if errors:
        raise UsageError("\n".join(errors))
    variants = resolve_methods(spec.methods, raw_args)
    if spec.inputs != "gaussian" and not Path(spec.inputs).exists():
        raise UsageError(f"--inputs {spec.inputs}: no such file")
    return expand(spec, variants)


def _progress(total: int, initial: int):
    try:
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, unit="cell", dynamic_ncols=True, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        return None


def _open_run(spec: SweepSpec, cells: list[Cell], run: RunDir, *, resume: bool, timeout_s: float,
              threads: int | None, measure_settings: dict, argv: list[str], world: int) -> dict:
    """Create the run directory's meta (or extend it on resume) and return it."""
    if run.exists() and not resume:
        raise UsageError(f"{run.path} already holds a run; pass --resume to finish it, or choose another --out")
    if resume and run.exists():
        meta = run.meta()
        known = set(meta.get("cells", []))
        new_ids = [c.cell_id for c in cells if c.cell_id not in known]
        if new_ids:
            run.update_meta(cells=sorted(known | set(new_ids)))
        return run.meta()
    meta = provenance.run_meta(spec.device, argv)
    meta.update(run_id=f"{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{spec.device}", spec=asdict(spec),
                threads=threads, timeout_s=timeout_s, measure=measure_settings, cells=[c.cell_id for c in cells],
                world_size=world)
    run.create(meta)
    return meta


CLAIMS_DIR = "claims"       # dynamic schedule: claim files of the running invocation, removed at the end


def run_sweep(spec: SweepSpec, cells: list[Cell], out: Path, *, resume: bool, timeout_s: float,
              threads: int | None, measure_settings: dict, argv: list[str], quiet: bool = False,
              schedule: str = "static") -> RunDir:
    from harness import distributed
    from harness.worker import WorkerPool

    dist = distributed.from_env()
    world = dist.world if dist else 1
    if dist:
        distributed.init(dist)
        meta = None
        if dist.rank == 0:
            try:
                meta = _open_run(spec, cells, RunDir(out), resume=resume, timeout_s=timeout_s, threads=threads,
                                 measure_settings=measure_settings, argv=argv, world=world)
                RunDir(out).update_meta(schedule=schedule)
                if schedule == "dynamic":
                    distributed.Claims.reset(Path(out) / CLAIMS_DIR)   # claims left by a killed invocation
            except UsageError as exc:
                meta = {"error": str(exc)}
        meta = distributed.broadcast(meta)
        if "error" in meta:
            raise UsageError(meta["error"])
    else:
        meta = _open_run(spec, cells, RunDir(out), resume=resume, timeout_s=timeout_s, threads=threads,
                         measure_settings=measure_settings, argv=argv, world=1)
    run = RunDir(out, rank=dist.rank if dist else None)
    done = run.finished_cells()
    todo = [c for c in cells if c.cell_id not in done]
    claims = None
    if dist:
        distributed.barrier()                 # every rank has read `done` before any rank appends
        if schedule == "dynamic":
            todo = distributed.cost_order(todo)
            claims = distributed.Claims(Path(out) / CLAIMS_DIR, "current")
        else:
            todo = distributed.shard(todo, dist.world)[dist.rank]
    run_id = meta["run_id"]
    device_name = meta["device_info"].get("device_name", "")
    settings = {"threads": threads, "measure": measure_settings, "device_name": device_name,
                "cuda_device": dist.local_rank if dist and spec.device == "cuda" else None,
                "rank": dist.rank if dist else None}
    pool = WorkerPool(settings, timeout_s)
    show = not quiet and (dist is None or dist.rank == 0)
    bar = _progress(len(todo), 0) if show else None
    try:
        for cell in todo:
            if claims is not None and not claims.take(cell.cell_id):
                if bar is not None:
                    bar.update(1)             # another rank runs it
                continue
            if bar is not None:
                bar.set_postfix_str(cell.label(), refresh=True)
            row = pool.run(cell, run_id)
            run.append(row)
            if bar is not None:
                bar.update(1)
                if row.status != "ok":
                    bar.write(f"  {row.status:<11} {cell.label()}: {row.reason[:160]}")
    finally:
        pool.close()
        if bar is not None:
            bar.close()
    if dist:
        distributed.barrier()
    if dist is None or dist.rank == 0:
        merged = RunDir(out)
        merged.merge_rank_files()
        distributed.Claims.reset(Path(out) / CLAIMS_DIR)
        merged.update_meta(finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    if dist:
        distributed.barrier()                 # the merge is visible to every rank before it returns
        distributed.finish()
    return RunDir(out)


def summary_table(rows: list[Row]) -> str:
    """Per method: statuses and the largest T that ran."""
    by = defaultdict(list)
    for r in rows:
        by[r.method].append(r)
    lines = ["| method | cells | ok | unsupported | oom | timeout | error | wrong | largest T ok |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in sorted(by):
        rs = by[name]
        counts = defaultdict(int)
        for r in rs:
            counts[r.status] += 1
        ok_t = [r.seq_len for r in rs if r.status == "ok"]
        lines.append(f"| {name} | {len(rs)} | {counts['ok']} | {counts['unsupported']} | {counts['oom']} | "
                     f"{counts['timeout']} | {counts['error']} | {counts['wrong']} | {max(ok_t) if ok_t else '-'} |")
    return "\n".join(lines)
