"""The bidirectional SEA estimator's encoder, scaler head and decoder row projection in one Triton pass, written
straight into the channels-last layout of the decoder's first convolution, one program per block of time rows
holding every head.

What: for the Performer's output c [B, H, T, 2d] (fp32 or bf16) and SEA's values v [B, H, T, d], computes per row
(b, h, t)

    z      = GELU_erf(LayerNorm([c ; v] @ lin_w^T + lin_b))      (kernels/sea_encoder.py)      [2d] fp32
    scales = sigmoid(z @ sc_w^T + sc_b)                                                       [2]  fp32
    y      = bf16(bf16(z) @ bf16(row_w)^T + bf16(row_b))      (BidirectionalDecoder.row under bf16 autocast)

and writes scales [B, H, T, 2] and y, whose column j = i W + w (i < 4, W = K / 2) goes to x[b, t, w, 4h + i] of a
[B, T, W, 4H] bf16 tensor: BidirectionalDecoder.head's output [B, 4H, T, W] in channels-last memory, without z
([B, H, T, 2d]), the row projection's output ([B, H, T, 2K]) or the permuting copy between them ever written.

Why: at T = 8k (B=1, H=16, d=64, K=128) on an H200 the encoder kernel, the row projection's GEMM and the permuting
copy took 0.071 + 0.038 + 0.034 ms (results/nvidia-h200/sea-key-pass/call3/), for ~0.15 GB of minimum traffic
(~0.04 ms). The sixteenth session's kernels/sea_bidir_front.py (since removed) did this with the query pass in front,
one head per program, and measured ~7x slower than the launches it replaced: each program stored one head's 4 of the
64 channels of a row. Here the weights are shared by the heads, so the rows of all heads of BLOCK_T time steps form
one tile (rows (t, h)), the two products are plain tl.dot's, and the [BLOCK_T, W, 4H] output block is stored whole
after a permute in registers. Measured (results/nvidia-h200/sea-decoder-ends/): alone, L2 flushed, 0.151 ms against
0.327 for the three launches (64k: 1.07 against 1.91); inside SEA's 8k forward 0.146 against 0.143, the same time;
256 MiB less peak memory at 64k (z, the projection's output and its copy are never written).

How: grid (T / BLOCK_T, B). Rows r = (t, h) of the tile: the encoder kernel's row operations (kernels/sea_encoder.py,
written out here: shared as one @triton.jit helper, this kernel measured ~1.5x slower on an H200): the Linear as
tl.dot's over BLOCK_K-wide slices of the 3d input features at input precision ENC_PREC, bias, LayerNorm, exact GELU,
the scaler's two row sums; then bf16(z) @ bf16(row_w)^T as one [M, 4 BLOCK_W] dot (fp32 sums), bias, one bf16
rounding, reshape [BLOCK_T, BLOCK_H, 4, BLOCK_W] -> permute [BLOCK_T, BLOCK_W, BLOCK_H, 4] -> store (masked where
H, W or T are padded).

Precision: as kernels/sea_encoder.py for z and the scales (the same slices, the same dot precision), or with
precision="bf16" (SEA's encoder_operands=bf16) the encoder's Linear on bf16 operands, fp32 sums: [c ; v] rounded to
nearest in the kernel (c then arrives in bf16 from the query pass, half the bytes), lin_w rounded once on the host
(rounded in every program, the kernel took 0.220 ms instead of 0.145 at 8k on an H200:
results/nvidia-h200/sea-bf16-encoder/call1/). The row projection as cuBLAS under autocast (bf16 operands, fp32
sums, one rounding), summed in another order. Under the Triton interpreter, bf16 products run as fp32 dots of
bf16-rounded values.

Forward only, no padding mask handling (the caller zeroes padded values as it does for the encoder), d <= 128.
"""
from __future__ import annotations

import torch

from kernels._buffers import check_fp32_tensors, fresh, pow2_block, triton_runs_on

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: head_usable() is False
    triton = None
    tl = None

POISON_OUTPUTS = False           # tests: fresh outputs filled with NaN so a skipped write fails
BLOCK_T = 4                      # time rows per program (times the padded head count: the tile's rows)
BLOCK_K = 32                     # encoder input features per dot step (>= 16)
NUM_WARPS = 8
NUM_STAGES = 2
# precision="bf16" (encoder_operands=bf16): its own dot step and stages. H200, SEA's 8k profile with bf16 operands:
# BLOCK_K 32 -> 64 took the head 0.130 -> 0.117 ms, 3 stages instead of 2 -> 0.119, 4 warps 0.135, BLOCK_T 8 0.143,
# BLOCK_T 2 0.203 (results/nvidia-h200/sea-bf16-encoder/call4/)
BF16_BLOCK_K = 64
BF16_NUM_STAGES = 2
# Tried (twenty-third session, results/nvidia-h200/sea-graph-call/call2/): persistent programs that load the bf16
# weights once (wgmma; one program an SM by shared memory, 147-200 KB) and walk the time blocks, to save the weights'
# ~230 MB of L2 reads at 8k: the head 0.110 -> 0.142-0.194 ms at 8k (stages 1-3, 4 or 8 warps), 0.825 -> 1.191 at 64k.
# Not kept: the one-block-a-program kernel's two programs an SM hide its latencies better.
MAX_D = 128
PRECISIONS = ("tf32x3", "ieee", "tf32", "bf16")     # bf16: bf16 operands, fp32 sums (the others: tl.dot's)
V_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


if triton is not None:
    from kernels._tl_math import round_bf16, round_bf16_bits

    @triton.jit
    def _head_kernel(C, V, LW, LB, LNW, LNB, SW, SB, RWT, RB, XO, SO,
                     scb, sch, sct, svb, svh, svt, H, T, D, W, ln_eps,
                     ENC_PREC: tl.constexpr, ENC_BF16: tl.constexpr, EMU: tl.constexpr, BLOCK_T: tl.constexpr,
                     BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_W: tl.constexpr):
        tb = tl.program_id(0).to(tl.int64)
        b = tl.program_id(1).to(tl.int64)
        M: tl.constexpr = BLOCK_T * BLOCK_H
        r = tl.arange(0, M)
        t = tb * BLOCK_T + r // BLOCK_H                                   # rows (t, h), h fastest
        h = (r % BLOCK_H).to(tl.int64)           # int64: h times a head stride passes 2^31 at T = 4M (v's 2^28)
        rmask = (t < T) & (h < H)
        # The encoder kernel's row operations (kernels/sea_encoder.py) written out here: shared as one @triton.jit
        # helper, this kernel took 0.213 ms instead of 0.145 at 8k and 1.63 ms instead of 1.07 at 64k on an H200
        # (results/nvidia-h200/sea-offsets/call1/).
        D2 = 2 * D
        D3 = 3 * D
        offs_n = tl.arange(0, BLOCK_DV)                                   # the 2d encoder outputs
        nmask = offs_n < D2
        offs_k = tl.arange(0, BLOCK_K)
        crow = C + b * scb + h * sch + t * sct                            # [M] row pointers
        vrow = V + b * svb + h * svh + t * svt
        acc = tl.zeros([M, BLOCK_DV], dtype=tl.float32)
        for k0 in range(0, D2, BLOCK_K):                                  # [c ; v] @ lin_w^T: the c columns
            kk = k0 + offs_k
            kmask = kk < D2
            x = tl.load(crow[:, None] + kk[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
            wt = tl.load(LW + offs_n[None, :] * D3 + kk[:, None], mask=kmask[:, None] & nmask[None, :], other=0.0)
            if ENC_BF16:            # bf16 operands (nearest; LW arrives in bf16), fp32 sums (EMU: exact fp32 dots)
                if EMU:
                    acc += tl.dot(round_bf16(x.to(tl.float32), EMU), wt.to(tl.float32), input_precision="ieee")
                else:
                    acc += tl.dot(x.to(tl.bfloat16), wt)
            else:
                acc += tl.dot(x.to(tl.float32), wt, input_precision=ENC_PREC)
        for k0 in range(0, D, BLOCK_K):                                   # the v columns
            kk = k0 + offs_k
            kmask = kk < D
            x = tl.load(vrow[:, None] + kk[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
            wt = tl.load(LW + offs_n[None, :] * D3 + (D2 + kk)[:, None], mask=kmask[:, None] & nmask[None, :],
                         other=0.0)
            if ENC_BF16:
                if EMU:
                    acc += tl.dot(round_bf16(x.to(tl.float32), EMU), wt.to(tl.float32), input_precision="ieee")
                else:
                    acc += tl.dot(x.to(tl.bfloat16), wt)
            else:
                acc += tl.dot(x.to(tl.float32), wt, input_precision=ENC_PREC)
        acc += tl.load(LB + offs_n, mask=nmask, other=0.0)[None, :]
        mean = tl.sum(acc, axis=1) / D2                                   # LayerNorm over the 2d features
        diff = tl.where(nmask[None, :], acc - mean[:, None], 0.0)
        var = tl.sum(diff * diff, axis=1) / D2
        rstd = 1.0 / tl.sqrt(var + ln_eps)
        y = diff * rstd[:, None] * tl.load(LNW + offs_n, mask=nmask, other=0.0)[None, :] \
            + tl.load(LNB + offs_n, mask=nmask, other=0.0)[None, :]
        z = 0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))              # exact GELU; padded columns: 0
        srow = ((b * H + h) * T + t) * 2                                  # scales [B, H, T, 2]
        s0 = tl.sum(z * tl.load(SW + offs_n, mask=nmask, other=0.0)[None, :], axis=1) + tl.load(SB)
        s1 = tl.sum(z * tl.load(SW + D2 + offs_n, mask=nmask, other=0.0)[None, :], axis=1) + tl.load(SB + 1)
        tl.store(SO + srow, 1.0 / (1.0 + tl.exp(-s0)), mask=rmask)
        tl.store(SO + srow + 1, 1.0 / (1.0 + tl.exp(-s1)), mask=rmask)
        # the row projection: column (i, w) of the tile is row_w's row i W + w
        offs_j = tl.arange(0, 4 * BLOCK_W)
        ji = offs_j // BLOCK_W
        jw = offs_j % BLOCK_W
        jmask = jw < W
        j = ji * W + jw
        rw = tl.load(RWT + offs_n[:, None] * (4 * W) + j[None, :], mask=nmask[:, None] & jmask[None, :],
                     other=0.0)                                           # [BLOCK_DV, 4 BLOCK_W] bf16 = row_w^T
        # z rounded by integer arithmetic on the GPU too: with the cast there (z.to(bf16) into the dot) the kernel
        # took 136 registers instead of 125, one program an SM instead of two (sm_90a, triton 3.6,
        # scripts/compile_sm90.py --what head)
        zb = round_bf16_bits(z)
        if EMU:
            out = tl.dot(zb, rw.to(tl.float32), input_precision="ieee")
        else:
            out = tl.dot(zb.to(tl.bfloat16), rw)
        out = out + round_bf16(tl.load(RB + j, mask=jmask, other=0.0), EMU)[None, :]
        if EMU:                                 # the interpreter's cast truncates: round first (exact cast after);
            out = round_bf16(out, EMU)          # the GPU's cast rounds to nearest even (2840 SASS instructions
                                                # a program instead of 3160 with the integer rounding here)
        out = tl.reshape(out.to(tl.bfloat16), [BLOCK_T, BLOCK_H, 4, BLOCK_W])
        out = tl.reshape(tl.permute(out, (0, 3, 1, 2)), [BLOCK_T * BLOCK_W, BLOCK_H * 4])
        q = tl.arange(0, BLOCK_T * BLOCK_W)                               # rows (t, w) of the stored block
        ot = tb * BLOCK_T + q // BLOCK_W
        ow = q % BLOCK_W
        oc = tl.arange(0, BLOCK_H * 4)                                    # channel 4h + i
        dst = ((b * T + ot[:, None]) * W + ow[:, None]) * (4 * H) + oc[None, :]
        tl.store(XO + dst, out, mask=(ot < T)[:, None] & (ow < W)[:, None] & (oc < 4 * H)[None, :])


def head_usable(device) -> bool:
    """True when the kernel can run on `device` (CUDA, or any device under TRITON_INTERPRET=1)."""
    return triton_runs_on(device, triton is not None)


def cast_weights(lin_w: torch.Tensor, row_w: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The two weights as the kernel reads them: lin_w (rounded to bf16 for precision="bf16") and row_w^T in bf16
    (autocast's weight, transposed), contiguous. encoder_head makes them in every call (three copy launches); a
    caller running it on many blocks of rows makes them once here and passes them as cast=."""
    rwt = row_w.t().to(torch.bfloat16).contiguous()                    # [2d, 2K]: autocast's bf16 weight, transposed
    lw = lin_w.to(torch.bfloat16).contiguous() if precision == "bf16" else lin_w.contiguous()   # rounded to nearest
    return lw, rwt


def encoder_head(c, v, lin_w, lin_b, ln_w, ln_b, ln_eps, sc_w, sc_b, row_w, row_b, *, K: int,
                 precision: str = "tf32x3", cast: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """c [B, H, T, 2d] (the Performer's output) and v [B, H, T, d], each fp32, bf16 or fp16 (read exactly); the
    encoder's lin_w [2d, 3d], lin_b, ln_w, ln_b [2d], ln_eps; the scaler's sc_w [2, 2d], sc_b [2]; the bidirectional
    decoder's row_w [2K, 2d], row_b [2K] (fp32) -> (x bf16 [B, 4H, T, K / 2], a channels-last view of
    [B, T, K / 2, 4H]; scales fp32 [B, H, T, 2]). precision: the encoder dots' input precision (tf32x3, ieee,
    tf32: fp32 operands; bf16: the [c ; v] slices (in the kernel) and lin_w rounded to bf16, fp32 sums). Any strides
    with a unit last stride (others are copied). cast: cast_weights(lin_w, row_w, precision), made once by the
    caller. See the module docstring."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    named = dict(lin_w=lin_w, lin_b=lin_b, ln_w=ln_w, ln_b=ln_b, sc_w=sc_w, sc_b=sc_b, row_w=row_w, row_b=row_b)
    check_fp32_tensors("sea bidirectional head", named, "lin_w")
    if not isinstance(c, torch.Tensor) or c.dtype not in V_DTYPES or c.device != lin_w.device:
        raise ValueError(f"sea bidirectional head: c must be a float32, bfloat16 or float16 tensor on {lin_w.device}")
    if not head_usable(c.device):
        raise RuntimeError(f"sea bidirectional head needs triton on CUDA (or TRITON_INTERPRET=1); got {c.device}")
    if c.dim() != 4:
        raise ValueError(f"sea bidirectional head: c must be [B, H, T, 2d], got {tuple(c.shape)}")
    B, H, T, d2 = c.shape
    d = d2 // 2
    if d2 % 2 or d < 1 or d > MAX_D:
        raise ValueError(f"sea bidirectional head: c's last dim {d2} must be 2d with 1 <= d <= {MAX_D}")
    if not isinstance(v, torch.Tensor) or v.dtype not in V_DTYPES or v.device != c.device:
        raise ValueError(f"sea bidirectional head: v must be a float32, bfloat16 or float16 tensor on {c.device}")
    if tuple(v.shape) != (B, H, T, d):
        raise ValueError(f"sea bidirectional head: v {tuple(v.shape)} must be [B, H, T, d] = {(B, H, T, d)}")
    if K % 2 or K < 2:
        raise ValueError(f"sea bidirectional head: K={K} must be even")
    if precision not in PRECISIONS:
        raise ValueError(f"sea bidirectional head: precision={precision!r}, expected one of {PRECISIONS}")
    bk, stages = (BF16_BLOCK_K, BF16_NUM_STAGES) if precision == "bf16" else (BLOCK_K, NUM_STAGES)
    if bk < 16 or bk & (bk - 1) or BLOCK_T < 1 or BLOCK_T & (BLOCK_T - 1):
        raise ValueError(f"sea bidirectional head: BLOCK_K={bk} (power of two >= 16), BLOCK_T={BLOCK_T} "
                         f"(power of two)")
    want = dict(lin_w=(2 * d, 3 * d), lin_b=(2 * d,), ln_w=(2 * d,), ln_b=(2 * d,), sc_w=(2, 2 * d), sc_b=(2,),
                row_w=(2 * K, 2 * d), row_b=(2 * K,))
    for name, shape in want.items():
        if tuple(named[name].shape) != shape:
            raise ValueError(f"sea bidirectional head: {name} has shape {tuple(named[name].shape)}, expected {shape}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (c, v, *named.values())):
        raise RuntimeError("sea bidirectional head is forward-only: an input requires grad while grad is enabled")
    c = c if c.stride(-1) == 1 else c.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    W = K // 2
    x = fresh((B, T, W, 4 * H), torch.bfloat16, c.device, poison=POISON_OUTPUTS)
    scales = fresh((B, H, T, 2), torch.float32, c.device, poison=POISON_OUTPUTS)
    bh = pow2_block(H, 1)
    bt = max(BLOCK_T, pow2_block(-(-16 // bh), 1))                      # tl.dot needs >= 16 rows
    if cast is None:
        lw, rwt = cast_weights(lin_w, row_w, precision)
    else:
        lw, rwt = cast
        lw_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if (lw.dtype != lw_dtype or tuple(lw.shape) != (2 * d, 3 * d) or not lw.is_contiguous()
                or rwt.dtype != torch.bfloat16 or tuple(rwt.shape) != (2 * d, 2 * K) or not rwt.is_contiguous()):
            raise ValueError("sea bidirectional head: cast must be cast_weights(lin_w, row_w, precision) for "
                             f"precision={precision!r}")
    if B * T:
        _head_kernel[(triton.cdiv(T, bt), B)](
            c, v, lw, *(t.contiguous() for t in (lin_b, ln_w, ln_b, sc_w, sc_b)), rwt, row_b.contiguous(), x,
            scales,
            c.stride(0), c.stride(1), c.stride(2), v.stride(0), v.stride(1), v.stride(2), H, T, d, W, float(ln_eps),
            ENC_PREC="ieee" if precision == "bf16" else precision, ENC_BF16=precision == "bf16", EMU=not c.is_cuda,
            BLOCK_T=bt, BLOCK_H=bh, BLOCK_K=bk,
            BLOCK_DV=pow2_block(2 * d), BLOCK_W=pow2_block(W, 4), num_warps=NUM_WARPS,
            num_stages=stages)
    return x.permute(0, 3, 1, 2), scales
