"""A small FAVOR+ (Performer) estimator used by SEA's attention-mask estimator.

Two kernels:
  * "softmax": positive orthogonal random features phi(x) = m^-1/2 exp(w.x' - |x'|^2/2 - c) with
    x' = x d^-1/4 (so phi(q).phi(k) ~ exp(q.k/sqrt(d))). The stabiliser c is a per-row max for queries
    and one max over the valid keys (and features) for keys; both cancel in the normalised ratio.
  * "relu": generalised kernel phi(x) = relu(x' W^T) + eps (the causal SEA setting).

Causal attention uses prefix sums over chunks: the state S = sum phi(k)^T v [m, Dv] and z = sum phi(k) [m]
before each chunk comes from a prefix sum over chunk states (batched over a group of chunks, carried
between groups), and inside a chunk a (c x c) masked product is used, so memory is
O(T (m + Dv) / c + group rows x c), never a (T, m, Dv) cumulative sum.
Everything here runs in float32 (the caller casts).
"""
from __future__ import annotations

import math

import torch

from methods.sea import precision as sea_precision
from methods.sea.precision import tf32_linear

# Stored prefix states per head of the causal Triton kernel (kernels/linear_attention.py's parallel form): 1024 x m x 2d
# fp32 (17 MiB per head at m = 33, d = 64). Above 1024 chunks of 64 rows (T > 64k) the chunks are grouped, and each
# attends up to group - 1 earlier chunks of its group directly: the kernel's default cap of 256 states made that 16
# chunks at T = 256k (in the fused Performer + encoder kernel, which has the same structure, that output kernel was 26
# of SEA's 58 ms at 256k on an H200: results/nvidia-h200/sea-vs-dense-2/fused-first/).
CAUSAL_CHECKPOINTS = 1024
# Tiling of the causal linear-attention kernels (kernels/linear_attention.py, parallel algo) on the Triton path: rows
# per chunk, value columns per program (block_e; SEA's values are [V_I ; v], 2d = 128 columns, so 64 splits each
# chunk's scores over two programs) and warps. Module constants so same-run A/B measurements can set them. Measured
# on an H200 (SEA fast at 32k causal fwd+bwd, results/nvidia-h200/sea-train/call18/): block_e 64 -> 128 took the four
# passes' output kernel 1.50 -> 1.26 ms and the step's kernels 12.29 -> 12.02 ms (12.28 again after); 8 warps or
# 128-row chunks were slower (12.39, 12.76, 14.75 ms).
LINEAR_CHUNK = 64
LINEAR_BLOCK_E = 128
LINEAR_WARPS = 4


def orthogonal_random_features(m: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """[m, d] projection: stacked blocks of random orthogonal rows, each row rescaled to the norm of a
    Gaussian vector (Performer's 'scaling=0' ORF)."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        g = torch.randn(d, d, generator=generator, dtype=torch.float64)
        qmat, _ = torch.linalg.qr(g)
        blocks.append(qmat.T)                                            # rows orthonormal
    w = torch.cat(blocks, dim=0)[:m]                                     # [m, d]
    norms = torch.randn(m, d, generator=generator, dtype=torch.float64).norm(dim=1)
    return (w * norms[:, None]).float()


@torch.compiler.disable
def _linear_attention_untraced(*args, **kwargs):
    """kernels.linear_attention.causal_linear_attention, not traced by compile="estimator" (its Triton kernels and
    autograd.Function run as they are): one graph break, where wrapping it inside the traced code made two."""
    from kernels.linear_attention import causal_linear_attention

    return causal_linear_attention(*args, **kwargs)


def project(xn: torch.Tensor, proj: torch.Tensor, tf32: bool) -> torch.Tensor:
    """xn @ proj.T; tf32: with TF32 allowed in the forward and the backward (methods/sea/precision.py)."""
    return tf32_linear(xn, proj) if tf32 else xn @ proj.T


def softmax_features(x: torch.Tensor, proj: torch.Tensor, *, is_query: bool, valid: torch.Tensor | None = None,
                     eps: float = 1e-4, tf32: bool = False) -> torch.Tensor:
    """x [B, H, T, d], proj [m, d] -> positive features [B, H, T, m]. `valid` bool [B, T] restricts the key
    stabiliser to real tokens. tf32: the projection with TF32 allowed, backward included."""
    d = x.shape[-1]
    m = proj.shape[0]
    xn = x * d ** -0.25
    dash = project(xn, proj, tf32)                                       # [B, H, T, m]
    diag = (xn * xn).sum(-1, keepdim=True) / 2                           # [B, H, T, 1]
    if is_query:
        stab = dash.amax(dim=-1, keepdim=True)                           # [B, H, T, 1]
    else:
        masked = dash
        if valid is not None:
            masked = dash.masked_fill(~valid[:, None, :, None], float("-inf"))
        stab = masked.amax(dim=(-1, -2), keepdim=True)                   # [B, H, 1, 1]
    stab = stab.detach()
    return m ** -0.5 * (torch.exp(dash - diag - stab) + eps)


def relu_features(x: torch.Tensor, proj: torch.Tensor, eps: float = 1e-3, tf32: bool = False) -> torch.Tensor:
    d = x.shape[-1]
    return torch.relu(project(x * d ** -0.25, proj, tf32)) + eps         # [B, H, T, m]


def linear_attention(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                     chunk: int = 128, eps: float = 1e-6, group_rows: int = 8192) -> torch.Tensor:
    """D^-1 phi_q (phi_k^T v). phi_* [B, H, T, m], v [B, H, T, Dv] -> [B, H, T, Dv].
    Rows of phi_k for padded keys must already be zero. Causal: chunks of `chunk` rows; the chunks of a
    group of `group_rows` rows are done in one batched step (states by a prefix sum over chunks), so the
    Python loop runs T / group_rows times, not T / chunk."""
    if not causal:
        kv = phi_k.transpose(-1, -2) @ v                                 # [B, H, m, Dv]
        z = phi_k.sum(dim=-2)                                            # [B, H, m]
        num = phi_q @ kv                                                 # [B, H, T, Dv]
        den = (phi_q * z[..., None, :]).sum(-1, keepdim=True)            # [B, H, T, 1]
        return num / (den + eps)
    B, H, T, m = phi_q.shape
    Dv = v.shape[-1]
    state = phi_q.new_zeros(B, H, 1, m, Dv)
    zsum = phi_q.new_zeros(B, H, 1, m)
    outs = []
    span = chunk * max(1, group_rows // chunk)                          # rows per batched group of chunks
    for s in range(0, T, span):
        e = min(T, s + span)
        nc = -(-(e - s) // chunk)
        pad = nc * chunk - (e - s)

        def blocks(x):                                                   # [B, H, n, *] -> [B, H, nc, c, *]
            x = x[:, :, s:e]
            if pad:
                x = torch.nn.functional.pad(x, (0, 0, 0, pad))          # zero rows: phi_k = 0 adds nothing
            return x.reshape(B, H, nc, chunk, x.shape[-1])

        q_c, k_c, v_c = blocks(phi_q), blocks(phi_k), blocks(v)
        kv = k_c.transpose(-1, -2) @ v_c                                 # [B, H, nc, m, Dv]
        kz = k_c.sum(dim=-2)                                             # [B, H, nc, m]
        # state before each chunk: carried state + exclusive prefix sum over the group's chunks
        pre_kv = state + torch.cat([torch.zeros_like(kv[:, :, :1]), kv[:, :, :-1].cumsum(2)], 2)
        pre_z = zsum + torch.cat([torch.zeros_like(kz[:, :, :1]), kz[:, :, :-1].cumsum(2)], 2)
        tri = torch.ones(chunk, chunk, dtype=torch.bool, device=v.device).tril()
        local = (q_c @ k_c.transpose(-1, -2)).masked_fill(~tri, 0.0)     # [B, H, nc, c, c]
        num = q_c @ pre_kv + local @ v_c                                 # [B, H, nc, c, Dv]
        den = (q_c * pre_z[..., None, :]).sum(-1, keepdim=True) + local.sum(-1, keepdim=True)
        outs.append((num / (den + eps)).reshape(B, H, nc * chunk, Dv)[:, :, :e - s])
        state = pre_kv[:, :, -1:] + kv[:, :, -1:]
        zsum = pre_z[:, :, -1:] + kz[:, :, -1:]
    return torch.cat(outs, dim=2)                                        # [B, H, T, Dv]


def performer_backend(x: torch.Tensor, causal: bool, backend: str = "auto", needs_grad: bool = False,
                      padded: bool = False) -> str:
    """Which path favor_attention runs. Causal: 'triton' (kernels/linear_attention.py's chunk-parallel
    causal_linear_attention, fp32 IEEE dots) or 'torch' (linear_attention above); auto: triton for CUDA
    tensors, torch otherwise (on CPU the batched PyTorch chunks beat the interpreted kernel).
    Bidirectional: 'dense' (two matmuls over materialised features; torch) or 'triton-dense'
    (kernels/favor_dense.py: the fused forward-only kernel, softmax features; triton); auto takes the fused
    kernel for CUDA tensors when no gradient is needed and no padding mask is given (the case measured faster on
    an H200 for fp32 and bf16 operands at T = 16k and 64k, results/nvidia-h200/sea-kernels/), the matmuls
    otherwise (backend=triton takes the kernel with a padding mask too)."""
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"performer backend {backend!r}: expected auto, triton or torch")
    if not causal:
        if backend == "auto":
            return "triton-dense" if x.is_cuda and not needs_grad and not padded else "dense"
        return "triton-dense" if backend == "triton" else "dense"
    if backend == "auto":
        return "triton" if x.is_cuda else "torch"
    return backend


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Would autograd record an operation on these tensors?"""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def favor_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, proj: torch.Tensor, *, kernel: str,
                    causal: bool, valid: torch.Tensor | None = None, chunk: int = 128, backend: str = "auto",
                    eps: float = 1e-6, operands: str = "fp32", precision: str | None = None,
                    out_dtype: torch.dtype = torch.float32, identity_cols: int = 0,
                    dash: str | None = None) -> torch.Tensor:
    """FAVOR+ attention, output in out_dtype (float32; bfloat16: the fp32 result rounded once, by the fused
    bidirectional kernel as it stores it, elsewhere by a cast). q, k [B, H, T, d]; v [B, H, T, Dv]; valid bool
    [B, T] or None.
    backend: see performer_backend (causal only). operands: "fp32" (the paper's) or "bf16": the features are
    computed in fp32, then features and values are rounded to bf16 for the products (tensor cores on CUDA);
    sums and prefix states accumulate in fp32 (the Triton kernel and the torch fallback alike; the bidirectional
    path rounds its [m, Dv] key-value summary to bf16 before the second product). precision: the fused
    bidirectional kernel's tl.dot precision (None: its default; "tf32": one pass); on the other paths "tf32" with a
    gradient to compute runs the feature projection with TF32 allowed in its backward too (tf32_linear).
    identity_cols, dash ("fp16": both passes' projections as one fp16 product where one-pass TF32 was asked for;
    None: the kernel's defaults): the fused bidirectional kernel's (kernels/favor_dense.py), refused on the other
    paths."""
    if operands not in ("fp32", "bf16"):
        raise ValueError(f"performer operands {operands!r}: expected fp32 or bf16")
    if out_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"performer output dtype {out_dtype}: expected torch.float32 or torch.bfloat16")
    path = performer_backend(q, causal, backend, needs_grad(q, k, v, proj), padded=valid is not None)
    if path == "triton-dense":
        if kernel != "softmax":
            raise ValueError(f"the fused bidirectional Performer kernel has softmax features only; kernel={kernel!r}")
        from kernels.favor_dense import favor_softmax_dense

        return torch.compiler.disable(favor_softmax_dense)(q, k, v, proj.float(), valid=valid, operands=operands,
                                                           eps=eps, precision=precision, out_dtype=out_dtype,
                                                           identity_cols=identity_cols, key_dash=dash,
                                                           query_dash=dash)
    if identity_cols or dash is not None:
        raise ValueError(f"identity_cols={identity_cols}, dash={dash!r}: the fused bidirectional Performer kernel's "
                         f"options; this call takes path {path}")
    return _favor_torch(q, k, v, proj, kernel=kernel, causal=causal, valid=valid, chunk=chunk, path=path, eps=eps,
                        operands=operands, precision=precision).to(out_dtype)


def favor_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, proj: torch.Tensor, *, kernel: str,
               backend: str = "auto", eps: float = 1e-6, operands: str = "fp32", precision: str | None = None,
               out_dtype: torch.dtype = torch.float32, identity_cols: int = 0, dash: str | None = None):
    """favor_attention (bidirectional, no padding mask, same arguments) in two parts, for callers that want its
    output a block of query rows at a time: the key pass runs here once, and the returned function rows(lo, hi) gives
    the output rows lo .. hi - 1 of the whole call (the query pass on those rows: bit for bit the whole call's rows,
    kernels/favor_dense.py query_pass), so the [B, H, T, Dv] output is never held whole. The fused kernel's path
    only (triton-dense); None where favor_attention would take another path (the caller then runs it whole)."""
    if operands not in ("fp32", "bf16") or out_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"performer operands {operands!r} (fp32 or bf16), output dtype {out_dtype} (float32 or "
                         "bfloat16)")
    if performer_backend(q, False, backend, needs_grad(q, k, v, proj)) != "triton-dense" or kernel != "softmax":
        return None
    from kernels.favor_dense import key_summary, query_pass

    st = torch.compiler.disable(key_summary)(q, k, v, proj.float(), operands=operands, precision=precision,
                                             identity_cols=identity_cols, key_dash=dash)

    def rows(lo: int, hi: int) -> torch.Tensor:
        return torch.compiler.disable(query_pass)(st, st["q"][:, :, lo:hi], out_dtype=out_dtype, eps=eps,
                                                  query_dash=dash)

    return rows


def _favor_torch(q, k, v, proj, *, kernel, causal, valid, chunk, path, eps, operands, precision) -> torch.Tensor:
    """favor_attention's paths other than the fused bidirectional kernel (fp32 output)."""
    tf32 = precision == "tf32" and sea_precision.TF32_BACKWARD and needs_grad(q, k, v, proj)
    q, k, v = q.float(), k.float(), v.float()
    if kernel == "softmax":
        phi_q = softmax_features(q, proj, is_query=True, tf32=tf32)
        phi_k = softmax_features(k, proj, is_query=False, valid=valid, tf32=tf32)
    elif kernel == "relu":
        phi_q = relu_features(q, proj, tf32=tf32)
        phi_k = relu_features(k, proj, tf32=tf32)
    else:
        raise ValueError(f"unknown FAVOR kernel {kernel!r}")
    if valid is not None:
        phi_k = phi_k * valid[:, None, :, None].to(phi_k.dtype)
    if operands == "bf16":
        if path == "triton":                                             # bf16 tensor-core dots, fp32 sums
            phi_q, phi_k, v = (x.to(torch.bfloat16) for x in (phi_q, phi_k, v))
        elif path == "dense":                                            # two bf16 GEMMs, fp32 normaliser
            z = phi_k.sum(dim=-2)                                        # [B, H, m] fp32
            den = (phi_q * z[..., None, :]).sum(-1, keepdim=True)        # [B, H, T, 1]
            qb, kb, vb = (x.to(torch.bfloat16) for x in (phi_q, phi_k, v))
            num = (qb @ (kb.transpose(-1, -2) @ vb)).float()             # [B, H, T, Dv]
            return num / (den + eps)
        else:                                                            # torch prefix sums: rounded operands
            phi_q, phi_k, v = (x.to(torch.bfloat16).float() for x in (phi_q, phi_k, v))
    if path == "triton":
        from kernels.linear_attention import group_for

        num, den = _linear_attention_untraced(phi_q.contiguous(), phi_k.contiguous(), v.contiguous(),
                                              chunk=LINEAR_CHUNK, backend="triton", tf32=False,
                                              block_e=LINEAR_BLOCK_E, num_warps=LINEAR_WARPS,
                                              group=group_for(q.shape[2], LINEAR_CHUNK, CAUSAL_CHECKPOINTS))
        return num / (den[..., None] + eps)
    return linear_attention(phi_q, phi_k, v, causal=causal, chunk=chunk, eps=eps)


def favor_causal_carry(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, proj: torch.Tensor,
                       state: tuple[torch.Tensor, torch.Tensor] | None, *, backend: str = "auto",
                       eps: float = 1e-6, operands: str = "fp32"
                       ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Causal FAVOR+ (relu features) for one block of consecutive query rows, given the state of every row
    before the block: state = (S [B, H, m, Dv] = sum phi_k^T v, zs [B, H, m] = sum phi_k) in float32, or None
    for the first block. Returns (out [B, H, Tc, Dv] fp32, the state after the block). Block by block this is
    favor_attention(kernel="relu", causal=True) over the whole sequence: out = (num_local + phi_q S) /
    (den_local + phi_q . zs + eps), the local terms from the same prefix-sum kernel (or its PyTorch form).
    operands "bf16": features and values rounded to bf16 as in favor_attention; the state terms multiply the
    rounded features by the fp32 state (the whole-sequence kernel rounds its group states to bf16 instead, so
    the two agree to bf16 rounding, not bit for bit)."""
    if operands not in ("fp32", "bf16"):
        raise ValueError(f"performer operands {operands!r}: expected fp32 or bf16")
    from kernels.linear_attention import group_for

    which = performer_backend(q, True, backend)                          # triton on CUDA (auto), else torch
    q, k, v = q.float(), k.float(), v.float()
    phi_q, phi_k = relu_features(q, proj), relu_features(k, proj)       # [B, H, Tc, m]
    if operands == "bf16":
        phi_q, phi_k, v = (x.to(torch.bfloat16) for x in (phi_q, phi_k, v))
    tiles = dict(block_e=LINEAR_BLOCK_E, num_warps=LINEAR_WARPS) if which == "triton" else {}
    num, den = _linear_attention_untraced(phi_q.contiguous(), phi_k.contiguous(), v.contiguous(),
                                          chunk=LINEAR_CHUNK, backend=which, tf32=False,
                                          group=group_for(q.shape[2], LINEAR_CHUNK, CAUSAL_CHECKPOINTS), **tiles)
    pq, pk, vf = phi_q.float(), phi_k.float(), v.float()
    if state is not None:
        S, zs = state
        num = num + pq @ S                                               # [B, H, Tc, Dv]
        den = den + (pq @ zs[..., None])[..., 0]                         # [B, H, Tc]
    else:
        S = pq.new_zeros(pq.shape[0], pq.shape[1], pq.shape[-1], vf.shape[-1])
        zs = pq.new_zeros(pq.shape[0], pq.shape[1], pq.shape[-1])
    new_state = (S + pk.transpose(-1, -2) @ vf, zs + pk.sum(dim=-2))     # [B, H, m, Dv], [B, H, m]
    return num / (den[..., None] + eps), new_state
