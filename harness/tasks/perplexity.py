"""`python -m harness perplexity`: language-model perplexity with each method swapped into every attention layer.

The text is tokenised once without special tokens and cut into non-overlapping windows of --context tokens
(the last, shorter window is kept when it predicts at least one token). If the tokenizer adds a BOS token by
default, BOS is prepended to every window (which then holds context-1 text tokens and predicts all of them);
otherwise no BOS is added and the first token of each window is not predicted. The NLL is summed over all
predicted tokens and perplexity = exp(total NLL / predicted tokens). One row per method variant.
"""
from __future__ import annotations

import math
import time

from harness.runner import UsageError
from harness.tasks import (add_common_args, cell_id, describe_exception, device_of, failure_status, fmt,
                           load_corpus, load_model_or_usage, method_variants, open_run, progress)

TASK = "perplexity"


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(TASK, help="perplexity of a causal LM with each method swapped in",
                              description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--context", type=int, default=2048, help="tokens per window (non-overlapping)")
    p.add_argument("--max-tokens", type=int, default=None, help="use only the first N tokens of the text")
    p.add_argument("--batch", type=int, default=1, help="windows per forward")
    p.set_defaults(func=cmd_perplexity)


def tokenize(tokenizer, text: str, max_tokens: int | None) -> list[int]:
    """Token ids of `text` without special tokens; with max_tokens, only a prefix of the text is tokenised
    (grown until it yields enough tokens)."""
    if max_tokens is None:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    chars = max(1024, 8 * max_tokens)
    while True:
        ids = list(tokenizer(text[:chars], add_special_tokens=False)["input_ids"])
        if len(ids) > max_tokens or chars >= len(text):
            return ids[:max_tokens]
        chars *= 2


def bos_policy(tokenizer) -> int | None:
    """The BOS id to prepend to each window, or None when the tokenizer adds no BOS by itself."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos if with_special and with_special[0] == bos else None


def make_windows(ids: list[int], context: int, bos: int | None) -> list[list[int]]:
    step = context - (1 if bos is not None else 0)
    if step < 1:
        raise UsageError(f"--context {context} is too short")
    windows = []
    for start in range(0, len(ids), step):
        w = ids[start:start + step]
        w = ([bos] if bos is not None else []) + w
        if len(w) >= 2:
            windows.append(w)
    return windows


def window_nll(model, batch, device) -> tuple[float, int]:
    """Summed NLL (float64) and predicted-token count of equal-length windows."""
    import torch

    x = torch.tensor(batch, dtype=torch.long, device=device)               # [B, T]
    with torch.no_grad():
        logits = model(input_ids=x, use_cache=False).logits                # [B, T, V]
        pred = logits[:, :-1].float()                                       # [B, T-1, V]
        nll = torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), x[:, 1:].reshape(-1),
                                                reduction="sum")
    return float(nll.double().item()), int(x[:, 1:].numel())


def evaluate(model, windows: list[list[int]], *, batch: int, device: str, bar=None) -> dict:
    total, count = 0.0, 0
    groups: list[list[list[int]]] = []
    for w in windows:
        if groups and len(groups[-1]) < batch and len(groups[-1][0]) == len(w):
            groups[-1].append(w)
        else:
            groups.append([w])
    for g in groups:
        nll, n = window_nll(model, g, device)
        total += nll
        count += n
        if bar is not None:
            bar.update(len(g))
    mean = total / count if count else float("nan")
    return {"nll_sum": total, "n_tokens": count, "mean_nll": mean,
            "perplexity": math.exp(mean) if math.isfinite(mean) and mean < 700 else float("inf")}


def cmd_perplexity(a) -> int:
    from harness.models import swap
    from harness.models.load import model_problem_dims
    from harness.rows import Row
    from harness.store import RunDir  # noqa: F401 - documented dependency

    if a.context < 2:
        raise UsageError("--context must be at least 2")
    if a.max_tokens is not None and a.max_tokens < 2:
        raise UsageError("--max-tokens must be at least 2")
    if a.batch < 1:
        raise UsageError("--batch must be at least 1")
    variants = method_variants(a)
    device = device_of(a)
    corpus = load_corpus(a.text)
    model, tok = load_model_or_usage(a, "causal-lm", device)
    dims = model_problem_dims(model)
    bos = bos_policy(tok)
    ids = tokenize(tok, corpus.text, a.max_tokens)
    windows = make_windows(ids, a.context, bos)
    if not windows:
        raise UsageError(f"--text {a.text} gives {len(ids)} tokens: too few for one window")
    bos_note = ("BOS prepended to every window" if bos is not None
                else "no BOS (the tokenizer adds none); first token of each window not predicted")
    setting = {"task": TASK, "model": str(a.model), "text": a.text, "text_source": corpus.source,
               "context": a.context, "max_tokens": a.max_tokens, "batch": a.batch, "bos": bos_note,
               "n_windows": len(windows), "layers": dims["layers"]}
    run, run_id, done = open_run(a, TASK, device, {"setting": setting,
                                                   "methods": [[n, c] for n, c in variants]})
    rows = []
    for name, cfg in variants:
        cid = cell_id(**{k: setting[k] for k in ("task", "model", "text", "context", "max_tokens", "batch")},
                      method=name, config=cfg, dtype=a.dtype, device=device, seed=a.seed)
        if cid in done:
            continue
        started = time.perf_counter()
        values: dict = {}
        status, reason, impl = "ok", "", ""
        bar = progress(len(windows), f"{name}", a.quiet)
        try:
            handle = swap.attach(model, name, cfg, seed=a.seed, seq_len=a.context)
            try:
                values = evaluate(model, windows, batch=a.batch, device=device, bar=bar)
                impl = handle.impl_summary()
            finally:
                handle.detach()
            if not math.isfinite(values["mean_nll"]):
                status, reason = "wrong", f"mean NLL is {values['mean_nll']}"
        except Exception as exc:  # noqa: BLE001 - every method ends as a row
            status = failure_status(exc)
            reason = "; ".join(exc.reasons) if status == "unsupported" else describe_exception(exc, "perplexity")
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - started
        extra = {**setting, **values}
        if values.get("n_tokens"):
            extra["tokens_per_s"] = values["n_tokens"] / wall
        row = Row(run_id=run_id, cell_id=cid, method=name, config=dict(cfg), batch=a.batch, heads=dims["heads"],
                  kv_heads=dims["kv_heads"], seq_len=a.context, head_dim=dims["head_dim"], dtype=a.dtype,
                  causal=True, mode="fwd", device=device, seed=a.seed,
                  inputs=f"{a.model} | {a.text}", status=status, reason=reason, impl=impl,
                  wall_s=round(wall, 3), extra=extra)
        run.append(row)
        rows.append(row)
    run.update_meta(finished=True)
    print(table(run.rows()))
    print(f"\n{bos_note}; {len(windows)} windows of up to {a.context} tokens; rows in {run.path}")
    return 0


def table(rows) -> str:
    lines = ["| method | config | status | perplexity | mean NLL | tokens | impl | reason |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cfg = ", ".join(f"{k}={v}" for k, v in sorted(r.config.items()))
        lines.append(f"| {r.method} | {cfg} | {r.status} | {fmt(r.extra.get('perplexity'), '.4f')} | "
                     f"{fmt(r.extra.get('mean_nll'), '.5f')} | {fmt(r.extra.get('n_tokens'), 'd')} | {r.impl} | "
                     f"{r.reason[:120]} |")
    return "\n".join(lines)
