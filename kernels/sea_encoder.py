"""SEA estimator encoder + scaler head in one Triton forward pass.

What: for rows r (the flattened B, H, T) of c_perf [R, 2d] (the estimator's Performer output, fp32) and
v [R, d] (SEA's values: fp32, or bf16 / fp16 read exactly into fp32), computes

    z[r]      = GELU_erf(LayerNorm(c_perf[r] @ Wc^T + v[r] @ Wv^T + b))         [R, 2d] fp32
    scales[r] = sigmoid(z[r] @ Ws^T + bs)                                      [R, 2]  fp32

where lin_w = [Wc | Wv] is the [2d, 3d] weight of nn.Linear(3d, 2d) (Wc its first 2d input columns, the
c_perf part; Wv its last d, the v part), LayerNorm over the 2d features with its weight, bias and eps,
GELU the exact (erf) form of nn.GELU(), and Ws [2, 2d], bs [2] the scaler nn.Linear(2d, 2). It is the
forward of `Estimator.enc(torch.cat([c_perf, v], -1))` followed by `sigmoid(Estimator.scaler(z))`.

Why: the torch path writes the cat ([R, 3d] fp32), then runs the Linear, the LayerNorm and the GELU as
separate passes over [R, 2d] fp32, and the scaler reads z back: about ten times the minimum traffic.
Here one program owns BLOCK_R rows: it reads its c_perf and v rows once (no cat), accumulates the
Linear in registers over BLOCK_K-wide slices of the 3d input features (tl.dot against the matching rows
of lin_w^T, which stay in L2: 3d x 2d x 4 bytes = 96 KiB at d=64), then does bias, LayerNorm, GELU and
the two scaler dot products on the [BLOCK_R, 2d] accumulator and writes z and scales once.

Traffic per row: read 3d floats, write 2d + 2 floats, i.e. (5d + 2) x 4 bytes; at R = 16 x 65536 rows
and d = 64 that is about 1.35 GB (the weights add nothing measurable: L2-resident).

Precision: the dots take fp32 inputs with input_precision PRECISION ("tf32x3" by default: three TF32
tensor-core products, close to fp32; "ieee": CUDA-core fp32). LayerNorm, GELU and the scaler run in fp32.
d (the head dim, v's last dim) is at most 128; any d is allowed (power-of-two padding with masks).

z is stored in fp32, or rounded once (to nearest even) to bf16 / fp16 when asked (z_dtype): SEA's estimator asks
when its decoder runs under 16-bit autocast, whose first Linear would cast z so anyway.

Forward only (no autograd): `encoder_forward` refuses when grad is enabled and any input requires grad.
"""
from __future__ import annotations


import torch

from kernels._buffers import check_fp32_tensors, fresh, pow2_block, triton_runs_on

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: the encoder kernel is unavailable
    triton = None
    tl = None

# Tests set this to True: fresh outputs (z, scales) are then filled with NaN so a skipped write fails.
POISON_OUTPUTS = False
PRECISION = "tf32x3"     # tl.dot input precision ("tf32x3" or "ieee")
BLOCK_R = 64             # rows per program
BLOCK_K = 32             # input features per tl.dot step (>= 16)
NUM_WARPS = None         # None: 4 when 2d <= 128, else 8
MAX_D = 128

_PRECISIONS = ("tf32x3", "ieee")
V_DTYPES = (torch.float32, torch.bfloat16, torch.float16)        # v: 16-bit values are read exactly into fp32
_Z_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _fresh(shape, dtype, device):
    return fresh(shape, dtype, device, poison=POISON_OUTPUTS)


if triton is not None:
    from kernels._tl_math import round_bf16_bits as _round_bf16

    @triton.jit
    def _encoder_fwd_kernel(C, V, W, LB, LNW, LNB, SW, SB, Z, S, R, eps,
                            D: tl.constexpr, BD2: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
                            PREC: tl.constexpr, SOFT_BF16: tl.constexpr):
        D2: tl.constexpr = 2 * D
        D3: tl.constexpr = 3 * D
        pid = tl.program_id(0).to(tl.int64)
        rows = pid * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)        # [BR] int64: R * 2d may pass 2^31
        rmask = rows < R
        offs_n = tl.arange(0, BD2)                                        # output features
        nmask = offs_n < D2
        offs_k = tl.arange(0, BLOCK_K)
        acc = tl.zeros([BLOCK_R, BD2], dtype=tl.float32)
        # c_perf part: lin_w[:, 0:2d]
        for k0 in range(0, D2, BLOCK_K):
            kk = k0 + offs_k
            kmask = kk < D2
            x = tl.load(C + rows[:, None] * D2 + kk[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
            wt = tl.load(W + offs_n[None, :] * D3 + kk[:, None], mask=kmask[:, None] & nmask[None, :],
                         other=0.0)                                       # [BK, BD2] = lin_w^T slice
            acc += tl.dot(x, wt, input_precision=PREC)
        # v part: lin_w[:, 2d:3d]
        for k0 in range(0, D, BLOCK_K):
            kk = k0 + offs_k
            kmask = kk < D
            x = tl.load(V + rows[:, None] * D + kk[None, :], mask=rmask[:, None] & kmask[None, :],
                        other=0.0).to(tl.float32)                         # 16-bit v: exact in fp32
            wt = tl.load(W + offs_n[None, :] * D3 + (D2 + kk)[:, None], mask=kmask[:, None] & nmask[None, :],
                         other=0.0)                                       # [BK, BD2]
            acc += tl.dot(x, wt, input_precision=PREC)
        acc += tl.load(LB + offs_n, mask=nmask, other=0.0)[None, :]      # padded columns stay 0
        # LayerNorm over the 2d real features (biased variance, like nn.LayerNorm)
        mean = tl.sum(acc, axis=1) / D2                                   # [BR]
        diff = tl.where(nmask[None, :], acc - mean[:, None], 0.0)
        var = tl.sum(diff * diff, axis=1) / D2
        rstd = 1.0 / tl.sqrt(var + eps)
        lnw = tl.load(LNW + offs_n, mask=nmask, other=0.0)
        lnb = tl.load(LNB + offs_n, mask=nmask, other=0.0)
        y = diff * rstd[:, None] * lnw[None, :] + lnb[None, :]           # padded columns: 0
        z = 0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))              # exact GELU; GELU(0) = 0
        zs = z
        if SOFT_BF16:        # bf16 z under the interpreter, whose fp32 -> bf16 cast truncates: round to nearest even
            zs = _round_bf16(z)
        tl.store(Z + rows[:, None] * D2 + offs_n[None, :], zs.to(Z.dtype.element_ty),
                 mask=rmask[:, None] & nmask[None, :])
        # scaler: two outputs, each a row reduction
        w0 = tl.load(SW + offs_n, mask=nmask, other=0.0)
        w1 = tl.load(SW + D2 + offs_n, mask=nmask, other=0.0)
        s0 = tl.sum(z * w0[None, :], axis=1) + tl.load(SB)
        s1 = tl.sum(z * w1[None, :], axis=1) + tl.load(SB + 1)
        s0 = 1.0 / (1.0 + tl.exp(-s0))
        s1 = 1.0 / (1.0 + tl.exp(-s1))
        tl.store(S + rows * 2, s0, mask=rmask)
        tl.store(S + rows * 2 + 1, s1, mask=rmask)


def encoder_usable(device) -> bool:
    """True when the kernel can run on `device`: CUDA, or any device under TRITON_INTERPRET=1."""
    return triton_runs_on(device, triton is not None)


def _check(c_perf, v, lin_w, lin_b, ln_w, ln_b, sc_w, sc_b) -> int:
    named = dict(c_perf=c_perf, v=v, lin_w=lin_w, lin_b=lin_b, ln_w=ln_w, ln_b=ln_b, sc_w=sc_w, sc_b=sc_b)
    check_fp32_tensors("sea encoder", {key: t for key, t in named.items() if key != "v"}, "c_perf")
    if not isinstance(v, torch.Tensor) or v.dtype not in V_DTYPES or v.device != c_perf.device:
        raise ValueError(f"sea encoder: v must be a float32, bfloat16 or float16 tensor on {c_perf.device}, got "
                         f"{v.dtype if isinstance(v, torch.Tensor) else type(v).__name__}"
                         f"{' on ' + str(v.device) if isinstance(v, torch.Tensor) else ''}")
    if v.dim() < 1 or c_perf.dim() != v.dim():
        raise ValueError(f"sea encoder: c_perf {tuple(c_perf.shape)} and v {tuple(v.shape)} must have the "
                         f"same number of dims (leading dims then features)")
    d = v.shape[-1]
    if d < 1 or d > MAX_D:
        raise ValueError(f"sea encoder: head dim d={d} unsupported (needs 1 <= d <= {MAX_D})")
    if c_perf.shape[-1] != 2 * d or c_perf.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"sea encoder: c_perf {tuple(c_perf.shape)} must be v's leading dims + [2d] with "
                         f"v {tuple(v.shape)} (d={d})")
    want = dict(lin_w=(2 * d, 3 * d), lin_b=(2 * d,), ln_w=(2 * d,), ln_b=(2 * d,), sc_w=(2, 2 * d), sc_b=(2,))
    for name, shape in want.items():
        if tuple(named[name].shape) != shape:
            raise ValueError(f"sea encoder: {name} has shape {tuple(named[name].shape)}, expected {shape} "
                             f"for d={d}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in named.values()):
        raise RuntimeError("sea encoder kernel is forward-only: an input requires grad while grad is enabled "
                           "(run under torch.no_grad() or use the torch modules)")
    return d


def encoder_forward(c_perf, v, lin_w, lin_b, ln_w, ln_b, ln_eps, sc_w, sc_b, *, precision=None,
                    z_dtype=torch.float32):
    """c_perf [..., 2d] fp32, v [..., d] (fp32, bf16 or fp16, read exactly) -> (z [..., 2d] in z_dtype, scales
    [..., 2] fp32); see the module docstring. z_dtype bf16 / fp16: z computed in fp32 as always, rounded once to
    nearest even when stored -- what `z.to(z_dtype)` gives, so a consumer that casts z to that dtype anyway
    (the decoder under autocast) reads the same values from half the bytes.

    lin_w [2d, 3d], lin_b [2d] (nn.Linear(3d, 2d)), ln_w, ln_b [2d] and ln_eps (nn.LayerNorm(2d)),
    sc_w [2, 2d], sc_b [2] (nn.Linear(2d, 2)). precision: None (the module's PRECISION), "tf32x3", "ieee" or
    "tf32" (one-pass TF32 products, ~2^-11 relative each). Forward only."""
    d = _check(c_perf, v, lin_w, lin_b, ln_w, ln_b, sc_w, sc_b)
    if PRECISION not in _PRECISIONS:
        raise ValueError(f"sea encoder: PRECISION={PRECISION!r}, expected one of {_PRECISIONS}")
    if precision not in (None, *_PRECISIONS, "tf32"):
        raise ValueError(f"sea encoder: precision={precision!r}, expected None, tf32 or one of {_PRECISIONS}")
    prec = PRECISION if precision is None else precision
    if not encoder_usable(c_perf.device):
        raise RuntimeError(f"sea encoder kernel needs triton on CUDA (or TRITON_INTERPRET=1); "
                           f"got device {c_perf.device}")
    if BLOCK_K < 16 or BLOCK_K & (BLOCK_K - 1) or BLOCK_R < 16 or BLOCK_R & (BLOCK_R - 1):
        raise ValueError(f"sea encoder: BLOCK_R={BLOCK_R}, BLOCK_K={BLOCK_K} must be powers of two >= 16")
    if z_dtype not in _Z_DTYPES:
        raise ValueError(f"sea encoder: z_dtype={z_dtype}, expected one of {_Z_DTYPES}")
    lead = tuple(c_perf.shape[:-1])
    z = _fresh(lead + (2 * d,), z_dtype, c_perf.device)
    scales = _fresh(lead + (2,), torch.float32, c_perf.device)
    R = z.numel() // (2 * d)
    if R == 0:
        return z, scales
    c2 = c_perf.contiguous().view(R, 2 * d)                              # [R, 2d]
    v2 = v.contiguous().view(R, d)                                       # [R, d]
    bd2 = pow2_block(2 * d)
    warps = NUM_WARPS if NUM_WARPS is not None else (4 if bd2 <= 128 else 8)
    grid = (triton.cdiv(R, BLOCK_R),)
    _encoder_fwd_kernel[grid](
        c2, v2, lin_w.contiguous(), lin_b.contiguous(), ln_w.contiguous(), ln_b.contiguous(),
        sc_w.contiguous(), sc_b.contiguous(), z, scales, R, float(ln_eps),
        D=d, BD2=bd2, BLOCK_R=BLOCK_R, BLOCK_K=BLOCK_K, PREC=prec,
        SOFT_BF16=z_dtype == torch.bfloat16 and not c_perf.is_cuda, num_warps=warps)
    return z, scales
