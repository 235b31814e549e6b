"""`performer`: FAVOR+ (Choromanski et al., "Rethinking Attention with Performers", ICLR 2021).

Softmax kernel estimated with positive orthogonal random features:
    x' = x * sqrt(scale)                      (scale = 1/sqrt(D) by default, i.e. x' = x D^-1/4)
    phi(x) = (exp(W x' - |x'|^2 / 2 - stabilizer) + eps) / sqrt(m)          W: [m, D], eps = 1e-4
so that E[phi(q) . phi(k)] ~ exp(scale q.k) (up to the stabilizer/eps). W is built from blocks of D
orthonormal rows (QR of a Gaussian matrix, sign-corrected so the rows are Haar-distributed), stacked and
truncated to m rows, each row rescaled by an independent chi(D) norm (the norm of a fresh Gaussian
vector), as the paper's orthogonal random features.

Stabilizer (numerical; it cancels in exact arithmetic up to eps):
  * queries: the per-row max of W x' (detached), as the reference implementation;
  * keys, bidirectional: the max of W x' over all real keys and features of the (batch, head), detached,
    as the reference implementation (padded keys excluded);
  * keys, causal: the reference's global max would let *future* keys move every key feature relative to
    eps (a small causality leak). We use the max over the keys every query can see - the first real key
    of the (batch, head) - floored at max_j |w_j|^2/2 - 60 so exp() can never overflow (W x' - |x'|^2/2
    <= |w|^2/2 for every x). This keeps the method exactly causal.
Generalized ReLU kernel (kernel=relu): phi(x) = relu(W x') + eps, eps = 1e-3 (as performer-pytorch).
Note: eps biases the estimate towards uniform attention when the stabilised features are small (large
|x'| or many features push exp(W x' - |x'|^2/2 - max) below eps); the `eps` option changes it (Google's
JAX code uses 1e-6, performer-pytorch 1e-4, our default).

Attention: out_t = phi(q_t) . sum_s phi(k_s) v_s^T / phi(q_t) . sum_s phi(k_s) over visible keys s
(s <= t when causal; padded keys get zero features). Bidirectional: two einsums, O(T m D). Causal: the
chunked linear-attention kernel (kernels/linear_attention.py, Triton on CUDA or under TRITON_INTERPRET,
its PyTorch chunked twin on plain CPU), O(T m D) time and O(T (m + D)) memory. Features and the linear
attention are computed in fp32 for fp16/bf16 inputs; the output is cast back to the input dtype.

Options: nb_features (m; 0 = automatic) and nbf (the SEA paper's divisor: m = int(D ln D / nbf)) are
mutually exclusive: giving both (> 0) is a configuration error. With neither, m = int(D ln D).
The random projection is a buffer (saved in state_dict), drawn from a torch.Generator seeded with
seed * 100003 + layer; `redraw_features()` draws the next one from the same generator (deterministic).
"""
from __future__ import annotations

import math

import torch

from methods.base import AttentionModule, Method, MethodConfigError, Option, check_inputs, register

SOFTMAX_EPS = 1e-4
RELU_EPS = 1e-3
_OVERFLOW_MARGIN = 60.0      # exp(60) ~ 1e26: room for sums over long sequences in fp32


def gaussian_orthogonal_features(m: int, d: int, *, generator: torch.Generator, ortho: bool = True) -> torch.Tensor:
    """Random projection [m, d] (fp32, CPU). ortho: orthogonal blocks with chi(d) row norms; else iid N(0, 1)."""
    if not ortho:
        return torch.randn(m, d, generator=generator, dtype=torch.float64).float()
    blocks = []
    for _ in range(-(-m // d)):
        g = torch.randn(d, d, generator=generator, dtype=torch.float64)
        qm, r = torch.linalg.qr(g)                                  # g = qm r
        qm = qm * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)     # sign fix: Haar-distributed
        blocks.append(qm.T)                                         # rows orthonormal, [d, d]
    w = torch.cat(blocks)[:m]                                       # [m, d]
    norms = torch.randn(m, d, generator=generator, dtype=torch.float64).norm(dim=1)   # chi(d), [m]
    return (w * norms[:, None]).float()


def default_nb_features(head_dim: int, nb_features: int = 0, nbf: float = 0.0) -> int:
    if nb_features > 0:
        return nb_features
    div = nbf if nbf > 0 else 1.0
    return max(1, int(head_dim * math.log(head_dim) / div)) if head_dim > 1 else 1


def performer_features(x: torch.Tensor, w: torch.Tensor, *, kernel: str, is_query: bool, causal: bool,
                       scale: float, key_padding_mask: torch.Tensor | None = None,
                       eps: float | None = None) -> torch.Tensor:
    """FAVOR+ features of x [B, H, T, D] with projection w [m, D] -> fp32 [B, H, T, m].

    Padded keys (key_padding_mask False) get zero features; queries ignore the mask.
    eps: None = kernel default (SOFTMAX_EPS / RELU_EPS)."""
    if eps is None:
        eps = RELU_EPS if kernel == "relu" else SOFTMAX_EPS
    x = x.float() * math.sqrt(scale)                                  # x', [B, H, T, D]
    w = w.to(device=x.device, dtype=torch.float32)
    dd = torch.matmul(x, w.T)                                         # [B, H, T, m]
    real = None if is_query or key_padding_mask is None else key_padding_mask[:, None, :, None]   # [B, 1, T, 1]
    if kernel == "relu":
        phi = torch.relu(dd) + eps
    else:
        diag = 0.5 * (x * x).sum(-1, keepdim=True)                    # [B, H, T, 1]
        with torch.no_grad():
            if is_query:
                stab = dd.amax(-1, keepdim=True)                      # [B, H, T, 1]
            else:
                rowmax = dd.amax(-1, keepdim=True)                    # [B, H, T, 1]
                if real is not None:
                    rowmax = rowmax.masked_fill(~real, float("-inf"))
                if causal:
                    # max over the first real key (visible to every query): no future token involved
                    first = torch.zeros(dd.shape[0], dtype=torch.long, device=dd.device) if real is None \
                        else torch.argmax(key_padding_mask.to(torch.int8), dim=1)                      # [B]
                    stab = rowmax.gather(2, first.view(-1, 1, 1, 1).expand(-1, dd.shape[1], 1, 1))    # [B, H, 1, 1]
                    bound = 0.5 * (w * w).sum(-1).max() - _OVERFLOW_MARGIN    # W x' - |x'|^2/2 <= |w|^2/2
                    stab = torch.maximum(stab, bound)
                else:
                    stab = rowmax.amax(2, keepdim=True)               # [B, H, 1, 1]
                stab = torch.where(torch.isfinite(stab), stab, torch.zeros_like(stab))   # all-padded rows
        phi = torch.exp(dd - diag - stab) + eps
        phi = phi / math.sqrt(w.shape[0])
    if real is not None:
        phi = phi * real
    return phi


class PerformerAttention(AttentionModule):
    def __init__(self, head_dim: int, nb_features: int, *, kernel: str, ortho: bool, seed: int, layer: int,
                 chunk: int, backend: str, eps: float | None = None, device: str = "cpu"):
        super().__init__()
        self.head_dim, self.nb_features, self.kernel, self.ortho = head_dim, nb_features, kernel, ortho
        self.seed, self.layer, self.chunk, self.backend, self.eps = seed, layer, chunk, backend, eps
        self.generator = torch.Generator().manual_seed(seed * 100003 + layer)
        self.redraws = 0
        w = gaussian_orthogonal_features(nb_features, head_dim, generator=self.generator, ortho=ortho)
        self.register_buffer("projection", w.to(device))              # [m, D]
        self.impl = self._impl("")

    def _impl(self, path: str) -> str:
        return (f"favor+[{self.kernel},m={self.nb_features},{'ortho' if self.ortho else 'iid'},"
                f"seed={self.seed},layer={self.layer},redraws={self.redraws}]{path}")

    @torch.no_grad()
    def redraw_features(self) -> None:
        """Draw a fresh projection from this module's generator (deterministic sequence per seed/layer)."""
        w = gaussian_orthogonal_features(self.nb_features, self.head_dim, generator=self.generator, ortho=self.ortho)
        self.projection.copy_(w.to(self.projection.device))
        self.redraws += 1

    def _features(self, q, k, *, causal, key_padding_mask, scale):
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        fq = performer_features(q, self.projection, kernel=self.kernel, is_query=True, causal=causal, scale=scale,
                                eps=self.eps)
        fk = performer_features(k, self.projection, kernel=self.kernel, is_query=False, causal=causal, scale=scale,
                                key_padding_mask=key_padding_mask, eps=self.eps)
        return fq, fk                                                  # [B, H, T, m], [B, Hkv, T, m]

    def forward(self, q, k, v, *, causal: bool, key_padding_mask=None, scale=None):
        check_inputs(q, k, v)
        B, H, T, D = q.shape
        Hkv = k.shape[1]
        fq, fk = self._features(q, k, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
        v32 = v.float()
        if causal:
            from kernels.linear_attention import causal_linear_attention, pick_backend

            num, den = causal_linear_attention(fq, fk, v32, chunk=self.chunk, backend=self.backend)
            self.impl = self._impl(f" causal chunked linear attention ({pick_backend(fq, self.backend)})")
        else:
            G = H // Hkv
            fqg = fq.view(B, Hkv, G, T, -1)                            # [B, Hkv, G, T, m]
            kv = torch.einsum("bktm,bkte->bkme", fk, v32)              # [B, Hkv, m, D]
            ksum = fk.sum(2)                                           # [B, Hkv, m]
            num = torch.einsum("bkgtm,bkme->bkgte", fqg, kv).reshape(B, H, T, D)
            den = torch.einsum("bkgtm,bkm->bkgt", fqg, ksum).reshape(B, H, T)
            self.impl = self._impl(" bidirectional einsum")
        out = num / torch.where(den > 0, den, torch.ones_like(den))[..., None]   # rows with no visible key -> 0
        return out.to(q.dtype)

    def attention_probs(self, q, k, v, *, causal, rows, key_padding_mask=None, scale=None):
        """The implied attention phi(q_t).phi(k_s) / sum over visible s, for query rows `rows`: [B, H, R, T]."""
        H, T = q.shape[1], k.shape[2]
        fq, fk = self._features(q, k, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
        fk = fk.repeat_interleave(H // fk.shape[1], dim=1)                                 # [B, H, T, m]
        a = torch.matmul(fq[:, :, rows], fk.transpose(-1, -2))                            # [B, H, R, T]
        if causal:
            pos = torch.arange(q.shape[2], device=q.device)[rows] + (T - q.shape[2])
            a = a * (torch.arange(T, device=q.device)[None, :] <= pos[:, None])           # [R, T] mask
        den = a.sum(-1, keepdim=True)
        return a / torch.where(den > 0, den, torch.ones_like(den))


@register
class Performer(Method):
    name = "performer"
    summary = "FAVOR+ positive orthogonal random features (softmax or ReLU kernel); linear attention"
    exact = False
    dtypes = ("fp32", "fp16", "bf16")
    complexity = "O(T m D) time, O(T (m + D)) memory; m = nb_features (default D ln D)"
    options = (
        Option("nb_features", 0, "number of random features m; 0 = int(D ln D / nbf) (exclusive with nbf)"),
        Option("nbf", 0.0, "SEA-paper divisor: m = int(D ln D / nbf); 0 = unset (1); exclusive with nb_features"),
        Option("kernel", "softmax", "softmax (FAVOR+ positive features) or relu (generalized kernel)",
               choices=("softmax", "relu")),
        Option("ortho", True, "orthogonal random features (blocks of orthogonal rows, chi norms); false = iid"),
        Option("eps", -1.0, "feature epsilon; negative = kernel default (softmax 1e-4 as performer-pytorch, "
               "relu 1e-3)"),
        Option("chunk", 64, "chunk length of the causal linear-attention kernel (power of two >= 16)"),
        Option("backend", "auto", "causal kernel: auto (Triton on CUDA), triton or torch",
               choices=("auto", "triton", "torch")),
    )

    @classmethod
    def validate_config(cls, cfg):
        if cfg["nb_features"] < 0:
            raise MethodConfigError(f"performer.nb_features={cfg['nb_features']} must be >= 0")
        if cfg["nbf"] < 0:
            raise MethodConfigError(f"performer.nbf={cfg['nbf']} must be >= 0")
        if cfg["nb_features"] > 0 and cfg["nbf"] > 0:
            raise MethodConfigError("give performer.nb_features or performer.nbf, not both")
        c = cfg["chunk"]
        if c < 16 or c & (c - 1):
            raise MethodConfigError(f"performer.chunk={c} must be a power of two >= 16")

    @classmethod
    def build(cls, cfg, problem, *, layer=0, seed=0):
        m = default_nb_features(problem.head_dim, cfg["nb_features"], cfg["nbf"])
        return PerformerAttention(problem.head_dim, m, kernel=cfg["kernel"], ortho=cfg["ortho"], seed=seed,
                                  layer=layer, chunk=cfg["chunk"], backend=cfg["backend"],
                                  eps=None if cfg["eps"] < 0 else cfg["eps"], device=problem.device)
