"""Distillation loss terms: per attention layer (from what the method module exposes) and per model.

Per layer (one record of a method module's call: q, k, v, causal, key padding mask, scale, output) the exact
softmax attention on the SAME q, k, v is the target ("in-layer teacher", the SEA recipe; with
`layer_target="teacher"` the teacher model's captured q, k, v are used instead):

  out_mse   MSE(module output, exact attention output)                             always
  est_kl    KL(pool(P) || A_hat)   est_mse  MSE(A_hat, pool(P))                     module exposes an estimate
  attn_kl   KL(P || P_method)      attn_mse MSE(P_method, P)                       module exposes its probs
                                                                                   with a gradient

P is the exact [B, H, T, T] attention; pool(P) is P compressed to the estimate's cell geometry. Terms that
need P are computed only when T <= max_attn_tokens (the caller records what was dropped). KL sums over keys
and averages over (batch, head, real query row); MSE averages over elements of real query rows.

attn_kl / attn_mse may be taken on a sample of R query rows (`rows`, drawn by `sample_rows` from (seed, step,
layer)): the method's probabilities and the exact P are then [B, H, R, T] and the means run over the sampled
real rows, so the tensors these terms keep for the backward take B*H*R*T per layer instead of B*H*T*T. The
estimator terms always use every row (the full P, under no_grad, freed once compressed).

KL(pool(P) || A_hat) in the compressed space has the same gradient with respect to A_hat as the paper's
KL(P || interp(A_hat)) where interp spreads each cell's mass evenly over its keys (they differ by a constant);
the MSE is taken on the compressed maps.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

EPS = 1e-12


@dataclass
class LayerCall:
    """One call of a per-layer method module, recorded by a forward hook."""

    module: torch.nn.Module
    q: torch.Tensor                 # [B, H, T, D]
    k: torch.Tensor                 # [B, Hkv, T, D]
    v: torch.Tensor                 # [B, Hkv, T, D]
    causal: bool
    key_padding_mask: torch.Tensor | None    # bool [B, T], True = real token
    scale: float | None
    out: torch.Tensor               # [B, H, T, D], carries the graph
    aux: dict | None = None         # the module's `last_aux` right after this call (a shallow copy)


def visible_mask(T: int, causal: bool, kpm: torch.Tensor | None, device,
                 rows: torch.Tensor | None = None) -> torch.Tensor | None:
    """bool [B or 1, 1, T, T] of the keys each query may see, or None when all are visible. With `rows` (long
    [R], query positions): [B or 1, 1, R, T] for those queries only (causal: key <= row)."""
    vis = None
    if causal and rows is not None:
        pos = torch.arange(T, device=device)
        vis = (pos[None, :] <= rows.to(device)[:, None])[None, None]          # [1, 1, R, T]
    elif causal:
        vis = torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None]   # [1, 1, T, T]
    if kpm is not None:
        pad = kpm.to(torch.bool)[:, None, None, :]                          # [B, 1, 1, T]
        vis = pad if vis is None else vis & pad
    return vis


def _repeat(x: torch.Tensor, H: int) -> torch.Tensor:
    return x if x.shape[1] == H else x.repeat_interleave(H // x.shape[1], dim=1)


def exact_probs(q, k, *, causal: bool, kpm, scale, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Exact softmax attention probabilities [B, H, T, T] in float32; rows that see nothing are zeros. With
    `rows` (long [R], query positions): only those query rows against all keys, [B, H, R, T]."""
    B, H, T, D = q.shape
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    if rows is not None:
        rows = rows.to(q.device)
        q = q[:, :, rows]                                                    # [B, H, R, D]
    s = (q.float() @ _repeat(k, H).float().transpose(-1, -2)) * scale      # [B, H, T or R, T]
    vis = visible_mask(T, causal, kpm, q.device, rows=rows)
    if vis is not None:
        s = s.masked_fill(~vis, float("-inf"))
    return torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0)


def exact_output(q, k, v, *, causal: bool, kpm, scale) -> torch.Tensor:
    """Exact softmax attention output [B, H, T, D] in float32 (memory-efficient SDPA; no T x T kept)."""
    H, T = q.shape[1], q.shape[2]
    mask = visible_mask(T, causal, kpm, q.device)
    out = F.scaled_dot_product_attention(q.float(), _repeat(k, H).float(), _repeat(v, H).float(), attn_mask=mask,
                                         is_causal=causal and mask is None, scale=scale)   # [B, H, T, D]
    return torch.nan_to_num(out)


def sample_rows(T: int, n: int, *, seed: int, step: int, layer: int, device=None) -> torch.Tensor | None:
    """`n` of the query positions 0..T-1, drawn uniformly without replacement and sorted ascending (long [n]),
    by a CPU generator seeded from (seed, step, layer) alone: a resumed run and every data-parallel rank draw
    the same rows. None (all rows) when n == 0 or n >= T."""
    if n < 0:
        raise ValueError(f"attn_rows must be >= 0 (0: all rows); got {n}")
    if n == 0 or n >= T:
        return None
    key = hashlib.sha256(f"attn-rows:{int(seed)}:{int(step)}:{int(layer)}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(key[:8], "little") & (2 ** 63 - 1))
    rows = torch.randperm(T, generator=g)[:n].sort().values                 # [n]
    return rows if device is None else rows.to(device)


def row_weights(B: int, T: int, kpm: torch.Tensor | None, device) -> torch.Tensor:
    """float [B, 1, T, 1]: 1 for real query rows, 0 for padded ones."""
    if kpm is None:
        return torch.ones(B, 1, T, 1, device=device)
    return kpm.to(torch.float32)[:, None, :, None]


def masked_mse(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean of (x - y)^2 over the elements of real rows; x, y [B, H, T, N], w [B, 1, T, 1]."""
    d = (x.float() - y.float()) ** 2 * w
    n = (w.expand(x.shape[0], x.shape[1], x.shape[2], 1).sum() * x.shape[-1]).clamp(min=1)
    return d.sum() / n


def masked_kl(p_ref: torch.Tensor, log_p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean over real rows of KL(p_ref || p) = sum_j p_ref (log p_ref - log p); p_ref, log_p [B, H, T, N]."""
    kl = (p_ref * (torch.log(p_ref.clamp_min(EPS)) - log_p)).sum(-1, keepdim=True)   # [B, H, T, 1]
    n = w.expand(p_ref.shape[0], p_ref.shape[1], p_ref.shape[2], 1).sum().clamp(min=1)
    return (kl * w).sum() / n


def compressor_for(module) -> Callable | None:
    """How to compress exact probabilities [B, H, T, T] to the module's estimate geometry [B, H, T, K].

    Protocol: the contract's `module.compress_probs(probs, *, causal, valid)` (methods/base.py), which returns
    None for modules without an estimate."""
    fn = getattr(module, "compress_probs", None)
    if not callable(fn):
        return None
    return lambda probs, *, K, causal, valid: fn(probs, causal=causal, valid=valid)


def estimate_of(aux: dict | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(A_hat probabilities, log A_hat) [B, H, T, K] from a `last_aux` dict with a gradient, else None.

    Keys read: 'logits' (unnormalised log-scores over K cells; preferred, numerically stable) and/or 'a_hat'
    (probabilities over K cells)."""
    if not isinstance(aux, dict):
        return None
    logits, a_hat = aux.get("logits"), aux.get("a_hat")
    if isinstance(logits, torch.Tensor) and logits.requires_grad:
        log_a = torch.log_softmax(logits.float(), dim=-1)
        return log_a.exp(), log_a
    if isinstance(a_hat, torch.Tensor) and a_hat.requires_grad:
        a = a_hat.float()
        return a, torch.log(a.clamp_min(EPS))
    return None


def layer_terms(call: LayerCall, *, target: tuple | None = None, attn_ok: bool, use_probs: bool,
                state: dict, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The per-layer terms of one recorded call. `target` = (q, k, v) of the teacher for this layer (None: the
    call's own q, k, v, detached). `state` caches per-module decisions (does attention_probs carry a gradient?).
    `rows` (long [R], sorted query positions, e.g. from `sample_rows`): attn_kl / attn_mse on those query rows
    only (None: all rows); the other terms always use every row.

    Returns {term: scalar tensor}; terms that do not apply are absent."""
    q, k, v = (t.detach() for t in (target if target is not None else (call.q, call.k, call.v)))
    kpm, causal, scale = call.key_padding_mask, call.causal, call.scale
    B, H, T, _ = call.out.shape
    w = row_weights(B, T, kpm, q.device)                                     # [B, 1, T, 1]: padded rows 0
    terms: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        ref_out = exact_output(q, k, v, causal=causal, kpm=kpm, scale=scale)   # [B, H, T, D]
    terms["out_mse"] = masked_mse(call.out, ref_out, w)
    if not attn_ok:
        return terms
    est = estimate_of(call.aux)
    compress = compressor_for(call.module) if est is not None else None
    P = None
    if rows is None or compress is not None:                                 # the full P: all rows, or the estimate
        with torch.no_grad():
            P = exact_probs(q, k, causal=causal, kpm=kpm, scale=scale)      # [B, H, T, T]
    if est is not None:
        a_hat, log_a = est                                                   # [B, H, T, K]
        if compress is not None:
            with torch.no_grad():
                Pc = compress(P, K=a_hat.shape[-1], causal=causal, valid=kpm)   # [B, H, T, K]
            terms["est_kl"] = masked_kl(Pc, log_a, w)
            terms["est_mse"] = masked_mse(a_hat, Pc, w)
        else:
            state.setdefault("notes", set()).add(
                f"{type(call.module).__name__} exposes an estimate but no compress_probs: estimator terms skipped")
    if rows is not None:
        P = None                  # the full P served the estimate only (Pc is kept): free it before the probs
    key = id(call.module)
    if use_probs and state.setdefault("probs_grad", {}).get(key, True):
        if rows is None:
            sel, w_sel = torch.arange(T, device=q.device), w
        else:
            sel = rows.to(q.device)                                          # [R]
            w_sel = w[:, :, sel]                                             # [B, 1, R, 1]
        # the method's probabilities on the call's own q, k, v (its gradient path), target P from `target`
        probs = call.module.attention_probs(call.q, call.k, call.v, causal=causal, rows=sel,
                                            key_padding_mask=kpm, scale=scale)
        has_grad = isinstance(probs, torch.Tensor) and probs.requires_grad
        state["probs_grad"][key] = has_grad
        if has_grad:
            if P is None:
                with torch.no_grad():
                    P = exact_probs(q, k, causal=causal, kpm=kpm, scale=scale, rows=sel)   # [B, H, R, T]
            probs = probs.float()                                            # [B, H, T or R, T]
            terms["attn_kl"] = masked_kl(P, torch.log(probs.clamp_min(EPS)), w_sel)
            terms["attn_mse"] = masked_mse(probs, P, w_sel)
        elif probs is not None:
            state.setdefault("notes", set()).add(
                f"{type(call.module).__name__}.attention_probs carries no gradient: attention terms skipped")
    return terms


# --- model-level terms ------------------------------------------------------------------------------------

def hidden_mse(student_hidden, teacher_hidden, token_mask: torch.Tensor | None,
               scale: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over layers of the MSE between hidden states [B, T, C] (real tokens only); with `scale` [layers],
    each layer's MSE is divided by its entry (e.g. the teacher's mean square there: a scale-free term)."""
    total = 0.0
    for i, (hs, ht) in enumerate(zip(student_hidden, teacher_hidden)):
        d = (hs.float() - ht.float()) ** 2                                   # [B, T, C]
        if token_mask is not None:
            m = token_mask.float()[..., None]                                # [B, T, 1]
            layer = (d * m).sum() / (m.sum() * d.shape[-1]).clamp(min=1)
        else:
            layer = d.mean()
        total = total + (layer / scale[i] if scale is not None else layer)
    return total / max(1, len(student_hidden))


def logits_kl(student_logits, teacher_logits, token_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over positions of KL(softmax(teacher) || softmax(student)) over the last axis."""
    log_s = torch.log_softmax(student_logits.float(), dim=-1)
    log_t = torch.log_softmax(teacher_logits.float(), dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)                             # [B, T] or [B]
    if token_mask is not None and kl.dim() == 2:
        m = token_mask.float()
        return (kl * m).sum() / m.sum().clamp(min=1)
    return kl.mean()


def task_loss(kind: str, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor | None:
    """causal: next-token cross-entropy on real tokens; classification: cross-entropy on batch['labels']."""
    if kind == "causal":
        ids = batch["input_ids"]
        pred = logits[:, :-1].float()                                        # [B, T-1, V]
        tgt = ids[:, 1:].clone()                                             # [B, T-1]
        if batch.get("attention_mask") is not None:
            tgt = tgt.masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), tgt.reshape(-1), ignore_index=-100)
    if kind == "classification" and batch.get("labels") is not None:
        return F.cross_entropy(logits.float(), batch["labels"])
    return None


# The SEA recipe's weights (Lee et al., ICLR 2024): per layer 0.1 KL + MSE for the estimate and for the
# attention, MSE for the layer output; hidden states x5 (causal) / x10 (encoder); logits KL x0.2 / x0.1;
# task loss x0.1.
DEFAULT_WEIGHTS = {
    "causal": dict(est_kl=0.1, est_mse=1.0, attn_kl=0.1, attn_mse=1.0, out_mse=1.0, hidden=5.0, logits_kl=0.2,
                   task=0.1),
    "encoder": dict(est_kl=0.1, est_mse=1.0, attn_kl=0.1, attn_mse=1.0, out_mse=1.0, hidden=10.0, logits_kl=0.1,
                    task=0.1),
}
