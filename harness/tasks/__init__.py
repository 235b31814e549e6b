"""Model-level tasks (`python -m harness perplexity|fidelity ...`): shared plumbing.

Each task module exposes `register_cli(subparsers)`; harness/cli.py lists them in TASK_MODULES.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from harness.runner import UsageError


def add_common_args(p: argparse.ArgumentParser, *, methods_required: bool = True,
                    model_required: bool = True) -> None:
    p.add_argument("--model", required=model_required, default=None,
                   help="hub name, local model folder, .gguf file, or a folder of .gguf parts")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --model (a folder)")
    p.add_argument("--methods", required=methods_required, default=None,
                   help="comma-separated method names, each optionally NAME:key=value[:key=value]")
    p.add_argument("--method-args", nargs="+", action="extend", default=[], metavar="NAME.key=value",
                   help="method options, e.g. performer.nb_features=128 (unknown keys are errors)")
    p.add_argument("--text", default="wikitext-2-test",
                   help="corpus: wikitext-2-test, wikitext-2-valid, austen, austen-<novel>, wikitext-2-raw-v1 "
                        "(hub, needs datasets) or a local text file")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16", "fp64"))
    add_run_args(p, resume_help="skip rows already recorded in --out")


def add_run_args(p: argparse.ArgumentParser, *, resume_help: str) -> None:
    """Where and how a task runs: --device --seed --threads --out --resume --quiet (every task has them)."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the methods' randomness (features, hashes)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<time>-<task>)")
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def device_of(a) -> str:
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if a.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but torch sees no CUDA device here")
    return a.device


def method_variants(a) -> list[tuple[str, dict[str, Any]]]:
    import methods
    from harness.runner import resolve_methods

    entries = [x.strip() for x in (a.methods or "").split(",") if x.strip()]
    try:
        raw = methods.parse_method_args(a.method_args)
    except methods.MethodConfigError as exc:
        raise UsageError(str(exc)) from None
    return resolve_methods(entries, raw)


def load_corpus(spec: str):
    from harness.models.data import CorpusError, load_text

    try:
        return load_text(spec)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None


def load_model_or_usage(a, task: str, device: str):
    from harness.models.load import ModelLoadError, load_model

    try:
        return load_model(a.model, task=task, dtype=a.dtype, device=device, gguf_file=a.gguf_file)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from None


def open_run(a, task: str, device: str, extra_meta: dict) -> tuple[Any, str, set[str]]:
    """(RunDir, run_id, finished cell ids) for --out / --resume."""
    from harness import provenance
    from harness.store import RunDir

    out = a.out or Path("runs") / f"{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{task}"
    run = RunDir(out)
    if run.exists():
        if not a.resume:
            raise UsageError(f"{out} already holds a run; pass --resume to finish it, or choose another --out")
        meta = run.meta()
        return run, meta["run_id"], run.finished_cells()
    meta = provenance.run_meta(device, sys.argv[1:])
    run_id = f"{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{task}"
    meta.update(run_id=run_id, task=task, **extra_meta)
    run.create(meta)
    return run, run_id, set()


def cell_id(**identity: Any) -> str:
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def describe_exception(exc: BaseException, stage: str) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return f"{stage}: {type(exc).__name__}: {first[:400]}{loc}"


def failure_status(exc: BaseException) -> str:
    import torch

    from harness.models.swap import MethodRefused

    if isinstance(exc, MethodRefused):
        return "unsupported"
    text = str(exc).lower()
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text:
        return "oom"
    return "error"


def progress(total: int, desc: str, quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="win", dynamic_ncols=True, file=sys.stderr, leave=False)


def fmt(x: Any, spec: str = ".4g") -> str:
    return "" if x is None else format(x, spec) if isinstance(x, (int, float)) else str(x)
