"""One SEA attention layer: estimate A_hat in O(T), grouped top-k, interpolate, sparse attention, mix.

Shapes: q [B, H, T, D]; k, v [B, Hkv, T, D]; A_hat [B, H, T, K]. The estimator runs in float32; the
sparse attention runs in the input dtype with float32 accumulation; the output has q's dtype.
After each forward `self.last_aux` holds what distillation needs (see `_pipeline`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from methods.base import AttentionModule, check_inputs, repeat_kv
from methods.sea.estimator import Estimator
from methods.sea.interp import cell_bounds, csr_counts, csr_to_dense, expand_columns, mask_to_csr, row_lengths
from methods.sea.topk import select_topk


def check_finite(**tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"sea: {name} contains non-finite values (NaN or Inf); refusing to attend")


def pool_columns(probs: torch.Tensor, *, K: int, causal: bool, valid: torch.Tensor | None) -> torch.Tensor:
    """Exact probabilities [B, H, R, T] for query rows 0..R-1 -> compressed [B, H, R, K]: the mass of the keys
    in each cell (cell geometry of interp.cell_bounds). Rows keep their sums."""
    B, H, R, T = probs.shape
    L = row_lengths(B, T, causal=causal, valid=valid, device=probs.device)[:, :R]   # [B, R]
    _, hi = cell_bounds(L, K)                                            # [B, R, K]
    if valid is not None and not causal:
        rank = (valid.long().cumsum(-1) - 1).clamp(min=0)[:, None, :].expand(B, R, T)
    else:
        rank = torch.arange(T, device=probs.device).expand(B, R, T)
    cell = torch.searchsorted(hi.contiguous(), rank.contiguous(), right=True).clamp(max=K - 1)   # [B, R, T]
    out = probs.new_zeros(B, H, R, K)
    return out.scatter_add_(-1, cell[:, None].expand(B, H, R, T), probs)


def causal_mean(v: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Cumulative mean of v over (valid) keys at or before t. v [B, H, T, D] float32."""
    if valid is not None:
        w = valid[:, None, :, None].to(v.dtype)                          # [B, 1, T, 1]
        return (v * w).cumsum(2) / w.cumsum(2).clamp(min=1)
    n = torch.arange(1, v.shape[2] + 1, device=v.device, dtype=v.dtype)
    return v.cumsum(2) / n[:, None]


class SEAAttention(AttentionModule):
    def __init__(self, *, heads: int, head_dim: int, causal: bool, k: int, K: int, mode: str, nbf: float,
                 max_len: int, oracle: bool, backend: str, force_s_prob: float, force_s_mix: float,
                 checkpoint: str | None, layer: int, seed: int):
        super().__init__()
        self.heads, self.head_dim, self.causal = heads, head_dim, causal
        self.k, self.K, self.mode, self.oracle, self.backend = k, K, mode, oracle, backend
        self.force_s_prob, self.force_s_mix = force_s_prob, force_s_mix
        self.estimator = Estimator(d=head_dim, H=heads, K=K, causal=causal, nbf=nbf, max_len=max_len, seed=seed)
        self.trained = False
        if checkpoint:
            self.load_estimator(checkpoint, layer)
        self.last_aux: dict = {}
        self.impl = self._impl("not-run")

    def load_estimator(self, path: str, layer: int) -> None:
        """Checkpoint: an Estimator state_dict, or {'layers': {layer: state_dict}} (keys may carry an
        'estimator.' prefix)."""
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(ckpt, dict) and "layers" in ckpt:
            layers = ckpt["layers"]
            ckpt = layers[layer] if layer in layers else layers[str(layer)]
        ckpt = {(key[len("estimator."):] if key.startswith("estimator.") else key): val for key, val in ckpt.items()}
        self.estimator.load_state_dict(ckpt)
        self.trained = True

    def _impl(self, kernel: str) -> str:
        est = "oracle" if self.oracle else ("trained" if self.trained else "untrained")
        sc = "estimated" if self.force_s_prob < 0 and self.force_s_mix < 0 else \
            f"forced(s_prob={self.force_s_prob:g}, s_mix={self.force_s_mix:g})"
        return (f"sea[estimator={est}, mode={self.mode}, k={self.k}, K={self.K}, "
                f"nb_features={self.estimator.nb_features}, scalers={sc}, sparse={kernel}]")

    # ------------------------------------------------------------------------------------------
    def _pipeline(self, q, k, v, *, causal, key_padding_mask, scale):
        check_inputs(q, k, v)
        check_finite(q=q, k=k, v=v)
        B, H, T, D = q.shape
        if causal != self.causal:
            raise ValueError(f"this sea layer was built for causal={self.causal}; called with causal={causal}")
        if H != self.heads or D != self.head_dim:
            raise ValueError(f"this sea layer was built for heads={self.heads}, head_dim={self.head_dim}; "
                             f"got q {tuple(q.shape)}")
        valid = key_padding_mask
        if valid is not None:
            valid = valid.to(torch.bool)
            if valid.shape != (B, T):
                raise ValueError(f"key_padding_mask must be [B, T] = {(B, T)}, got {tuple(valid.shape)}")
        scale = 1.0 / math.sqrt(D) if scale is None else scale
        kr, vr = repeat_kv(k, H), repeat_kv(v, H)                        # [B, H, T, D]
        # 1-2. estimate (float32). The oracle with both scalers forced needs no estimator at all.
        forced = self.force_s_prob >= 0 and self.force_s_mix >= 0
        if self.oracle and forced:
            logits = s_prob = s_mix = None
        else:
            logits, s_prob, s_mix = self.estimator(q, kr, vr, valid=valid)   # [B, H, T, K], [B, H, T, 1] x2
        if self.oracle:
            from methods.exact import softmax_attention_probs
            exact = softmax_attention_probs(q.float(), kr.float(), causal=causal, scale=scale,
                                            key_padding_mask=valid)      # [B, H, T, T]
            a_hat = pool_columns(exact, K=self.K, causal=causal, valid=valid)   # [B, H, T, K]
            logits = torch.log(a_hat.clamp_min(1e-30))
        else:
            a_hat = torch.softmax(logits, dim=-1)                        # [B, H, T, K]
        ones = q.new_ones(B, H, T, 1, dtype=torch.float32)
        if self.force_s_prob >= 0:
            s_prob = ones * self.force_s_prob
        if self.force_s_mix >= 0:
            s_mix = ones * self.force_s_mix
        # 3-4. grouped top-k, interpolation to key index lists
        mask = select_topk(a_hat, mode=self.mode, k=self.k, causal=causal, valid=valid)   # bool [B, H, T, K]
        row_ptr, col = mask_to_csr(mask, k=self.k, causal=causal, valid=valid)           # CSR over (b, h, t)
        # 6. average context
        if causal:
            c_avg = causal_mean(vr.float(), valid)                       # [B, H, T, D]
            avg_w = None
        else:
            qv = valid[:, None, :, None].float() if valid is not None else a_hat.new_ones(1, 1, T, 1)
            colmean = (a_hat * qv).sum(2, keepdim=True) / qv.sum(2, keepdim=True).clamp(min=1)   # [B, H, 1, K]
            L = row_lengths(B, T, causal=False, valid=valid, device=q.device)[:, :1]         # [B, 1]
            lo, hi = cell_bounds(L, self.K)                              # [B, 1, K]
            colmean = colmean / (hi - lo).clamp(min=1)[:, None].float()  # mass per key of the cell
            avg_w = expand_columns(colmean, causal=False, valid=valid, T=T)   # [B, H, 1, T]
            c_avg = avg_w @ vr.float()                                   # [B, H, 1, D]
        return dict(logits=logits, a_hat=a_hat, mask=mask, row_ptr=row_ptr, col=col,
                    count=csr_counts(row_ptr, (B, H, T)), s_prob=s_prob, s_mix=s_mix,
                    c_avg=c_avg, avg_w=avg_w, scale=scale, valid=valid)

    def forward(self, q, k, v, *, causal: bool, key_padding_mask=None, scale=None):
        from kernels.sea_sparse_attention import sea_sparse_attention

        aux = self._pipeline(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
        # 5. sparse attention over the selected keys (the Triton kernel on GPU / interpreter)
        c, ran = sea_sparse_attention(q, k, v, aux["row_ptr"], aux["col"], aux["scale"], backend=self.backend)
        c = c.float() * aux["s_prob"]                                    # [B, H, T, D]
        out = aux["s_mix"] * c + (1 - aux["s_mix"]) * aux["c_avg"]       # [B, H, T, D]
        if aux["valid"] is not None and not causal:
            out = out * aux["valid"][:, None, :, None]                   # padded query rows -> 0
        out = out.to(q.dtype)
        aux["c_sea"] = out
        self.last_aux = aux
        self.impl = self._impl(ran)
        return out

    @torch.no_grad()
    def attention_probs(self, q, k, v, *, causal, rows, key_padding_mask=None, scale=None):
        """The layer's own distribution for query rows: s_mix s_prob sparse-softmax + (1 - s_mix) average."""
        aux = self._pipeline(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
        B, H, T, D = q.shape
        rows = torch.as_tensor(rows, device=q.device).long()
        kr = repeat_kv(k, H).float()
        s = (q[:, :, rows].float() @ kr.transpose(-1, -2)) * aux["scale"]   # [B, H, R, T]
        sel = csr_to_dense(aux["row_ptr"], aux["col"], (B, H, T), T, rows=rows)   # bool [B, H, R, T]
        p = torch.nan_to_num(torch.softmax(s.masked_fill(~sel, float("-inf")), -1), nan=0.0)
        s_prob, s_mix = aux["s_prob"][:, :, rows], aux["s_mix"][:, :, rows]   # [B, H, R, 1]
        if causal:
            pos = torch.arange(T, device=q.device)
            vis = (pos[None, :] <= rows[:, None]).float()[None, None]    # [1, 1, R, T]
            if aux["valid"] is not None:
                vis = vis * aux["valid"][:, None, None, :]
            avg = vis / vis.sum(-1, keepdim=True).clamp(min=1)
        else:
            avg = aux["avg_w"].expand(B, H, len(rows), T)
        return s_mix * s_prob * p + (1 - s_mix) * avg
