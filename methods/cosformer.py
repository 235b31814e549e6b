"""`cosformer`: cosFormer (Qin et al., "cosFormer: Rethinking Softmax in Attention", ICLR 2022).

Similarity s(i, j) = relu(q_i) . relu(k_j) * cos(pi/2 * (i - j) / M), decomposed with
cos(a - b) = cos a cos b + sin a sin b into a linear attention over 2D-dimensional features
    phi_q(i) = [relu(q_i) cos(theta_i), relu(q_i) sin(theta_i)],  theta_i = pi * i / (2 M)
    phi_k(j) = [relu(k_j) cos(theta_j), relu(k_j) sin(theta_j)]
with positions i = 1..T (1-based, as the official code's index) and M = the sequence length T, or the
`max_len` option when set (then T <= max_len is required, so every angle stays within [0, pi/2] and the
weights stay non-negative).
    out_i = sum_j s(i, j) v_j / max(sum_j s(i, j), eps)        (eps = 1e-6, clamped as the official code)
over visible j (j <= i when causal; padded keys get zero features, so a row with no visible key is 0).

Bidirectional: two einsums, O(T D^2). Causal: the cos and sin halves are concatenated into one feature
vector of size 2D and run through the chunked linear-attention kernel (kernels/linear_attention.py), which
carries a [2D, D] state across chunks - no (T, 2D, D) tensor is built. O(T D^2) time, O(T D) memory.

`scale` is accepted and ignored: ReLU features are positively homogeneous, so scaling q only rescales
numerator and denominator together (the eps clamp aside). fp16/bf16 inputs are computed in fp32 and the
output is cast back to the input dtype. GQA: keys/values keep their Hkv heads (the kernel and the
einsums index the shared head).
"""
from __future__ import annotations

import math

import torch

from methods.base import AttentionModule, Method, MethodConfigError, Option, check_inputs, register


def cosformer_angles(T: int, max_len: int, device) -> torch.Tensor:
    """theta_i = pi/2 * i / M for i = 1..T, M = max_len or T: fp32 [T]."""
    M = max_len if max_len > 0 else T
    if T > M:
        raise ValueError(f"cosformer: sequence length {T} exceeds max_len={M}")
    return (math.pi / 2) * torch.arange(1, T + 1, device=device, dtype=torch.float32) / M


def cosformer_features(x: torch.Tensor, theta: torch.Tensor, key_padding_mask=None) -> torch.Tensor:
    """[B, H, T, D] -> fp32 [B, H, T, 2D] = [relu(x) cos(theta), relu(x) sin(theta)]; padded keys -> 0."""
    r = torch.relu(x.float())                                          # [B, H, T, D]
    f = torch.cat([r * torch.cos(theta)[:, None], r * torch.sin(theta)[:, None]], dim=-1)   # [B, H, T, 2D]
    if key_padding_mask is not None:
        f = f * key_padding_mask[:, None, :, None]
    return f


class CosformerAttention(AttentionModule):
    def __init__(self, *, max_len: int, eps: float, chunk: int, backend: str):
        super().__init__()
        self.max_len, self.eps, self.chunk, self.backend = max_len, eps, chunk, backend
        self.impl = "cosformer"

    def _features(self, q, k, key_padding_mask):
        theta = cosformer_angles(q.shape[2], self.max_len, q.device)   # [T]
        return cosformer_features(q, theta), cosformer_features(k, theta, key_padding_mask)

    def forward(self, q, k, v, *, causal: bool, key_padding_mask=None, scale=None):
        check_inputs(q, k, v)
        B, H, T, D = q.shape
        Hkv = k.shape[1]
        fq, fk = self._features(q, k, key_padding_mask)               # [B, H, T, 2D], [B, Hkv, T, 2D]
        v32 = v.float()
        if causal:
            from kernels.linear_attention import causal_linear_attention, pick_backend

            num, den = causal_linear_attention(fq, fk, v32, chunk=self.chunk, backend=self.backend)
            self.impl = f"cosformer causal chunked linear attention ({pick_backend(fq, self.backend)})"
        else:
            G = H // Hkv
            fqg = fq.view(B, Hkv, G, T, 2 * D)                         # [B, Hkv, G, T, 2D]
            kv = torch.einsum("bktf,bkte->bkfe", fk, v32)              # [B, Hkv, 2D, D]
            ksum = fk.sum(2)                                           # [B, Hkv, 2D]
            num = torch.einsum("bkgtf,bkfe->bkgte", fqg, kv).reshape(B, H, T, D)
            den = torch.einsum("bkgtf,bkf->bkgt", fqg, ksum).reshape(B, H, T)
            self.impl = "cosformer bidirectional einsum"
        out = num / torch.clamp_min(den, self.eps)[..., None]
        return out.to(q.dtype)

    def attention_probs(self, q, k, v, *, causal, rows, key_padding_mask=None, scale=None):
        """Implied weights s(i, j) / max(sum_j s(i, j), eps) for query rows `rows`: [B, H, R, T]."""
        H, T = q.shape[1], k.shape[2]
        fq, fk = self._features(q, k, key_padding_mask)
        fk = fk.repeat_interleave(H // fk.shape[1], dim=1)                                 # [B, H, T, 2D]
        a = torch.matmul(fq[:, :, rows], fk.transpose(-1, -2))                            # [B, H, R, T]
        if causal:
            pos = torch.arange(q.shape[2], device=q.device)[rows] + (T - q.shape[2])
            a = a * (torch.arange(T, device=q.device)[None, :] <= pos[:, None])           # [R, T]
        return a / torch.clamp_min(a.sum(-1, keepdim=True), self.eps)


@register
class Cosformer(Method):
    name = "cosformer"
    summary = "cosFormer: ReLU features with cos re-weighting by position; linear attention"
    exact = False
    dtypes = ("fp32", "fp16", "bf16")
    complexity = "O(T D^2) time, O(T D) memory"
    options = (
        Option("max_len", 0, "M in the angle pi*i/(2M); 0 = the sequence length (then T <= max_len is required)"),
        Option("eps", 1e-6, "clamp of the normaliser (as the official code)"),
        Option("chunk", 64, "chunk length of the causal linear-attention kernel (power of two >= 16)"),
        Option("backend", "auto", "causal kernel: auto (Triton on CUDA), triton or torch",
               choices=("auto", "triton", "torch")),
    )

    @classmethod
    def validate_config(cls, cfg):
        if cfg["max_len"] < 0:
            raise MethodConfigError(f"cosformer.max_len={cfg['max_len']} must be >= 0")
        if not cfg["eps"] > 0:
            raise MethodConfigError(f"cosformer.eps={cfg['eps']} must be > 0")
        c = cfg["chunk"]
        if c < 16 or c & (c - 1):
            raise MethodConfigError(f"cosformer.chunk={c} must be a power of two >= 16")

    @classmethod
    def extra_reasons(cls, problem, cfg):
        if cfg["max_len"] > 0 and problem.seq_len > cfg["max_len"]:
            return [f"seq_len={problem.seq_len} exceeds cosformer.max_len={cfg['max_len']}"]
        return []

    @classmethod
    def build(cls, cfg, problem, *, layer=0, seed=0):
        return CosformerAttention(max_len=cfg["max_len"], eps=cfg["eps"], chunk=cfg["chunk"], backend=cfg["backend"])
