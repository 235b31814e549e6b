"""SEA's bidirectional estimator front in one Triton pass after the Performer's key summary: the FAVOR+ query
pass, the encoder and scaler head, and the bidirectional decoder's row projection, written straight into the
channels-last layout its convolutions read.

What: with kernels/favor_dense.py's key summary (key_summary: KV [B H, m, 2d], z [B H, m] of the values
[identity columns ; v]), for each query row t of head h computes

    c      = FAVOR+ query pass (favor_dense's query pass, the same tile code)                 [2d] fp32
    z      = GELU_erf(LayerNorm([c ; v_t] @ lin_w^T + lin_b))       (kernels/sea_encoder.py)    [2d] fp32
    scales = sigmoid(z @ sc_w^T + sc_b)                                                         [2]  fp32
    y      = bf16(bf16(z) @ bf16(row_w)^T + bf16(row_b))         (BidirectionalDecoder.row under bf16 autocast)

and writes scales [B, H, T, 2] and y, whose column j = i (K / 2) + w (i < 4) goes to x[b, t, w, 4 h + i] of a
[B, T, K / 2, 4 H] bf16 tensor: the decoder's first convolution input [B, 4H, T, K / 2] in channels-last memory
(BidirectionalDecoder.head's output, without the [B, H, T, 2d] Performer output, z, the row projection's
[B, H, T, 2K] output or the permuting copy ever written).

Why: at T = 8k (B=1, H=16, d=64, K=128) those tensors are ~0.2 GB of writes and reads in four launches besides the
query pass; at 64k ~1.6 GB. Measured (H200): 1.62 ms at 8k, 11.7 ms at 64k, against ~0.24 / ~1.7 ms for the launches
it replaces, and 1.24-1.64 ms at 8k with 16- to 64-row tiles on 2-8 warps (results/nvidia-h200/sea-fewer-launches/
call3/, call4/), so SEA does not take it by default (methods/sea/estimator.py: BIDIR_FRONT). Likely cause, not
profiled: each program stores one head's 4 of the 64 channels of a row (scattered 2-byte stores); the next form
would give one program every head of a block of rows, so that it writes whole 128-byte channel rows.

Precision: the query pass is favor_dense's (operands bf16 / fp32, its dot precisions); the encoder's dots take
fp32 operands at input_precision `precision` (tf32x3 by default, as kernels/sea_encoder.py; one dot over the
2d Performer columns and one over the d value columns, where that kernel sums 32-column slices: the same products,
summed in another order); LayerNorm, GELU and the scaler in fp32; z rounded to bf16 (ties to even) for the
row projection, whose weight and bias are rounded to bf16 too and whose products accumulate in fp32 (as cuBLAS
under autocast), then rounded once. Under the Triton interpreter bf16 products run as fp32 dots of bf16-rounded
values (favor_dense's emulation).

Forward only, no padding mask (the identity columns and n_valid of an unpadded call), d <= 64 (2d <= 128 columns
in one tile), bf16 decoder dtype.
"""
from __future__ import annotations

import torch

from kernels._buffers import check_fp32_tensors, fresh, pow2_block, triton_runs_on
from kernels import favor_dense as fd

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: front_usable() is False
    triton = None
    tl = None

POISON_OUTPUTS = False           # tests: fresh outputs filled with NaN so a skipped write fails
BLOCK_T = 64                     # query rows per program
ROW_CHUNK = 64                   # row-projection output columns per dot
NUM_WARPS = 8
PRECISIONS = ("tf32x3", "ieee", "tf32")


if triton is not None:
    from kernels.favor_dense import _query_tile, _round_bf16

    @triton.jit
    def _front_kernel(Q, PROJ, KV, Z, KVSP, ZSP, V, LW, LB, LNW, LNB, SW, SB, RW, RB, XO, SO,
                      sqb, sqh, sqt, svb, svh, svt,
                      H, T, D, M, NCB, KH, x_scale, phi_scale, eps, feat_eps, ln_eps,
                      BF16: tl.constexpr, EMU: tl.constexpr, DASH_PREC: tl.constexpr, PROD_PREC: tl.constexpr,
                      ENC_PREC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr,
                      BLOCK_DV: tl.constexpr, BLOCK_CB: tl.constexpr, ROW_CHUNK: tl.constexpr):
        tb = tl.program_id(0).to(tl.int64)
        bh = tl.program_id(1).to(tl.int64)
        b = bh // H
        h = bh % H
        D2 = 2 * D
        c = _query_tile(Q, PROJ, KV, Z, KVSP, ZSP, tb, bh, sqb, sqh, sqt, H, T, D, D2, M, NCB, x_scale, phi_scale,
                        eps, feat_eps, BF16, EMU, DASH_PREC, PROD_PREC, BLOCK_T, BLOCK_F, BLOCK_D, BLOCK_DV,
                        BLOCK_CB)                                                   # [BT, BDV] fp32
        offs_t = tb * BLOCK_T + tl.arange(0, BLOCK_T)
        tmask = offs_t < T
        offs_n = tl.arange(0, BLOCK_DV)                                             # 2d encoder outputs
        nmask = offs_n < D2
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        # encoder: [c ; v] @ lin_w^T, lin_w [2d, 3d]
        w1 = tl.load(LW + offs_n[None, :] * (3 * D) + offs_n[:, None], mask=nmask[:, None] & nmask[None, :],
                     other=0.0)                                                     # [BDV (in), BDV (out)]
        acc = tl.dot(c, w1, input_precision=ENC_PREC)
        vt = tl.load(V + b * svb + h * svh + offs_t[:, None] * svt + offs_d[None, :],
                     mask=tmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)  # [BT, BD]
        w2 = tl.load(LW + offs_n[None, :] * (3 * D) + (D2 + offs_d)[:, None], mask=dmask[:, None] & nmask[None, :],
                     other=0.0)                                                     # [BD, BDV]
        acc += tl.dot(vt, w2, input_precision=ENC_PREC)
        acc += tl.load(LB + offs_n, mask=nmask, other=0.0)[None, :]
        mean = tl.sum(acc, axis=1) / D2                                             # LayerNorm over 2d
        diff = tl.where(nmask[None, :], acc - mean[:, None], 0.0)
        var = tl.sum(diff * diff, axis=1) / D2
        rstd = 1.0 / tl.sqrt(var + ln_eps)
        y = diff * rstd[:, None] * tl.load(LNW + offs_n, mask=nmask, other=0.0)[None, :] \
            + tl.load(LNB + offs_n, mask=nmask, other=0.0)[None, :]
        z = 0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))                        # exact GELU; padded: 0
        rows = bh * T + offs_t                                                      # [B, H, T] flattened
        s0 = tl.sum(z * tl.load(SW + offs_n, mask=nmask, other=0.0)[None, :], axis=1) + tl.load(SB)
        s1 = tl.sum(z * tl.load(SW + D2 + offs_n, mask=nmask, other=0.0)[None, :], axis=1) + tl.load(SB + 1)
        tl.store(SO + rows * 2, 1.0 / (1.0 + tl.exp(-s0)), mask=tmask)
        tl.store(SO + rows * 2 + 1, 1.0 / (1.0 + tl.exp(-s1)), mask=tmask)
        # the decoder's row projection in bf16: [BT, 2d] @ row_w^T [2d, 4 KH], column j -> x[b, t, j % KH, 4 h + j / KH]
        zb = _round_bf16(z)
        if not EMU:
            zb = zb.to(tl.bfloat16)
        offs_j = tl.arange(0, ROW_CHUNK)
        for j0 in range(0, 4 * KH, ROW_CHUNK):
            j = j0 + offs_j
            jmask = j < 4 * KH
            rw = _round_bf16(tl.load(RW + j[None, :] * D2 + offs_n[:, None], mask=nmask[:, None] & jmask[None, :],
                                     other=0.0))                                    # [BDV, RC] = row_w^T slice
            if EMU:
                out = tl.dot(zb, rw, input_precision="ieee")
            else:
                out = tl.dot(zb, rw.to(tl.bfloat16))
            out = _round_bf16(out + _round_bf16(tl.load(RB + j, mask=jmask, other=0.0))[None, :])
            dst = ((b * T + offs_t[:, None]) * KH + (j % KH)[None, :]) * (4 * H) + h * 4 + (j // KH)[None, :]
            tl.store(XO + dst, out.to(tl.bfloat16), mask=tmask[:, None] & jmask[None, :])


def front_usable(device) -> bool:
    """True when the kernel can run on `device` (CUDA, or any device under TRITON_INTERPRET=1)."""
    return triton_runs_on(device, triton is not None)


def bidir_front(q, k, v, values, proj, lin_w, lin_b, ln_w, ln_b, ln_eps, sc_w, sc_b, row_w, row_b, *, K: int,
                operands: str = "bf16", precision: str | None = None, enc_precision: str = "tf32x3",
                eps: float = 1e-6, feat_eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, v [B, H, T, d] (v in any float dtype, read exactly into fp32); values: the Performer's values
    [identity columns ; v] [B, H, T, 2d] for the key pass; proj [m, d]; the encoder's lin_w [2d, 3d],
    lin_b, ln_w, ln_b [2d], ln_eps; the scaler's sc_w [2, 2d], sc_b [2]; the bidirectional decoder's row_w
    [2K, 2d], row_b [2K] (fp32 weights) -> (x bf16 [B, 4H, T, K / 2], a channels-last view of [B, T, K / 2, 4H];
    scales fp32 [B, H, T, 2]). operands / precision: the Performer's (favor_softmax_dense's); enc_precision: the
    encoder dots' input precision. See the module docstring."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if not front_usable(q.device):
        raise RuntimeError(f"sea bidirectional front needs triton on CUDA (or TRITON_INTERPRET=1); got {q.device}")
    B, H, T, d = q.shape
    if d > 64:
        raise ValueError(f"sea bidirectional front: head dim d={d}, the kernel holds 2d <= 128 columns")
    if K % 2 or K < 2:
        raise ValueError(f"sea bidirectional front: K={K} must be even")
    if tuple(v.shape) != (B, H, T, d):
        raise ValueError(f"sea bidirectional front: v {tuple(v.shape)} must be [B, H, T, d] = {(B, H, T, d)}")
    if enc_precision not in PRECISIONS:
        raise ValueError(f"sea bidirectional front: enc_precision={enc_precision!r}, expected one of {PRECISIONS}")
    named = dict(lin_w=lin_w, lin_b=lin_b, ln_w=ln_w, ln_b=ln_b, sc_w=sc_w, sc_b=sc_b, row_w=row_w, row_b=row_b)
    check_fp32_tensors("sea bidirectional front", dict(proj=proj, **named), "proj")
    want = dict(lin_w=(2 * d, 3 * d), lin_b=(2 * d,), ln_w=(2 * d,), ln_b=(2 * d,), sc_w=(2, 2 * d), sc_b=(2,),
                row_w=(2 * K, 2 * d), row_b=(2 * K,))
    for name, shape in want.items():
        if tuple(named[name].shape) != shape:
            raise ValueError(f"sea bidirectional front: {name} has shape {tuple(named[name].shape)}, expected {shape}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, *named.values())):
        raise RuntimeError("sea bidirectional front is forward-only: an input requires grad while grad is enabled")
    if tuple(values.shape) != (B, H, T, 2 * d):
        raise ValueError(f"sea bidirectional front: values {tuple(values.shape)} must be [B, H, T, 2d]")
    st = fd.key_summary(q, k, values, proj, operands=operands, feat_eps=feat_eps, precision=precision)
    q = st["q"]
    v = v if v.stride(-1) == 1 else v.contiguous()
    KH = K // 2
    x = fresh((B, T, KH, 4 * H), torch.bfloat16, q.device, poison=POISON_OUTPUTS)
    scales = fresh((B, H, T, 2), torch.float32, q.device, poison=POISON_OUTPUTS)
    _front_kernel[(triton.cdiv(T, BLOCK_T), B * H)](
        q, st["proj"], st["kv"], st["z"], st["kvs_part"], st["zs_part"], v,
        *(t.contiguous() for t in (lin_w, lin_b, ln_w, ln_b, sc_w, sc_b, row_w, row_b)), x, scales,
        q.stride(0), q.stride(1), q.stride(2), v.stride(0), v.stride(1), v.stride(2),
        H, T, d, st["m"], st["ncb"], KH, st["x_scale"], st["phi_scale"], float(eps), float(feat_eps), float(ln_eps),
        BF16=st["bf16"], EMU=st["emu"], DASH_PREC=st["dash_prec"], PROD_PREC=st["prod_prec"], ENC_PREC=enc_precision,
        BLOCK_T=BLOCK_T, BLOCK_F=fd.QUERY_BLOCK_F, BLOCK_D=pow2_block(d), BLOCK_DV=pow2_block(2 * d),
        BLOCK_CB=pow2_block(st["ncb"]), ROW_CHUNK=ROW_CHUNK, num_warps=NUM_WARPS)
    return x.permute(0, 3, 1, 2), scales
