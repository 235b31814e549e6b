"""`python -m harness fidelity`: each method on the real per-layer Q/K/V of a model.

1. Capture: the first --batch windows of --seq-len tokens of --text (tokenised without special tokens) run
   through the model with a capturing attention function (which computes plain softmax attention with the
   model's own mask and scale). Every layer's q, k, v ([B, H, T, D], post-RoPE, k/v with the model's key-value
   heads) goes to --capture-out as 'layer{i}.q', 'layer{i}.k', 'layer{i}.v', plus top-level 'q', 'k', 'v' of
   --capture-layer (default: the middle layer) so `python -m harness run --inputs FILE` can sweep it.
2. For each --methods entry, every layer's captured q, k, v goes through a fresh per-layer module of the method
   (built with the layer's index and --seed) and is compared with exact softmax attention (harness.reference):
   output relative L2 error, max abs error and, where the method exposes its attention distribution,
   attention KL and top-k recall on sampled query rows. One row per (method, layer) and one per method with
   the means over layers (extra.layer = "mean").
With --capture-in FILE (a capture written by step 1, or a subset of its layers in the same format) step 1 is
skipped: no model is loaded, so methods can be scored on another machine (e.g. a GPU without the model files).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from harness.runner import UsageError
from harness.tasks import (add_common_args, cell_id, describe_exception, device_of, failure_status, fmt,
                           load_corpus, load_model_or_usage, method_variants, open_run)

TASK = "fidelity"
N_PROB_ROWS = 32
TOPK = 32


def register_cli(subparsers) -> None:
    import argparse

    p = subparsers.add_parser(TASK, help="methods on a model's captured per-layer Q/K/V",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, methods_required=False, model_required=False)
    p.add_argument("--seq-len", type=int, default=None, help="tokens per captured sequence (T; needed with --model)")
    p.add_argument("--batch", type=int, default=1, help="sequences captured (consecutive windows of the text)")
    p.add_argument("--task", dest="model_task", choices=("causal-lm", "encoder"), default="causal-lm",
                   help="how to load --model (encoder: bidirectional attention)")
    p.add_argument("--capture-out", type=Path, default=None,
                   help="safetensors file for the captured q/k/v (default: <out>/capture.safetensors)")
    p.add_argument("--capture-in", type=Path, default=None,
                   help="score the methods on this saved capture instead of loading --model (its layers, "
                        "tokens and metadata are the capture's)")
    p.add_argument("--capture-layer", type=int, default=None,
                   help="layer whose q/k/v are also saved as top-level 'q','k','v' (default: the middle one)")
    p.set_defaults(func=cmd_fidelity)


def capture_qkv(model, tokenizer, text: str, *, seq_len: int, batch: int, device: str) -> list:
    """Run `batch` windows of `seq_len` tokens through the model and return the CapturedLayer list."""
    import torch

    from harness.models.swap import Capture

    need = seq_len * batch
    chars = max(1024, 8 * need)
    while True:
        ids = list(tokenizer(text[:chars], add_special_tokens=False)["input_ids"])
        if len(ids) >= need or chars >= len(text):
            break
        chars *= 2
    if len(ids) < need:
        raise UsageError(f"the text gives {len(ids)} tokens; --seq-len {seq_len} x --batch {batch} needs {need}")
    x = torch.tensor(ids[:need], dtype=torch.long, device=device).view(batch, seq_len)   # [B, T]
    kwargs = {"use_cache": False} if "use_cache" in _forward_params(model) else {}
    with Capture(model) as cap, torch.no_grad():
        model(input_ids=x, **kwargs)
    if not cap.layers:
        raise UsageError(f"{type(model).__name__} made no attention call through the attention interface")
    return cap.layers


def _forward_params(model) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def save_capture(layers, path: Path, *, top: int, meta: dict) -> Path:
    from safetensors.torch import save_file

    tensors = {}
    info = []
    for i, layer in enumerate(layers):
        for n in ("q", "k", "v"):
            tensors[f"layer{i}.{n}"] = getattr(layer, n).contiguous()
        info.append({"i": i, "name": layer.name, "index": layer.index, "causal": layer.causal,
                     "scale": layer.scale})
    for n in ("q", "k", "v"):
        tensors[n] = tensors[f"layer{top}.{n}"].clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "harness-capture/1", "layers": json.dumps(info),
                                            "top_layer": str(top), **{k: str(v) for k, v in meta.items()}})
    return path


def load_capture(path: Path) -> tuple[list, dict]:
    """(CapturedLayer list, metadata) from a file save_capture wrote (or a subset of its layers with their
    entries in the metadata's 'layers' list). Tensors stay on the CPU in their saved dtype."""
    from safetensors import safe_open

    from harness.models.swap import CapturedLayer

    if not Path(path).is_file():
        raise UsageError(f"--capture-in {path}: no such file")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "harness-capture/1" or "layers" not in meta:
            raise UsageError(f"--capture-in {path}: not a harness capture (format {meta.get('format')!r})")
        layers = []
        for info in json.loads(meta["layers"]):
            i = info["i"]
            q, k, v = (f.get_tensor(f"layer{i}.{n}") for n in ("q", "k", "v"))
            layers.append(CapturedLayer(name=info["name"], index=info["index"], q=q, k=k, v=v,
                                        causal=info["causal"], scale=info["scale"], key_padding_mask=None))
    if not layers:
        raise UsageError(f"--capture-in {path}: the capture holds no layers")
    return layers, meta


def _prob_rows(T: int, causal: bool, device):
    import torch

    n = min(N_PROB_ROWS, T)
    lo = T // 4 if causal and T >= 4 * n else 0
    return torch.linspace(lo, T - 1, n, device=device).round().long().unique()


def layer_errors(module, layer, *, device: str, dtype) -> dict:
    """Output and attention-distribution errors of one built method module on one captured layer."""
    import torch

    from harness import reference

    q, k, v = (t.to(device, dtype) for t in (layer.q, layer.k, layer.v))
    B, H, T, D = q.shape
    with torch.no_grad():
        out = module(q, k, v, causal=layer.causal, scale=layer.scale)       # [B, H, T, D]
    if tuple(out.shape) != tuple(q.shape):
        raise RuntimeError(f"output shape {tuple(out.shape)}, expected {tuple(q.shape)}")
    ref_dev, ref_dtype = reference.reference_plan(B, H, T, D, device)
    qr, kr, vr = (t.to(ref_dev, ref_dtype) for t in (q, k, v))
    with torch.no_grad():
        ref = reference.reference_attention(qr, kr, vr, causal=layer.causal, scale=layer.scale)
        vals = {"err_rel_l2": reference.rel_l2(out.to(ref_dev), ref),
                "err_max_abs": reference.max_abs(out.to(ref_dev), ref),
                "finite": bool(torch.isfinite(out).all()),
                "ref": f"{ref_dev} {str(ref_dtype).replace('torch.', '')} softmax attention"}
        rows = _prob_rows(T, layer.causal, device)
        probs = module.attention_probs(q, k, v, causal=layer.causal, rows=rows, scale=layer.scale)
        if probs is not None:
            p_ref = reference.reference_probs(qr, kr, causal=layer.causal, rows=rows.to(ref_dev), scale=layer.scale)
            probs = probs.to(ref_dev, ref_dtype)
            vals["attn_kl"] = reference.attention_kl(p_ref, probs)
            vals["topk_recall"] = reference.topk_recall(p_ref, probs, TOPK)
    vals["impl"] = getattr(module, "impl", "") or ""
    return vals


def cmd_fidelity(a) -> int:
    import torch

    import methods
    from harness.models.load import model_problem_dims
    from harness.rows import Row
    from methods.base import DTYPES, Problem

    if (a.model is None) == (a.capture_in is None):
        raise UsageError("give --model (capture the q/k/v, then score) or --capture-in (score a saved capture)")
    if a.model is not None and (a.seq_len is None or a.seq_len < 2 or a.batch < 1):
        raise UsageError("--seq-len must be given and at least 2, and --batch at least 1")
    variants = method_variants(a) if a.methods else []
    device = device_of(a)
    if a.capture_in is not None:
        layers, meta = load_capture(a.capture_in)
        B, _, T, _ = layers[0].q.shape
        setting = {"task": TASK, "model": meta.get("model", "?"), "text": meta.get("text", "?"),
                   "text_source": f"capture {a.capture_in}", "seq_len": T, "batch": B,
                   "model_task": a.model_task}
        run, run_id, done = open_run(a, TASK, device, {"setting": setting,
                                                       "methods": [[n, c] for n, c in variants]})
        capture_path = a.capture_in
        run.update_meta(capture=str(capture_path), capture_layers=len(layers))
        print(f"loaded {len(layers)} captured layers of q/k/v {tuple(layers[0].q.shape)} from {capture_path}")
    else:
        corpus = load_corpus(a.text)
        model, tok = load_model_or_usage(a, a.model_task, device)
        model_problem_dims(model)
        setting = {"task": TASK, "model": str(a.model), "text": a.text, "text_source": corpus.source,
                   "seq_len": a.seq_len, "batch": a.batch, "model_task": a.model_task}
        run, run_id, done = open_run(a, TASK, device, {"setting": setting,
                                                       "methods": [[n, c] for n, c in variants]})
        layers = capture_qkv(model, tok, corpus.text, seq_len=a.seq_len, batch=a.batch, device=device)
        top = len(layers) // 2 if a.capture_layer is None else a.capture_layer
        if not 0 <= top < len(layers):
            raise UsageError(f"--capture-layer {top}: the model has {len(layers)} attention layers "
                             f"(0..{len(layers) - 1})")
        capture_path = a.capture_out or run.path / "capture.safetensors"
        save_capture(layers, capture_path, top=top, meta={"model": a.model, "text": a.text, "seq_len": a.seq_len,
                                                           "batch": a.batch, "dtype": a.dtype})
        run.update_meta(capture=str(capture_path), capture_layers=len(layers), capture_top_layer=top)
        print(f"captured {len(layers)} layers of q/k/v {tuple(layers[0].q.shape)} -> {capture_path} "
              f"(top-level q/k/v: layer {top})")
        del model
    dtype = DTYPES[a.dtype]
    for name, cfg in variants:
        cls = methods.get(name)
        per_layer = []
        for i, layer in enumerate(layers):
            B, H, T, D = layer.q.shape
            problem = Problem(batch=B, heads=H, kv_heads=layer.k.shape[1], seq_len=T, head_dim=D, dtype=a.dtype,
                              causal=layer.causal, device=device)
            cid = cell_id(**setting, method=name, config=cfg, dtype=a.dtype, device=device, seed=a.seed, layer=i)
            started = time.perf_counter()
            status, reason, values = "ok", "", {}
            reasons = cls.supports(problem, cfg)
            if reasons:
                status, reason = "unsupported", "; ".join(reasons)
            else:
                try:
                    module = cls.build(cfg, problem, layer=layer.index, seed=a.seed).to(device).eval()
                    values = layer_errors(module, layer, device=device, dtype=dtype)
                    if not values.pop("finite"):
                        status, reason = "wrong", "output has non-finite values"
                except Exception as exc:  # noqa: BLE001 - every layer ends as a row
                    status, reason = failure_status(exc), describe_exception(exc, "fidelity")
            impl = values.pop("impl", "")
            ref = values.pop("ref", "")
            row = Row(run_id=run_id, cell_id=cid, method=name, config=dict(cfg), batch=B, heads=H,
                      kv_heads=layer.k.shape[1], seq_len=T, head_dim=D, dtype=a.dtype, causal=layer.causal,
                      mode="fwd", device=device, seed=a.seed, inputs=str(capture_path), status=status,
                      reason=reason, impl=impl, ref=ref, wall_s=round(time.perf_counter() - started, 3),
                      extra={**setting, "layer": i, "layer_index": layer.index, "layer_name": layer.name}, **values)
            per_layer.append(row)
            if cid not in done:
                run.append(row)
        mean_id = cell_id(**setting, method=name, config=cfg, dtype=a.dtype, device=device, seed=a.seed, layer="mean")
        if mean_id not in done:
            run.append(mean_row(per_layer, run_id, mean_id))
    run.update_meta(finished=True)
    rows = run.rows()
    if rows:
        print(table(rows))
    print(f"\nrows in {run.path}")
    return 0


def mean_row(rows, run_id: str, cid: str):
    """The means over layers of one method (status ok only if every layer was ok)."""
    import dataclasses

    first = rows[0]
    ok = [r for r in rows if r.status == "ok"]
    bad = [r for r in rows if r.status != "ok"]

    def mean(field):
        xs = [getattr(r, field) for r in ok if getattr(r, field) is not None]
        return sum(xs) / len(xs) if xs and len(xs) == len(ok) else None

    status = "ok" if not bad else bad[0].status
    reason = "" if not bad else f"{len(bad)} of {len(rows)} layers {bad[0].status}: {bad[0].reason}"
    return dataclasses.replace(first, cell_id=cid, status=status, reason=reason,
                               err_rel_l2=mean("err_rel_l2"), err_max_abs=max((r.err_max_abs for r in ok
                                                                               if r.err_max_abs is not None),
                                                                              default=None),
                               attn_kl=mean("attn_kl"), topk_recall=mean("topk_recall"),
                               wall_s=round(sum(r.wall_s or 0 for r in rows), 3),
                               extra={**first.extra, "layer": "mean", "layers": len(rows), "layers_ok": len(ok),
                                      "layer_index": None, "layer_name": ""})


def table(rows) -> str:
    lines = ["| method | layer | status | rel L2 | max abs | attn KL | top-k recall | impl | reason |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.extra.get('layer')} | {r.status} | {fmt(r.err_rel_l2, '.3g')} | "
                     f"{fmt(r.err_max_abs, '.3g')} | {fmt(r.attn_kl, '.3g')} | {fmt(r.topk_recall, '.3f')} | "
                     f"{r.impl} | {r.reason[:100]} |")
    return "\n".join(lines)


__all__ = ["register_cli", "capture_qkv", "save_capture", "layer_errors"]
