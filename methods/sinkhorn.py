"""`sinkhorn`: Sparse Sinkhorn Attention (Tay, Bahri, Yang, Metzler, Juan, ICML 2020), in plain PyTorch.

What runs (per layer, per call; all per key/value head, shared by the query heads of a GQA group):
  1. Blocks. T is padded to T_pad = nb * block_size; padded positions (and keys masked by
     key_padding_mask) are zeroed and flagged invalid: their keys/values are never read.
  2. Block embeddings from the keys: bidirectional - the mean of the block's valid keys (the paper sums;
     the scale is absorbed by the learned sorting network); causal - the mean of the valid keys at
     positions <= the block's FIRST token (the official LRA code embeds a causal block by its first
     token; the running mean keeps earlier context and is equally free of future tokens).
  3. Sorting network (learned, per layer, per kv head, in state_dict): "mlp" (the paper's two-layer
     ReLU network, D -> D -> max_blocks; no ReLU on the output logits here) or "linear" (D -> max_blocks,
     like the LRA code). max_blocks comes from the build-time seq_len; the first nb outputs are used, so
     longer sequences than the build-time one are refused with a ValueError.
     Row i of the logits R [nb, nb] scores the source blocks j that destination block i gathers.
  4. Sinkhorn balancing in log space: X = R / temperature (+ Gumbel noise when gumbel=True), then
     sinkhorn_iter times: row normalisation, column normalisation; S = exp(X) is (near) doubly stochastic.
     Causal Sinkhorn balancing: only j < i is allowed (block 0 gathers nothing), and the column
     normaliser of entry (i, j) only sums rows <= i (a cumulative log-sum-exp down the column), so
     row i depends on blocks <= i alone; each causal iteration normalises columns first and rows last,
     so rows i >= 1 sum to 1 (a convex mix of earlier blocks). With a strictly lower-triangular support
     the result cannot be doubly stochastic (row 0 is empty; the column sums are not 1).
  5. Sorted blocks: K~_i = sum_j S[i, j] K_j and V~_i = sum_j S[i, j] V_j (invalid tokens zeroed); a slot
     of K~_i whose every contributing token is invalid is masked.
  6. Attention: each query block attends to [its own block ; its sorted block] in ONE softmax (2 *
     block_size keys); causal: local keys after the query are masked (sorted blocks are all in the
     past). Softmax in float32 (float64 for float64 inputs); rows with nothing visible output zeros.
  The implied attention of a query over the original keys (attention_probs) is its local weights plus,
  for sorted slot t, weight(t) * S[i, j] on key (j, t); attention_probs @ V equals the output.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import AttentionModule, Method, MethodConfigError, Option, check_inputs, register

_NEG = -1e9        # masked log-weight: exp() is exactly 0 in float32/float64, and it stays finite


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def causal_block_mask(nb: int, device=None) -> torch.Tensor:
    """bool [nb, nb]: True where destination block i may gather source block j (j < i)."""
    i = torch.arange(nb, device=device)
    return i[None, :] < i[:, None]


def sinkhorn_log(x: torch.Tensor, n_iter: int, *, causal: bool = False) -> torch.Tensor:
    """Log-space Sinkhorn balancing of logits x [..., n, n] (rows, then columns, n_iter times).

    Returns the balanced matrix S = exp(x) (not the log). Causal: support j < i, and the column
    normaliser of row i only sums rows <= i, and each iteration ends with the row normalisation so
    that every row i >= 1 is a convex combination of earlier blocks."""
    if not causal:
        for _ in range(n_iter):
            x = x - torch.logsumexp(x, dim=-1, keepdim=True)
            x = x - torch.logsumexp(x, dim=-2, keepdim=True)
        return torch.exp(x)
    allowed = causal_block_mask(x.shape[-1], x.device)
    x = x.masked_fill(~allowed, _NEG)
    for _ in range(n_iter):
        x = (x - torch.logcumsumexp(x, dim=-2)).masked_fill(~allowed, _NEG)
        x = (x - torch.logsumexp(x, dim=-1, keepdim=True)).masked_fill(~allowed, _NEG)
    return torch.exp(x).masked_fill(~allowed, 0.0)


class SinkhornAttention(AttentionModule):
    def __init__(self, *, kv_heads: int, head_dim: int, seq_len: int, block_size: int, sinkhorn_iter: int,
                 temperature: float, gumbel: bool, sortnet: str, seed: int, device: str = "cpu"):
        super().__init__()
        self.block_size = block_size
        self.sinkhorn_iter = sinkhorn_iter
        self.temperature = temperature
        self.gumbel = gumbel
        self.sortnet = sortnet
        self.seed = seed
        self.max_blocks = max(1, -(-seq_len // block_size))
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        D, M = head_dim, self.max_blocks

        def init(*shape, fan_in):
            return nn.Parameter((torch.randn(*shape, generator=gen) / math.sqrt(fan_in)).to(device))

        if sortnet == "mlp":
            self.w1 = init(kv_heads, D, D, fan_in=D)
            self.b1 = nn.Parameter(torch.zeros(kv_heads, D, device=device))
        self.w2 = init(kv_heads, D, M, fan_in=D)
        self.b2 = nn.Parameter(torch.zeros(kv_heads, M, device=device))
        self._noise_gen = torch.Generator(device="cpu").manual_seed(int(seed) + 1)
        self.impl = ""

    def _impl_string(self, nb: int) -> str:
        noise = ",gumbel" if self.gumbel else ""
        return (f"sinkhorn[torch,block_size={self.block_size},n_blocks={nb},iters={self.sinkhorn_iter},"
                f"tau={self.temperature},sortnet={self.sortnet}{noise},seed={self.seed}]")

    # ---------------------------------------------------------------------------------------------
    def _prepare(self, q, k, v, key_padding_mask):
        B, H, T, D = q.shape
        Hkv = k.shape[1]
        bs = self.block_size
        nb = max(1, -(-T // bs))
        if nb > self.max_blocks:
            raise ValueError(f"sinkhorn: T={T} needs {nb} blocks of {bs}, but the sorting network of this "
                             f"layer was built for at most {self.max_blocks} (seq_len of the build problem)")
        if k.shape[1] != self.w2.shape[0]:
            raise ValueError(f"sinkhorn: built for {self.w2.shape[0]} kv heads, got {k.shape[1]}")
        Tp = nb * bs
        wd = work_dtype(q.dtype)
        pad = Tp - T
        valid = torch.arange(Tp, device=q.device) < T                       # [Tp]
        valid = valid[None].expand(B, Tp)
        if key_padding_mask is not None:
            valid = valid & F.pad(key_padding_mask.to(torch.bool), (0, pad), value=False)   # [B, Tp]
        vf = valid.to(wd)[:, None, :, None]                                 # [B, 1, Tp, 1]
        q = F.pad(q.to(wd), (0, 0, 0, pad))                                 # [B, H, Tp, D]
        k = F.pad(k.to(wd), (0, 0, 0, pad)) * vf                            # [B, Hkv, Tp, D] invalid -> 0
        v = F.pad(v.to(wd), (0, 0, 0, pad)) * vf                            # [B, Hkv, Tp, D]
        return q, k, v, valid, nb, Tp, wd

    def permutation_from(self, k, valid, nb, causal: bool) -> torch.Tensor:
        """Balanced block matrix S [B, Hkv, nb, nb] from zeroed keys k [B, Hkv, Tp, D], valid [B, Tp]."""
        B, Hkv, Tp, D = k.shape
        bs = self.block_size
        wd = k.dtype
        vf = valid.to(wd)
        if causal:
            csum = k.cumsum(dim=2)[:, :, ::bs]                              # [B, Hkv, nb, D] up to first token
            ccnt = vf.cumsum(dim=1)[:, ::bs]                                # [B, nb]
            emb = csum / ccnt.clamp_min(1.0)[:, None, :, None]
        else:
            bsum = k.view(B, Hkv, nb, bs, D).sum(dim=3)                     # [B, Hkv, nb, D]
            bcnt = vf.view(B, nb, bs).sum(dim=2)                            # [B, nb]
            emb = bsum / bcnt.clamp_min(1.0)[:, None, :, None]
        if self.sortnet == "mlp":
            hid = torch.relu(torch.einsum("bgnd,gde->bgne", emb, self.w1.to(wd)) + self.b1.to(wd)[:, None, :])
        else:
            hid = emb
        logits = torch.einsum("bgne,gem->bgnm", hid, self.w2.to(wd)) + self.b2.to(wd)[:, None, :]
        logits = logits[..., :nb]                                           # [B, Hkv, nb, nb]
        x = logits / self.temperature
        if self.gumbel:
            u = torch.rand(x.shape, generator=self._noise_gen, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
            x = x + (-torch.log(-torch.log(u))).to(device=x.device, dtype=wd) / self.temperature
        return sinkhorn_log(x, self.sinkhorn_iter, causal=causal)

    def permutation(self, k, *, causal: bool, key_padding_mask=None) -> torch.Tensor:
        """The balanced block matrix S [B, Hkv, nb, nb] that a call with these keys would use."""
        _, k, _, valid, nb, _, _ = self._prepare(k.new_zeros(k.shape[0], 1, *k.shape[2:]), k, k,
                                                 key_padding_mask)
        return self.permutation_from(k, valid, nb, causal)

    def _attend(self, q, k, v, *, causal, key_padding_mask, scale, rows=None):
        B, H, T, D = q.shape
        Hkv = k.shape[1]
        G = H // Hkv
        bs = self.block_size
        scale = 1.0 / math.sqrt(D) if scale is None else scale
        q, k, v, valid, nb, Tp, wd = self._prepare(q, k, v, key_padding_mask)
        S = self.permutation_from(k, valid, nb, causal)                     # [B, Hkv, nb, nb]
        self.impl = self._impl_string(nb)

        kb = k.view(B, Hkv, nb, bs, D)                                      # [B, Hkv, nb, bs, D]
        vb = v.view(B, Hkv, nb, bs, D)
        validb = valid.view(B, nb, bs).to(wd)                               # [B, nb, bs]
        ks = torch.einsum("bgij,bgjtd->bgitd", S, kb)                       # [B, Hkv, nb, bs, D] sorted
        vs = torch.einsum("bgij,bgjtd->bgitd", S, vb)
        slot_w = torch.einsum("bgij,bjt->bgit", S, validb)                  # [B, Hkv, nb, bs]
        qb = q.view(B, Hkv, G, nb, bs, D)                                   # [B, Hkv, G, nb, bs, D]

        s_loc = torch.einsum("bgzntd,bgnsd->bgznts", qb, kb) * scale        # [B, Hkv, G, nb, bs, bs]
        s_srt = torch.einsum("bgzntd,bgnsd->bgznts", qb, ks) * scale        # [B, Hkv, G, nb, bs, bs]
        ok_loc = valid.view(B, 1, 1, nb, 1, bs)
        if causal:
            ok_loc = ok_loc & torch.ones(bs, bs, dtype=torch.bool, device=q.device).tril()
        ok_srt = (slot_w > 0)[:, :, None, :, None, :]                       # [B, Hkv, 1, nb, 1, bs]
        scores = torch.cat([s_loc, s_srt], dim=-1)                          # [B, Hkv, G, nb, bs, 2bs]
        ok = torch.cat([ok_loc.expand(s_loc.shape), ok_srt.expand(s_srt.shape)], dim=-1)
        seen = ok.any(dim=-1, keepdim=True)
        scores = scores.masked_fill(~ok, float("-inf")).masked_fill(~seen, 0.0)
        probs = torch.softmax(scores, dim=-1).masked_fill(~seen, 0.0)
        p_loc, p_srt = probs[..., :bs], probs[..., bs:]
        out = (torch.einsum("bgznts,bgnsd->bgzntd", p_loc, vb)
               + torch.einsum("bgznts,bgnsd->bgzntd", p_srt, vs))           # [B, Hkv, G, nb, bs, D]
        out = out.reshape(B, H, Tp, D)[:, :, :T]                            # [B, H, T, D]
        if rows is None:
            return out

        rows = rows.to(q.device)
        blk, off = rows // bs, rows % bs
        nr = rows.numel()
        pl = p_loc[:, :, :, blk, off]                                       # [B, Hkv, G, nr, bs]
        ps = p_srt[:, :, :, blk, off]                                       # [B, Hkv, G, nr, bs]
        Sr = S[:, :, blk]                                                   # [B, Hkv, nr, nb]
        implied = (ps[:, :, :, :, None, :] * Sr[:, :, None, :, :, None]
                   * validb[:, None, None, None])                           # [B, Hkv, G, nr, nb, bs]
        implied = implied.reshape(B, H, nr, Tp).clone()                     # [B, H, nr, Tp]
        cols = blk[:, None] * bs + torch.arange(bs, device=q.device)        # [nr, bs] local key positions
        implied.scatter_add_(3, cols.expand(B, H, nr, bs), pl.reshape(B, H, nr, bs))
        return implied[..., :T]

    def forward(self, q, k, v, *, causal: bool, key_padding_mask=None, scale=None):
        check_inputs(q, k, v)
        out = self._attend(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
        return out.to(q.dtype)

    def attention_probs(self, q, k, v, *, causal, rows, key_padding_mask=None, scale=None):
        probs = self._attend(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale, rows=rows)
        return probs if probs.dtype == torch.float64 else probs.float()


@register
class Sinkhorn(Method):
    name = "sinkhorn"
    summary = ("Sparse Sinkhorn attention: a learned sorting network + Sinkhorn balancing softly permutes "
               "key blocks; each query block attends its own block and its sorted block (Tay et al. 2020)")
    exact = False
    complexity = "O(T (2 b + T/b) D) time, O(T b + (T/b)^2) memory (b = block_size)"
    options = (
        Option("block_size", 64, "block length b; T is padded to a multiple internally"),
        Option("sinkhorn_iter", 8, "Sinkhorn balancing iterations (row + column normalisation each)"),
        Option("temperature", 0.75, "logits are divided by this before balancing"),
        Option("gumbel", False, "add Gumbel noise to the sorting logits (seeded; off for benchmarking)"),
        Option("sortnet", "mlp", "sorting network: mlp (paper, D -> D -> blocks, ReLU) or linear",
               choices=("mlp", "linear")),
    )

    @classmethod
    def validate_config(cls, cfg):
        if cfg["block_size"] < 1:
            raise MethodConfigError(f"sinkhorn.block_size={cfg['block_size']}: must be >= 1")
        if cfg["sinkhorn_iter"] < 0:
            raise MethodConfigError(f"sinkhorn.sinkhorn_iter={cfg['sinkhorn_iter']}: must be >= 0")
        if not cfg["temperature"] > 0:
            raise MethodConfigError(f"sinkhorn.temperature={cfg['temperature']}: must be > 0")

    @classmethod
    def build(cls, cfg, problem, *, layer=0, seed=0):
        return SinkhornAttention(kv_heads=problem.kv_heads, head_dim=problem.head_dim, seq_len=problem.seq_len,
                                 block_size=cfg["block_size"], sinkhorn_iter=cfg["sinkhorn_iter"],
                                 temperature=float(cfg["temperature"]), gumbel=cfg["gumbel"],
                                 sortnet=cfg["sortnet"], seed=seed, device=problem.device)
