"""`reformer`: LSH attention of the Reformer (Kitaev, Kaiser, Levskaya, ICLR 2020), in plain PyTorch.

What runs (per layer, per call):
  1. Angular LSH. A layer owns random Gaussian rotations R [D, n_hashes, n_buckets/2] drawn from a
     torch.Generator seeded with the build seed (and n_buckets). The bucket of a vector x in round r is
     argmax([x R_r ; -x R_r]) in [0, n_buckets). The rotations are shared by all heads and batch rows.
  2. Internal padding. T is padded to T_pad = n_chunks * bucket_size. Padded positions get bucket
     n_buckets (one past the last) so they sort to the end of every round; they are never attended and
     never emitted. n_buckets defaults to n_chunks rounded up to an even number (>= 2): the paper picks
     n_buckets so that a bucket holds about one chunk; the +/- trick needs it even.
  3. Sort. Each round sorts positions by (bucket, position). The rounds are laid end to end
     ([n_hashes * T_pad] items) and cut into chunks of bucket_size. Every chunk attends to itself and to
     the chunk before it, circularly over the concatenated rounds: the first chunk of round r looks back
     at the last chunk of round r-1 (round 0 at the last round). This is how the official trax code and
     reformer_pytorch lay it out (look-one-back on the joint sort); it is kept so that those two agree
     with this one.
  4. Masks. shared_qk=True (the paper): keys are the L2-normalised queries and the given k is IGNORED;
     a query's logit for its own position is replaced by -5e4 (so a token attends to itself only when
     nothing else is visible - the same constant reformer_pytorch uses). shared_qk=False keeps the given
     keys and hashes keys and queries with the same rotations (for pretrained models with separate Q
     and K); queries and keys are sorted separately and query chunk c attends key chunks c and c-1; no
     self-mask. Causal: keys after the query's position get -inf; key padding: padded keys get -inf
     (padding wins over the self-mask). attend_across_buckets=False additionally masks keys of a
     different (round, bucket).
  5. Rounds. Each round gives an output o_r and the log-sum-exp l_r of its visible logits; the result is
     sum_r softmax_r(l_r) o_r, i.e. one softmax over the union of (round, key) pairs. Duplicates are
     NOT corrected: a key that a query sees in k rounds (or twice in one round, when there is a single
     chunk in all) counts k times (reformer_pytorch's default allow_duplicate_attention=True; the
     paper's optional correction subtracts log(count) and is not implemented).
  A query row that sees no key in any round (e.g. separate-K causal mode when its chunks hold only
  future keys, or every visible key padded) outputs zeros. The softmax is computed in float32 (float64
  for float64 inputs); gradients flow through autograd (hashing and sorting are piecewise constant).

Causality note: no query ever attends a later key, but *which* earlier keys share its chunk depends on
the hashes of the whole sequence (as in the paper), so outputs are causal in the masking sense.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from methods.base import (AttentionModule, Method, MethodConfigError, Option, check_inputs, register,
                          repeat_kv)

SELF_LOGIT = -5e4   # logit of a token for itself in shared-QK mode (reformer_pytorch's constant)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def lsh_geometry(T: int, bucket_size: int, n_buckets_opt: int = 0) -> tuple[int, int, int]:
    """(T_pad, n_chunks, n_buckets) for a sequence of T tokens."""
    n_chunks = max(1, -(-T // bucket_size))
    if n_buckets_opt:
        n_buckets = n_buckets_opt
    else:
        n_buckets = max(2, n_chunks + (n_chunks % 2))
    return n_chunks * bucket_size, n_chunks, n_buckets


def make_rotations(seed: int, head_dim: int, n_hashes: int, n_buckets: int) -> torch.Tensor:
    """Random rotations [D, n_hashes, n_buckets // 2] (float32, CPU), deterministic in the arguments."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + n_buckets)
    return torch.randn(head_dim, n_hashes, n_buckets // 2, generator=gen, dtype=torch.float32)


def hash_buckets(x: torch.Tensor, rotations: torch.Tensor, n_buckets: int, T: int) -> torch.Tensor:
    """Angular LSH buckets [B, H, n_hashes, T_pad] of x [B, H, T_pad, D]; positions >= T get n_buckets."""
    rot = torch.einsum("bhtd,dri->bhrti", x, rotations.to(x.dtype))        # [B, H, R, T_pad, nb/2]
    buckets = torch.cat([rot, -rot], dim=-1).argmax(dim=-1)                # [B, H, R, T_pad]
    pad = torch.arange(x.shape[2], device=x.device) >= T                   # [T_pad]
    return buckets.masked_fill(pad, n_buckets)


def _sort_by_bucket(buckets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per round, positions sorted by (bucket, position) and the inverse permutation. Both [B,H,R,T_pad]."""
    Tp = buckets.shape[-1]
    pos = torch.arange(Tp, device=buckets.device)
    order = torch.argsort(buckets * Tp + pos, dim=-1)                      # [B, H, R, T_pad]
    undo = torch.argsort(order, dim=-1)                                    # [B, H, R, T_pad]
    return order, undo


def _look_one_back(x: torch.Tensor) -> torch.Tensor:
    """[B, H, NC, C, ...] -> [B, H, NC, 2C, ...]: each chunk followed by the previous one (circular)."""
    return torch.cat([x, x.roll(1, dims=2)], dim=3)


def _gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, D], idx [B, H, N] -> [B, H, N, D]."""
    return x.gather(2, idx[..., None].expand(-1, -1, -1, x.shape[-1]))


class _ZeroGradFor(torch.autograd.Function):
    """Identity on `out` that hands `unused` a zero gradient (shared-QK mode ignores k; callers that
    differentiate with respect to q, k and v then get dk = 0 rather than an 'unused tensor' error)."""

    @staticmethod
    def forward(ctx, out, unused):
        ctx.unused_meta = (unused.shape, unused.dtype, unused.device)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        shape, dtype, device = ctx.unused_meta
        return grad, torch.zeros(shape, dtype=dtype, device=device)


def lsh_attention(q, k, v, rotations, *, causal: bool, bucket_size: int, n_buckets: int,
                  shared_qk: bool, attend_across_buckets: bool = True, key_padding_mask=None,
                  scale: float | None = None, rows: torch.Tensor | None = None):
    """LSH attention. q [B, H, T, D]; k, v [B, Hkv, T, D]. Returns out [B, H, T, D] in the work dtype,
    and, when `rows` is given, also the implied attention [B, H, len(rows), T] of those query rows."""
    B, H, T, D = q.shape
    wd = work_dtype(q.dtype)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    C = bucket_size
    Tp, n_chunks, nb = lsh_geometry(T, C, n_buckets)
    R = rotations.shape[1]
    NC = R * n_chunks
    dev = q.device

    pad = Tp - T
    q = F.pad(q.to(wd), (0, 0, 0, pad))                                    # [B, H, Tp, D]
    v = F.pad(repeat_kv(v, H).to(wd), (0, 0, 0, pad))                      # [B, H, Tp, D]
    valid = torch.arange(Tp, device=dev) < T                               # [Tp]
    valid = valid[None].expand(B, Tp)
    if key_padding_mask is not None:
        valid = valid & F.pad(key_padding_mask.to(torch.bool), (0, pad), value=False)   # [B, Tp]

    qb = hash_buckets(q, rotations, nb, T)                                 # [B, H, R, Tp]
    q_order, q_undo = _sort_by_bucket(qb)
    if shared_qk:
        kk = F.normalize(q, p=2.0, dim=-1)                                 # [B, H, Tp, D]
        kb, k_order = qb, q_order
    else:
        kk = F.pad(repeat_kv(k, H).to(wd), (0, 0, 0, pad))                 # [B, H, Tp, D]
        kb = hash_buckets(kk, rotations, nb, T)                            # [B, H, R, Tp]
        k_order, _ = _sort_by_bucket(kb)

    q_pos = q_order.reshape(B, H, R * Tp)                                  # [B, H, R*Tp] positions
    k_pos = k_order.reshape(B, H, R * Tp)
    sq = _gather_rows(q, q_pos).view(B, H, NC, C, D)                       # [B, H, NC, C, D]
    sk = _look_one_back(_gather_rows(kk, k_pos).view(B, H, NC, C, D))      # [B, H, NC, 2C, D]
    sv = _look_one_back(_gather_rows(v, k_pos).view(B, H, NC, C, D))       # [B, H, NC, 2C, D]
    qp = q_pos.view(B, H, NC, C)                                           # [B, H, NC, C]
    kp = _look_one_back(k_pos.view(B, H, NC, C))                           # [B, H, NC, 2C]

    dots = torch.einsum("bhnid,bhnjd->bhnij", sq, sk) * scale             # [B, H, NC, C, 2C]
    if shared_qk:
        dots = dots.masked_fill(qp[..., :, None] == kp[..., None, :], SELF_LOGIT)
    kvalid = valid.gather(1, kp.reshape(B, -1)).view(B, H, NC, 1, 2 * C)
    bad = ~kvalid                                                          # [B, H, NC, 1, 2C]
    if causal:
        bad = bad | (kp[..., None, :] > qp[..., :, None])                  # [B, H, NC, C, 2C]
    if not attend_across_buckets:
        rnd = torch.arange(R, device=dev)[:, None] * (nb + 1)              # [R, 1]
        gq = (qb + rnd).gather(3, q_order).reshape(B, H, NC, C)           # global bucket ids, sorted
        gk = _look_one_back((kb + rnd).gather(3, k_order).reshape(B, H, NC, C))
        bad = bad | (gq[..., :, None] != gk[..., None, :])
    bad = bad.expand(dots.shape)
    seen = ~bad.all(dim=-1)                                                # [B, H, NC, C]
    # rows that see nothing get a dummy finite row so that no NaN reaches autograd
    dots = dots.masked_fill(bad | ~seen[..., None], float("-inf"))
    mx = dots.amax(dim=-1, keepdim=True).masked_fill(~seen[..., None], 0.0).detach()   # [B, H, NC, C, 1]
    ex = torch.exp(dots - mx)                                              # 0 where masked
    den = ex.sum(dim=-1, keepdim=True)
    probs = ex / den.masked_fill(~seen[..., None], 1.0)                    # [B, H, NC, C, 2C]
    so = torch.matmul(probs, sv)                                           # [B, H, NC, C, D]
    lse = (mx + torch.log(den)).squeeze(-1)                                # [B, H, NC, C]; -inf if unseen

    # back to positions, round by round
    o = so.reshape(B, H, R, Tp, D).gather(3, q_undo[..., None].expand(-1, -1, -1, -1, D))  # [B,H,R,Tp,D]
    l_r = lse.reshape(B, H, R, Tp).gather(3, q_undo)                       # [B, H, R, Tp]
    any_r = torch.isfinite(l_r).any(dim=2, keepdim=True)                   # [B, H, 1, Tp]
    w = torch.softmax(l_r.masked_fill(~any_r, 0.0), dim=2).masked_fill(~any_r, 0.0)   # [B, H, R, Tp]
    out = (w[..., None] * o).sum(dim=2)[:, :, :T]                          # [B, H, T, D]
    if shared_qk and k.requires_grad:
        out = _ZeroGradFor.apply(out, k)   # k is unused: give it an explicit zero gradient
    if rows is None:
        return out

    rows = rows.to(dev)
    nr = rows.numel()
    loc = q_undo[..., rows] + (torch.arange(R, device=dev) * Tp)[:, None]  # [B, H, R, nr] sorted index
    loc = loc.reshape(B, H, R * nr)
    prow = probs.reshape(B, H, NC * C, 2 * C).gather(2, loc[..., None].expand(-1, -1, -1, 2 * C))
    krow = kp.gather(2, (loc // C)[..., None].expand(-1, -1, -1, 2 * C))   # [B, H, R*nr, 2C]
    prow = prow.view(B, H, R, nr, 2 * C) * w[..., rows][..., None]         # [B, H, R, nr, 2C]
    krow = krow.view(B, H, R, nr, 2 * C)
    implied = torch.zeros(B, H, nr, Tp, dtype=wd, device=dev)
    for r in range(R):
        implied.scatter_add_(3, krow[:, :, r], prow[:, :, r])
    return out, implied[..., :T]


class ReformerAttention(AttentionModule):
    def __init__(self, *, head_dim: int, seq_len: int, n_hashes: int, bucket_size: int, n_buckets: int,
                 shared_qk: bool, attend_across_buckets: bool, seed: int, device: str = "cpu"):
        super().__init__()
        self.head_dim = head_dim
        self.n_hashes = n_hashes
        self.bucket_size = bucket_size
        self.n_buckets_opt = n_buckets
        self.shared_qk = shared_qk
        self.attend_across_buckets = attend_across_buckets
        self.seed = seed
        _, _, nb = lsh_geometry(seq_len, bucket_size, n_buckets)
        self.register_buffer("rotations", make_rotations(seed, head_dim, n_hashes, nb).to(device))
        self._extra: dict[int, torch.Tensor] = {}
        self.impl = self._impl_string(nb)

    def _impl_string(self, nb: int) -> str:
        mode = "shared-qk" if self.shared_qk else "separate-k"
        across = "" if self.attend_across_buckets else ",same-bucket-only"
        return (f"lsh[torch,{mode},n_hashes={self.n_hashes},bucket_size={self.bucket_size},"
                f"n_buckets={nb},seed={self.seed}{across}]")

    def rotations_for(self, T: int, device) -> tuple[torch.Tensor, int]:
        """The rotations used for a sequence of T tokens and its bucket count."""
        _, _, nb = lsh_geometry(T, self.bucket_size, self.n_buckets_opt)
        if self.rotations.shape[2] * 2 == nb:
            return self.rotations.to(device), nb
        if nb not in self._extra:   # another T than the build-time one: same rule, same seed
            self._extra[nb] = make_rotations(self.seed, self.head_dim, self.n_hashes, nb)
        return self._extra[nb].to(device), nb

    def forward(self, q, k, v, *, causal: bool, key_padding_mask=None, scale=None):
        check_inputs(q, k, v)
        rot, nb = self.rotations_for(q.shape[2], q.device)
        self.impl = self._impl_string(nb)
        out = lsh_attention(q, k, v, rot, causal=causal, bucket_size=self.bucket_size, n_buckets=nb,
                            shared_qk=self.shared_qk, attend_across_buckets=self.attend_across_buckets,
                            key_padding_mask=key_padding_mask, scale=scale)
        return out.to(q.dtype)

    def attention_probs(self, q, k, v, *, causal, rows, key_padding_mask=None, scale=None):
        rot, nb = self.rotations_for(q.shape[2], q.device)
        _, probs = lsh_attention(q, k, v, rot, causal=causal, bucket_size=self.bucket_size, n_buckets=nb,
                                 shared_qk=self.shared_qk, attend_across_buckets=self.attend_across_buckets,
                                 key_padding_mask=key_padding_mask, scale=scale, rows=rows)
        return probs.float() if probs.dtype != torch.float64 else probs


@register
class Reformer(Method):
    name = "reformer"
    summary = ("Reformer LSH attention: angular LSH (random rotations), sort by bucket, attend within "
               "chunk + previous chunk, rounds combined by log-sum-exp (Kitaev et al. 2020)")
    exact = False
    complexity = ("O(n_hashes T (2 bucket_size) D) time + O(n_hashes T log T) sort; "
                  "O(n_hashes T bucket_size) memory")
    options = (
        Option("n_hashes", 4, "hash rounds (paper: 1-8; 4 is the paper's common training setting)"),
        Option("bucket_size", 64, "chunk length; T is padded to a multiple internally"),
        Option("n_buckets", 0, "hash buckets per round (even); 0 = ceil(T / bucket_size) rounded up to even"),
        Option("shared_qk", True, "True: keys = normalised queries (paper, k is ignored); "
                                  "False: keep the given keys, hash q and k with the same rotations"),
        Option("attend_across_buckets", True, "False: also mask keys of another bucket within the chunks"),
    )

    @classmethod
    def validate_config(cls, cfg):
        if cfg["n_hashes"] < 1:
            raise MethodConfigError(f"reformer.n_hashes={cfg['n_hashes']}: must be >= 1")
        if cfg["bucket_size"] < 1:
            raise MethodConfigError(f"reformer.bucket_size={cfg['bucket_size']}: must be >= 1")
        nb = cfg["n_buckets"]
        if nb < 0 or nb == 1 or nb % 2:
            raise MethodConfigError(f"reformer.n_buckets={nb}: must be 0 (auto) or an even number >= 2")

    @classmethod
    def build(cls, cfg, problem, *, layer=0, seed=0):
        return ReformerAttention(head_dim=problem.head_dim, seq_len=problem.seq_len,
                                 n_hashes=cfg["n_hashes"], bucket_size=cfg["bucket_size"],
                                 n_buckets=cfg["n_buckets"], shared_qk=cfg["shared_qk"],
                                 attend_across_buckets=cfg["attend_across_buckets"], seed=seed,
                                 device=problem.device)
