"""SEA's causal estimator front half in one forward-only Triton pass: relu FAVOR+ features, causal linear
attention over the values [V_I ; v], normalisation, then the encoder (Linear -> LayerNorm -> GELU) and the
scaler head.

What: for each (b, h) and row t (q, k, v [B, H, T, d] in any float dtype, read as fp32; v_id [L, d] fp32 the
learned V_I rows, rows row0 .. row0 + T - 1 used; proj [m, d] fp32):

    phi(x)    = relu((x d^-1/4) @ proj^T) + 1e-3                                   [m]   (fp32)
    vals[s]   = [v_id[row0 + s] ; v[s]]                                            [2d]  (never materialised)
    num[t]    = sum_{s <= t} (phi_q[t] . phi_k[s]) vals[s] + phi_q[t] @ S0
    den[t]    = sum_{s <= t}  phi_q[t] . phi_k[s]          + phi_q[t] . z0
    c[t]      = num[t] / (den[t] + 1e-6)
    z[t]      = GELU_erf(LayerNorm(c[t] @ Wc^T + v[t] @ Wv^T + b))                  [2d]  (lin_w = [Wc | Wv])
    scales[t] = sigmoid(z[t] @ Ws^T + bs)                                          [2]

(S0 [B, H, m, 2d], z0 [B, H, m]: an optional incoming prefix state, e.g. from the query block before; zero when
None.) It is `favor_attention(q, k, cat([v_id rows, v]), proj, kernel="relu", causal=True, operands=...)`
followed by `Estimator.enc(cat([c, v]))` and `sigmoid(Estimator.scaler(z))` (methods/sea/estimator.py), with
the state after the last row available as (S0 + sum_s phi_k[s]^T vals[s], z0 + sum_s phi_k[s]).

How (three launches, the chunk-parallel structure of kernels/linear_attention.py's parallel algo):
  1. group states: one program per (group of GROUP chunks of CHUNK rows, b * H + h) computes phi_k of its rows
     from the k tile and proj (in registers) and sums phi_k^T v_id and phi_k^T v ([BM, d] each) and phi_k
     ([BM]) -> fp32 states [B * H, NG, BM, 2 BD] (+ [.., BM]).
  2. scan: one program per (SCAN_BLOCK_F stored values, b * H + h), SCAN_STEPS groups per step, turns the states,
     in place, into exclusive prefix sums starting from S0 / z0, and writes the state after the last group when
     asked.
  3. output: one program per (chunk, b * H + h) holds all 2d value columns of its CHUNK rows: phi_q from the q
     tile, phi_q @ (scanned state) + the chunks of its group before it and itself (causal mask) attended
     quadratically (phi_k recomputed from k), the division, then the encoder epilogue (tl.dot of the [C, d]
     halves of c against the Wc^T slices and of the v tile against Wv^T, bias, LayerNorm, GELU, the scaler's
     two dot products) on the same registers; it writes only z [B, H, T, 2d] and scales [B, H, T, 2].
  With head= (the causal decoder's row projection W [2w, 2d], b [2w] and its LayerNorm over w, plus a 16-bit
     dtype dt: SEA's estimator_dtype), the epilogue goes on from z in registers: for each half j of the
     projection, h_j = dt(dt(z) @ dt(W_j)^T + dt(b_j)) (dt tensor-core dots, fp32 sums), x_j = LayerNorm(h_j) in
     fp32, stored in dt as channel 2h + j of x [B, 2H, T, w], the first convolution's input. z is then never
     written: 67 MB of bf16 instead of 537 MB of fp32 at T=65536, H=16, w=16, and the decoder's cast of z and
     its row GEMM are gone. This is what CausalDecoder.head computes under autocast (up to summation order).
  m is padded to BM (a power of two >= 16) with masks: padded feature columns are 0 (not relu(0) + eps), and
  so are the features of rows past T. d is padded to BD likewise (d must be a power of two <= 128).

Operands: "fp32": every product in fp32 (tl.dot input_precision PRECISION, "tf32x3" by default, or "ieee").
"bf16": as favor_attention(operands="bf16") on its Triton path: the fp32 features and the values are rounded
to bf16 for the products (bf16 tensor-core dots, fp32 sums); the intra-group scores phi_q . phi_k are summed
in fp32 for the normaliser and rounded to bf16 before they multiply the values (as the linear-attention kernel
does). Unlike that kernel, the scanned states are NOT rounded to bf16: the rounded phi_q multiplies the fp32
state (PRECISION dots), as favor_causal_carry does with a carried state. The feature projection itself is
always fp32 (FEAT_PRECISION); the encoder epilogue is fp32 (PRECISION) and takes the unrounded v.
Under TRITON_INTERPRET=1 on CPU the bf16-rounded operands are multiplied in fp32 (the interpreter's bf16 dots
are unreliable; the rounding is the same, the products exact).

Expected cost (an estimate, NOT measured) at B=1, H=16, T=65536, d=64, m=33 (BM=64), CHUNK=64, auto GROUP=4
(1024 chunks, 256 group states per head): 3 launches. DRAM traffic with fp32 q/k/v (268 MB each): phase 1
reads k, v (+ V_I, 17 MB, shared by the heads) and writes 134 MB of states; phase 2 reads and writes the
states (268 MB); phase 3 reads q, k, v, V_I and the states and writes z (537 MB) and scales (8 MB) -- about
2.4 GB in all (~0.6 ms at ~4 TB/s; bf16 q/k/v save ~0.7 GB). The group chunks' k/v re-reads of phase 3 should
hit L2. Work: ~190 GFLOP (phi_k is recomputed for each of the up to GROUP chunks a program attends; the
encoder is ~50 GFLOP of it), mostly tf32x3 with fp32 operands, so on an H200 this may well be compute-bound
(order 1-2 ms) rather than bandwidth-bound; FEAT_PRECISION / PRECISION, GROUP / MAX_CHECKPOINTS and the
warp counts are the knobs. Today's path writes and re-reads phi_q, phi_k, the [T, 2d] vals, c_perf and the
division's output in separate launches.
Measured on an H200 (results/nvidia-h200/sea-vs-dense-2/, bf16 operands): the output kernel took 3.49 ms at
T=65536 (1 chunk per group, MAX_CHECKPOINTS 1024; 4.2 ms with 4) and 16.8 ms at 262144 (4 per group; 25.9 ms with
16): compute-bound, as feared; the states and scan kernels 0.69 and 0.41 ms at 64k (0.43 and 0.11 with 256 states).
With precision="tf32" (one-pass products, bf16 feature operands, 128-row chunks, 2 pipeline stages) the whole front
took 1.95 ms at 64k and 6.88 ms at 256k (results/nvidia-h200/sea-vs-dense-3/front-stages/; 2.89 / 10.6 ms with 64-row
chunks, results/nvidia-h200/sea-tune/).

Forward only: favor_encoder_forward refuses when grad is enabled and an input requires grad.
favor_encoder_ref is the plain PyTorch restatement (float64 when given float64 inputs) used by the tests.
"""
from __future__ import annotations

import math
import os

import torch

from kernels._buffers import check_fp32_tensors, fresh, pow2_block, triton_runs_on

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: the kernel is unavailable, the reference still works
    triton = None
    tl = None

__all__ = ["favor_encoder_forward", "favor_encoder_ref", "favor_encoder_usable", "head_ref"]

# Tests set this to True: fresh outputs (z, scales, the returned state) are then NaN so a skipped write fails.
POISON_OUTPUTS = False
CHUNK = 64               # rows per chunk (power of two >= 16)
STAGES_TF32 = 2          # software-pipeline stages of the states / output kernels in precision="tf32" calls (None:
                         # Triton's default): with 128-row chunks and 4 chunks per group the states kernel's default
                         # staging asked for 237568 B of shared memory on an H200 (limit 232448) and did not launch
CHUNK_TF32 = 128         # rows per chunk of precision="tf32" calls (H200, bf16 operands, the whole front: 2.89 ->
                         # 2.18 ms at T=65536, 10.6 -> 6.9 ms at 262144 against 64-row chunks; results/nvidia-h200/
                         # sea-tune/)
GROUP = None             # chunks per stored group state; None: the smallest power of two with NG <= MAX_CHECKPOINTS
MAX_CHECKPOINTS = 1024   # auto GROUP: at most this many stored states per (b, h) (32 KiB each at d = 64, m <= 64);
                         # 256 made each chunk attend up to 15 earlier chunks at T = 256k: 26 of SEA's 58 ms (H200)
PRECISION = "tf32x3"     # fp32 dots (state products, fp32-operand products, encoder): "tf32x3" or "ieee"
FEAT_PRECISION = "tf32x3"  # the feature projection (x d^-1/4) @ proj^T: "tf32x3" or "ieee" (never tf32)
SCAN_BLOCK_F = 256       # scan: stored state values per program (power of two)
SCAN_STEPS = 8           # scan: groups per step of its dependent chain (power of two)
NUM_WARPS_STATES = 4
NUM_WARPS_OUTPUT = 8
MAX_D = 128
FEATURE_EPS = 1e-3       # relu features' additive constant (methods/sea/favor.py relu_features)
DEN_EPS = 1e-6           # favor_attention's normaliser eps

_PRECISIONS = ("tf32x3", "ieee")
_CALL_PRECISIONS = ("tf32x3", "ieee", "tf32")   # a call's precision= (tf32: one pass, ~2^-11 relative per product)
_OPERANDS = ("fp32", "bf16")


if triton is not None:

    @triton.jit
    def _operand(x, DOT: tl.constexpr, MMA: tl.constexpr, SOFT: tl.constexpr):
        """fp32 x as a tl.dot operand of dtype DOT (bf16 or fp32), held as MMA. SOFT (the CPU interpreter, whose
        fp32 -> bf16 cast truncates): round to nearest even by bit arithmetic and keep fp32 (finite x)."""
        if SOFT:
            bits = x.to(tl.int32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
            return bits.to(tl.float32, bitcast=True)
        else:
            return x.to(DOT).to(MMA)

    @triton.jit
    def _feature_dot(a, b, DOT: tl.constexpr, MMA: tl.constexpr, SOFT: tl.constexpr, OPREC: tl.constexpr,
                     FPREC: tl.constexpr, FEAT_BF16: tl.constexpr):
        """The feature projection a @ b (fp32 tiles): FPREC fp32 dots, or with FEAT_BF16 both operands rounded to
        DOT (bf16) first (precision="tf32" with bf16 operands; the host folds d^-1/4 into proj)."""
        if FEAT_BF16:
            return tl.dot(_operand(a, DOT, MMA, SOFT), _operand(b, DOT, MMA, SOFT), input_precision=OPREC)
        else:
            return tl.dot(a, b, input_precision=FPREC)

    @triton.jit
    def _fe_states_kernel(K, V, VID, P, ST, ZS,
                          skb, skh, skt, skd, svb, svh, svt, svd, sit, sid,
                          H, T, M, NC, NG, row0, scale,
                          D: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, CHUNK: tl.constexpr,
                          GROUP: tl.constexpr, DOT: tl.constexpr, MMA: tl.constexpr, SOFT: tl.constexpr,
                          OPREC: tl.constexpr,
                          FPREC: tl.constexpr, FEAT_BF16: tl.constexpr):
        """Phase 1: ST[bh, g] = [sum phi_k^T v_id | sum phi_k^T v] over the rows of group g ([BM, 2 BD] fp32),
        ZS[bh, g] = sum phi_k ([BM])."""
        g = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        b = pid_bh // H
        h = pid_bh % H
        k_base = K + b * skb + h * skh
        v_base = V + b * svb + h * svh
        offs_c = tl.arange(0, CHUNK)
        offs_d = tl.arange(0, BD)
        offs_m = tl.arange(0, BM)
        d_ok = offs_d < D
        m_ok = offs_m < M
        pm = tl.load(P + offs_m[:, None] * D + offs_d[None, :], mask=m_ok[:, None] & d_ok[None, :],
                     other=0.0)                                                           # [BM, BD] proj
        s_id = tl.zeros([BM, BD], dtype=tl.float32)
        s_v = tl.zeros([BM, BD], dtype=tl.float32)
        zacc = tl.zeros([BM], dtype=tl.float32)
        c_lo = g * GROUP
        c_hi = tl.minimum(c_lo + GROUP, NC)
        for c in range(c_lo, c_hi):
            t = (c * CHUNK + offs_c).to(tl.int64)                                           # [C]
            t_ok = t < T
            kt = tl.load(k_base + t[None, :] * skt + offs_d[:, None] * skd,
                         mask=d_ok[:, None] & t_ok[None, :], other=0.0).to(tl.float32) * scale   # [BD, C]
            fk = _feature_dot(pm, kt, DOT, MMA, SOFT, OPREC, FPREC, FEAT_BF16)              # [BM, C]
            fk = tl.where(m_ok[:, None] & t_ok[None, :], tl.maximum(fk, 0.0) + 1e-3, 0.0)
            fk = _operand(fk, DOT, MMA, SOFT)                                               # (bf16-rounded)
            rows_ok = t_ok[:, None] & d_ok[None, :]
            vi = _operand(tl.load(VID + (row0 + t)[:, None] * sit + offs_d[None, :] * sid, mask=rows_ok,
                                  other=0.0), DOT, MMA, SOFT)                                          # [C, BD]
            vv = _operand(tl.load(v_base + t[:, None] * svt + offs_d[None, :] * svd, mask=rows_ok,
                                  other=0.0).to(tl.float32), DOT, MMA, SOFT)                           # [C, BD]
            s_id = tl.dot(fk, vi, s_id, input_precision=OPREC)
            s_v = tl.dot(fk, vv, s_v, input_precision=OPREC)
            zacc += tl.sum(fk.to(tl.float32), axis=1)
        st = ST + (pid_bh * NG + g) * (BM * 2 * BD) + offs_m[:, None] * (2 * BD) + offs_d[None, :]
        tl.store(st, s_id)
        tl.store(st + BD, s_v)
        tl.store(ZS + (pid_bh * NG + g) * BM + offs_m, zacc)

    @triton.jit
    def _fe_scan_kernel(X, X0, XO, M, NG, F,
                        D: tl.constexpr, BD: tl.constexpr, IS_Z: tl.constexpr, BLOCK_F: tl.constexpr,
                        STEPS: tl.constexpr, HAS_STATE: tl.constexpr, RET_STATE: tl.constexpr):
        """Phase 2, in place, on the NG stored group sums of F floats per bh (the states [BM, 2 BD] viewed flat, or
        the key sums [BM] when IS_Z): X[bh, g] <- X0 + sum of the groups before g; the total (the state after the
        last row) goes to XO when RET_STATE. One program per (BLOCK_F values, bh), walking the groups STEPS at a
        time so that the dependent chain is NG / STEPS long (a one-group-per-step walk was latency-bound, 0.55 ms at
        T = 16k in the linear-attention kernel's scan): the [STEPS, BLOCK_F] tile is loaded twice, once shifted back
        by one group (first row zero), and the running total plus the prefix sum of the shifted tile is stored, so a
        group's value is a sum of earlier groups only. X0 / XO are unpadded ([m, 2d] or [m]); padded entries read 0
        from X0 and are not written to XO."""
        pid_f = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        f = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
        f_ok = f < F
        if IS_Z:
            ext_ok = f_ok & (f < M)
            ext = pid_bh * M + f
        else:
            row = f // (2 * BD)
            col = f % (2 * BD)
            dd = col % BD
            ext_ok = f_ok & (row < M) & (dd < D)
            ext = pid_bh * M * 2 * D + row * (2 * D) + (col // BD) * D + dd                  # [m, 2d] layout
        if HAS_STATE:
            run = tl.load(X0 + ext, mask=ext_ok, other=0.0)
        else:
            run = tl.zeros([BLOCK_F], dtype=tl.float32)
        base = X + pid_bh * NG * F
        for i0 in range(0, NG, STEPS):
            i = i0 + tl.arange(0, STEPS)
            ok = (i < NG)[:, None] & f_ok[None, :]
            ptr = base + i[:, None] * F + f[None, :]                                       # [STEPS, BLOCK_F]
            x = tl.load(ptr, mask=ok, other=0.0)
            x_prev = tl.load(ptr - F, mask=ok & (i > i0)[:, None], other=0.0)              # row j: group j - 1
            tl.store(ptr, run[None, :] + tl.cumsum(x_prev, axis=0), mask=ok)
            run += tl.sum(x, axis=0)
        if RET_STATE:
            tl.store(XO + ext, run, mask=ext_ok)

    @triton.jit
    def _fe_chunk(fqm, pm, k_base, v_base, VID, tk, keep, offs_d, d_ok, m_ok, T, skt, skd, svt, svd, sit, sid,
                  row0, scale, DOT: tl.constexpr, MMA: tl.constexpr, SOFT: tl.constexpr, OPREC: tl.constexpr,
                  FPREC: tl.constexpr, FEAT_BF16: tl.constexpr):
        """One key chunk (rows tk [C]) against the query chunk's features fqm [C, BM]: its scores kept where `keep`
        [C, C] (the causal mask on the diagonal chunk), as their row sums (the normaliser's part) and as the
        rounded dot operand, with the chunk's V_I and v rows as operands and v unrounded (fp32)."""
        tk_ok = tk < T
        kt = tl.load(k_base + tk[None, :] * skt + offs_d[:, None] * skd,
                     mask=d_ok[:, None] & tk_ok[None, :], other=0.0).to(tl.float32) * scale       # [BD, C]
        rows_ok = tk_ok[:, None] & d_ok[None, :]
        vid = tl.load(VID + (row0 + tk)[:, None] * sit + offs_d[None, :] * sid, mask=rows_ok, other=0.0)  # [C, BD]
        vraw = tl.load(v_base + tk[:, None] * svt + offs_d[None, :] * svd, mask=rows_ok,
                       other=0.0).to(tl.float32)                                                # [C, BD]
        fk = _feature_dot(pm, kt, DOT, MMA, SOFT, OPREC, FPREC, FEAT_BF16)                      # [BM, C]
        fk = tl.where(m_ok[:, None] & tk_ok[None, :], tl.maximum(fk, 0.0) + 1e-3, 0.0)
        sc = tl.dot(fqm, _operand(fk, DOT, MMA, SOFT), input_precision=OPREC)                  # [C, C] fp32
        sc = tl.where(keep, sc, 0.0)
        return (tl.sum(sc, axis=1), _operand(sc, DOT, MMA, SOFT), _operand(vid, DOT, MMA, SOFT),
                _operand(vraw, DOT, MMA, SOFT), vraw)

    @triton.jit
    def _fe_output_kernel(Q, K, V, VID, P, ST, ZS, LW, LB, LNW, LNB, SW, SB, Z, S, RW, RB, NW, NB,
                          sqb, sqh, sqt, sqd, skb, skh, skt, skd, svb, svh, svt, svd, sit, sid,
                          H, T, M, NG, row0, scale, ln_eps, nin_eps,
                          D: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, CHUNK: tl.constexpr,
                          GROUP: tl.constexpr, DOT: tl.constexpr, MMA: tl.constexpr, SOFT: tl.constexpr,
                          OPREC: tl.constexpr,
                          FPREC: tl.constexpr, PREC: tl.constexpr, FEAT_BF16: tl.constexpr,
                          HEAD: tl.constexpr, HDT: tl.constexpr, HMMA: tl.constexpr, HSOFT: tl.constexpr,
                          HPREC: tl.constexpr, WH: tl.constexpr, BW: tl.constexpr):
        """Phase 3: one program per (chunk c, bh): c = num / (den + eps) for its rows over all 2d value
        columns, then the encoder + scaler epilogue; writes z (or, with HEAD, the decoder head's output into Z)
        and scales only."""
        c = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        b = pid_bh // H
        h = pid_bh % H
        q_base = Q + b * sqb + h * sqh
        k_base = K + b * skb + h * skh
        v_base = V + b * svb + h * svh
        g = c // GROUP
        offs_c = tl.arange(0, CHUNK)
        offs_d = tl.arange(0, BD)
        offs_m = tl.arange(0, BM)
        d_ok = offs_d < D
        m_ok = offs_m < M
        t = (c * CHUNK + offs_c).to(tl.int64)                                               # [C] query rows
        t_ok = t < T

        # phi_q [C, BM] from the q tile and proj^T
        qx = tl.load(q_base + t[:, None] * sqt + offs_d[None, :] * sqd, mask=t_ok[:, None] & d_ok[None, :],
                     other=0.0).to(tl.float32) * scale                                       # [C, BD]
        pt = tl.load(P + offs_m[None, :] * D + offs_d[:, None], mask=d_ok[:, None] & m_ok[None, :],
                     other=0.0)                                                             # [BD, BM] proj^T
        fq = _feature_dot(qx, pt, DOT, MMA, SOFT, OPREC, FPREC, FEAT_BF16)                 # [C, BM]
        fq = tl.where(m_ok[None, :], tl.maximum(fq, 0.0) + 1e-3, 0.0)
        fq = _operand(fq, DOT, tl.float32, SOFT)                                            # (bf16-rounded)

        fqm = fq.to(MMA)
        pm = tl.load(P + offs_m[:, None] * D + offs_d[None, :], mask=m_ok[:, None] & d_ok[None, :],
                     other=0.0)                                                             # [BM, BD] proj
        causal = offs_c[None, :] <= offs_c[:, None]                                         # key s <= query t
        st = ST + (pid_bh * NG + g) * (BM * 2 * BD) + offs_m[:, None] * (2 * BD) + offs_d[None, :]
        zst = tl.load(ZS + (pid_bh * NG + g) * BM + offs_m)
        if GROUP == 1:
            # one chunk per group: the intra-group part is the chunk itself, in straight-line code (its k, V_I and
            # v loads are issued with the state's rather than after them), and its v rows are the encoder's
            den, scm, vi, vv, vq = _fe_chunk(fqm, pm, k_base, v_base, VID, t, causal, offs_d, d_ok, m_ok, T, skt,
                                             skd, svt, svd, sit, sid, row0, scale, DOT, MMA, SOFT, OPREC, FPREC,
                                             FEAT_BF16)
            acc_id = tl.dot(scm, vi, input_precision=OPREC)                                  # [C, BD]
            acc_v = tl.dot(scm, vv, input_precision=OPREC)
            # inter-group: the scanned state of group g (incoming state included), fp32
            acc_id = tl.dot(fq, tl.load(st), acc_id, input_precision=PREC)
            acc_v = tl.dot(fq, tl.load(st + BD), acc_v, input_precision=PREC)
            den += tl.sum(fq * zst[None, :], axis=1)                                        # [C]
        else:
            # inter-group: the scanned state of group g (incoming state included), fp32
            acc_id = tl.dot(fq, tl.load(st), input_precision=PREC)                         # [C, BD]
            acc_v = tl.dot(fq, tl.load(st + BD), input_precision=PREC)                     # [C, BD]
            den = tl.sum(fq * zst[None, :], axis=1)                                         # [C]
            # intra-group: the chunks of group g before c, and c itself with the causal mask
            for cp in range(g * GROUP, c + 1):
                rs, scm, vi, vv, _ = _fe_chunk(fqm, pm, k_base, v_base, VID, (cp * CHUNK + offs_c).to(tl.int64),
                                               causal | (cp != c), offs_d, d_ok, m_ok, T, skt, skd, svt, svd,
                                               sit, sid, row0, scale, DOT, MMA, SOFT, OPREC, FPREC, FEAT_BF16)
                den += rs
                acc_id = tl.dot(scm, vi, acc_id, input_precision=OPREC)
                acc_v = tl.dot(scm, vv, acc_v, input_precision=OPREC)
            vq = tl.load(v_base + t[:, None] * svt + offs_d[None, :] * svd, mask=t_ok[:, None] & d_ok[None, :],
                         other=0.0).to(tl.float32)                                           # [C, BD] unrounded v
        dinv = den + 1e-6
        c_id = acc_id / dinv[:, None]                                                        # [C, BD]
        c_v = acc_v / dinv[:, None]                                                          # [C, BD]

        # encoder: x = c @ Wc^T + v @ Wv^T + b  (lin_w [2d, 3d] row-major; padded columns of x stay 0)
        BD2: tl.constexpr = 2 * BD
        D2: tl.constexpr = 2 * D
        D3: tl.constexpr = 3 * D
        offs_n = tl.arange(0, BD2)
        n_ok = offs_n < D2
        w_ok = d_ok[:, None] & n_ok[None, :]
        w_ptr = LW + offs_n[None, :] * D3 + offs_d[:, None]                                 # [BD, BD2] lin_w^T
        x = tl.dot(c_id, tl.load(w_ptr, mask=w_ok, other=0.0), input_precision=PREC)       # [C, BD2]
        x = tl.dot(c_v, tl.load(w_ptr + D, mask=w_ok, other=0.0), x, input_precision=PREC)
        x = tl.dot(vq, tl.load(w_ptr + D2, mask=w_ok, other=0.0), x, input_precision=PREC)
        x += tl.load(LB + offs_n, mask=n_ok, other=0.0)[None, :]
        mean = tl.sum(x, axis=1) / D2                                                        # [C]
        diff = tl.where(n_ok[None, :], x - mean[:, None], 0.0)
        var = tl.sum(diff * diff, axis=1) / D2                                               # biased, as nn.LayerNorm
        rstd = 1.0 / tl.sqrt(var + ln_eps)
        y = (diff * rstd[:, None] * tl.load(LNW + offs_n, mask=n_ok, other=0.0)[None, :]
             + tl.load(LNB + offs_n, mask=n_ok, other=0.0)[None, :])                          # padded: 0
        zz = 0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))                                # exact GELU
        row = pid_bh * T + t                                                                 # [C] flat row
        if HEAD:
            # the causal decoder's head under autocast (HDT): y_j = LayerNorm_w(HDT(HDT(z) @ HDT(W_j)^T +
            # HDT(b_j))) for the two halves j of its row projection, stored in HDT as channel 2h + j of
            # Z [B, 2H, T, WH] (the first convolution's input)
            offs_w = tl.arange(0, BW)
            w_ok = offs_w < WH
            zb = _operand(zz, HDT, HMMA, HSOFT)                                             # [C, BD2]
            rw_ptr = RW + offs_w[None, :] * D2 + offs_n[:, None]                            # [BD2, BW] rows^T
            for j in tl.static_range(2):
                wt = _operand(tl.load(rw_ptr + j * WH * D2, mask=n_ok[:, None] & w_ok[None, :], other=0.0),
                              HDT, HMMA, HSOFT)
                bj = _operand(tl.load(RB + j * WH + offs_w, mask=w_ok, other=0.0), HDT, tl.float32, HSOFT)
                hj = _operand(tl.dot(zb, wt, input_precision=HPREC) + bj[None, :], HDT, tl.float32, HSOFT)
                hmean = tl.sum(hj, axis=1) / WH                                              # padded: 0
                hdiff = tl.where(w_ok[None, :], hj - hmean[:, None], 0.0)
                hrstd = 1.0 / tl.sqrt(tl.sum(hdiff * hdiff, axis=1) / WH + nin_eps)
                yj = (hdiff * hrstd[:, None] * tl.load(NW + offs_w, mask=w_ok, other=0.0)[None, :]
                      + tl.load(NB + offs_w, mask=w_ok, other=0.0)[None, :])
                yj = _operand(yj, HDT, tl.float32, HSOFT)                                  # exact in HDT
                hrow = (2 * pid_bh + j) * T + t                                              # [C]
                tl.store(Z + hrow[:, None] * WH + offs_w[None, :], yj.to(HDT), mask=t_ok[:, None] & w_ok[None, :])
        else:
            tl.store(Z + row[:, None] * D2 + offs_n[None, :], zz, mask=t_ok[:, None] & n_ok[None, :])
        s0 = tl.sum(zz * tl.load(SW + offs_n, mask=n_ok, other=0.0)[None, :], axis=1) + tl.load(SB)
        s1 = tl.sum(zz * tl.load(SW + D2 + offs_n, mask=n_ok, other=0.0)[None, :], axis=1) + tl.load(SB + 1)
        tl.store(S + row * 2, 1.0 / (1.0 + tl.exp(-s0)), mask=t_ok)
        tl.store(S + row * 2 + 1, 1.0 / (1.0 + tl.exp(-s1)), mask=t_ok)


def favor_encoder_usable(device) -> bool:
    """True when the kernel can run on `device`: CUDA, or any device under TRITON_INTERPRET=1."""
    return triton_runs_on(device, triton is not None)


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _auto_group(n_chunks: int) -> int:
    g = 1
    while -(-n_chunks // g) > MAX_CHECKPOINTS:
        g *= 2
    return g


def _check(q, k, v, v_id, proj, lin_w, lin_b, ln_w, ln_b, sc_w, sc_b, row0, state, operands, *, kernel: bool):
    what = "sea favor encoder"
    if operands not in _OPERANDS:
        raise ValueError(f"{what}: operands={operands!r}, expected one of {_OPERANDS}")
    for name, x in dict(q=q, k=k, v=v).items():
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"{what}: {name} must be a floating-point tensor")
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"{what}: q, k, v must all be [B, H, T, d]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)} (repeat grouped k/v heads first)")
    B, H, T, d = q.shape
    if d < 1 or d > MAX_D or d & (d - 1):
        raise ValueError(f"{what}: head dim d={d} unsupported (needs a power of two <= {MAX_D})")
    named = dict(v_id=v_id, proj=proj, lin_w=lin_w, lin_b=lin_b, ln_w=ln_w, ln_b=ln_b, sc_w=sc_w, sc_b=sc_b)
    if state is not None:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError(f"{what}: state must be a pair (S [B, H, m, 2d], z [B, H, m]) or None")
        named.update(state_S=state[0], state_z=state[1])
    if kernel:
        check_fp32_tensors(what, named, "v_id")
        for name, x in dict(q=q, k=k, v=v).items():
            if x.device != v_id.device:
                raise ValueError(f"{what}: {name} is on {x.device}, v_id on {v_id.device}")
    if proj.dim() != 2 or proj.shape[1] != d or proj.shape[0] < 1:
        raise ValueError(f"{what}: proj has shape {tuple(proj.shape)}, expected [m, {d}]")
    m = proj.shape[0]
    if v_id.dim() != 2 or v_id.shape[1] != d:
        raise ValueError(f"{what}: v_id has shape {tuple(v_id.shape)}, expected [max_len, {d}]")
    if row0 < 0 or row0 + T > v_id.shape[0]:
        raise ValueError(f"{what}: rows {row0} .. {row0 + T - 1} are outside v_id's {v_id.shape[0]} rows "
                         f"(sequence longer than max_len)")
    want = dict(lin_w=(2 * d, 3 * d), lin_b=(2 * d,), ln_w=(2 * d,), ln_b=(2 * d,), sc_w=(2, 2 * d), sc_b=(2,),
                state_S=(B, H, m, 2 * d), state_z=(B, H, m))
    for name, shape in want.items():
        if name in named and tuple(named[name].shape) != shape:
            raise ValueError(f"{what}: {name} has shape {tuple(named[name].shape)}, expected {shape}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, *named.values())):
        raise RuntimeError(f"{what} is forward-only: an input requires grad while grad is enabled (run under "
                           f"torch.no_grad() or use favor_attention + the torch encoder modules)")
    return B, H, T, d, m


_HEAD_DTYPES = (torch.bfloat16, torch.float16)


def _check_head(head, d: int, device, *, kernel: bool = True) -> int | None:
    """None, or the head's width w after checking head = (row_w [2w, 2d], row_b [2w], norm_w [w], norm_b [w]
    (fp32 on `device` for the kernel), norm_eps, dtype in bf16 / fp16)."""
    if head is None:
        return None
    what = "sea favor encoder head"
    if not isinstance(head, (tuple, list)) or len(head) != 6:
        raise ValueError(f"{what}: expected (row_w, row_b, norm_w, norm_b, norm_eps, dtype), got {type(head).__name__}")
    row_w, row_b, norm_w, norm_b, eps, dtype = head
    if kernel:
        check_fp32_tensors(what, dict(row_w=row_w, row_b=row_b, norm_w=norm_w, norm_b=norm_b), "row_w")
    if kernel and row_w.device != torch.device(device):
        raise ValueError(f"{what}: row_w is on {row_w.device}, v_id on {device}")
    if dtype not in _HEAD_DTYPES:
        raise ValueError(f"{what}: dtype {dtype} unsupported (bf16 or fp16: the decoder's autocast dtypes)")
    if row_w.dim() != 2 or row_w.shape[1] != 2 * d or row_w.shape[0] < 2 or row_w.shape[0] % 2:
        raise ValueError(f"{what}: row_w has shape {tuple(row_w.shape)}, expected [2w, {2 * d}]")
    w = row_w.shape[0] // 2
    for name, t, shape in (("row_b", row_b, (2 * w,)), ("norm_w", norm_w, (w,)), ("norm_b", norm_b, (w,))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{what}: {name} has shape {tuple(t.shape)}, expected {shape}")
    if not float(eps) > 0:
        raise ValueError(f"{what}: norm_eps must be > 0, got {eps}")
    return w


def head_ref(z: torch.Tensor, head) -> torch.Tensor:
    """The causal decoder's head as the fused kernel computes it, in plain PyTorch: z [B, H, T, 2d] -> x
    [B, 2H, T, w] in head's dtype dt. x[:, 2h + j] = LayerNorm_w(dt(dt(z) @ dt(W_j)^T + dt(b_j))) with fp32 (or
    z's float64) arithmetic and the LayerNorm's output rounded to dt: what `CausalDecoder.head` gives under
    autocast to dt (the row projection in dt with an fp32 accumulator, the LayerNorm in fp32, the first
    convolution's input cast to dt), up to summation order."""
    row_w, row_b, norm_w, norm_b, eps, dt = head
    work = torch.float64 if z.dtype == torch.float64 else torch.float32
    B, H, T, _ = z.shape
    w = row_w.shape[0] // 2
    h = z.to(dt).to(work) @ row_w.to(dt).to(work).T + row_b.to(dt).to(work)             # [B, H, T, 2w]
    h = h.to(dt).to(work).view(B, H, T, 2, w).permute(0, 1, 3, 2, 4).reshape(B, 2 * H, T, w)
    mean = h.mean(-1, keepdim=True)
    var = ((h - mean) ** 2).mean(-1, keepdim=True)
    return ((h - mean) / torch.sqrt(var + eps) * norm_w.to(work) + norm_b.to(work)).to(dt)


def favor_encoder_forward(q, k, v, v_id, proj, lin_w, lin_b, ln_w, ln_b, ln_eps, sc_w, sc_b, *, row0=0,
                          state=None, operands="fp32", return_state=False, precision=None, head=None):
    """q, k, v [B, H, T, d] (any float dtype; d a power of two <= 128), v_id [max_len, d], proj [m, d],
    lin_w [2d, 3d], lin_b [2d], ln_w, ln_b [2d], ln_eps, sc_w [2, 2d], sc_b [2] (all fp32); rows row0 ..
    row0 + T - 1 of v_id are V_I; state: None or (S [B, H, m, 2d], z [B, H, m]) fp32, the prefix state of the
    rows before. Returns (z [B, H, T, 2d], scales [B, H, T, 2]) fp32, plus (S, z) after the last row when
    return_state. precision: None (the module's PRECISION / FEAT_PRECISION), "tf32x3", "ieee" or "tf32" (every
    fp32 product one-pass TF32, and with operands="bf16" the feature projection on bf16-rounded q / k and
    d^-1/4 proj). head: None, or the causal decoder's head (row_w [2w, 2d], row_b [2w], norm_w, norm_b [w] fp32,
    norm_eps, dtype bf16 / fp16), which then replaces z in the output by x [B, 2H, T, w] in that dtype (see
    `head_ref`). See the module docstring. Forward only."""
    B, H, T, d, m = _check(q, k, v, v_id, proj, lin_w, lin_b, ln_w, ln_b, sc_w, sc_b, row0, state, operands,
                           kernel=True)
    head_w = _check_head(head, d, v_id.device)
    for name, p in (("PRECISION", PRECISION), ("FEAT_PRECISION", FEAT_PRECISION)):
        if p not in _PRECISIONS:
            raise ValueError(f"sea favor encoder: {name}={p!r}, expected one of {_PRECISIONS}")
    if precision not in (None, *_CALL_PRECISIONS):
        raise ValueError(f"sea favor encoder: precision={precision!r}, expected None or one of {_CALL_PRECISIONS}")
    prec = PRECISION if precision is None else precision
    fprec = FEAT_PRECISION if precision is None else precision
    feat_bf16 = precision == "tf32" and operands == "bf16"
    for name, val in (("SCAN_BLOCK_F", SCAN_BLOCK_F), ("SCAN_STEPS", SCAN_STEPS)):
        if val < 1 or val & (val - 1):
            raise ValueError(f"sea favor encoder: {name}={val} must be a power of two")
    chunk = CHUNK_TF32 if precision == "tf32" else CHUNK
    stages = dict(num_stages=STAGES_TF32) if precision == "tf32" and STAGES_TF32 is not None else {}
    if chunk < 16 or chunk & (chunk - 1):
        raise ValueError(f"sea favor encoder: CHUNK={CHUNK}, CHUNK_TF32={CHUNK_TF32} must be powers of two >= 16")
    if not favor_encoder_usable(q.device):
        raise RuntimeError(f"sea favor encoder kernel needs triton on CUDA (or TRITON_INTERPRET=1); "
                           f"got device {q.device}")
    dev = q.device
    if head is None:
        z = fresh((B, H, T, 2 * d), torch.float32, dev, poison=POISON_OUTPUTS)
    else:
        z = fresh((B, 2 * H, T, head_w), head[5], dev, poison=POISON_OUTPUTS)
    scales = fresh((B, H, T, 2), torch.float32, dev, poison=POISON_OUTPUTS)
    S_out = fresh((B, H, m, 2 * d), torch.float32, dev, poison=POISON_OUTPUTS) if return_state else None
    z_out = fresh((B, H, m), torch.float32, dev, poison=POISON_OUTPUTS) if return_state else None
    if B * H == 0 or T == 0:
        if return_state:
            if state is None:
                S_out.zero_()
                z_out.zero_()
            else:
                S_out.copy_(state[0])
                z_out.copy_(state[1])
            return z, scales, (S_out, z_out)
        return z, scales
    BD = pow2_block(d)
    BM = pow2_block(m)
    NC = -(-T // chunk)
    G = _auto_group(NC) if GROUP is None else int(GROUP)
    if G < 1:
        raise ValueError(f"sea favor encoder: GROUP={GROUP} must be >= 1")
    NG = -(-NC // G)
    if NG * BM * 2 * BD >= 2**31:
        raise ValueError(f"sea favor encoder: {NG} group states of {BM} x {2 * BD} overflow int32 offsets "
                         f"(raise GROUP or MAX_CHECKPOINTS' group size)")
    if operands == "bf16":
        dot = tl.bfloat16
        soft = _interpret() and not q.is_cuda         # the interpreter: exact rounding by hand, fp32 dots
        mma = tl.float32 if soft else tl.bfloat16
        oprec = "tf32"                      # half operands: Triton's own default tag (ignored for bf16)
    else:
        dot = mma = tl.float32
        soft = False
        oprec = prec
    states = torch.empty((B * H, NG, BM, 2 * BD), dtype=torch.float32, device=dev)    # phase 1 writes all
    zst = torch.empty((B * H, NG, BM), dtype=torch.float32, device=dev)
    scale = float(d) ** -0.25
    if feat_bf16:                            # d^-1/4 folded into proj, so bf16 q / k tiles are rounded exactly
        proj, scale = proj * scale, 1.0
    vid_st = v_id.stride()
    common = dict(D=d, BD=BD, BM=BM)
    _fe_states_kernel[(NG, B * H)](
        k, v, v_id, proj.contiguous(), states, zst, *k.stride(), *v.stride(), *vid_st,
        H, T, m, NC, NG, int(row0), scale,
        CHUNK=chunk, GROUP=G, DOT=dot, MMA=mma, SOFT=soft, OPREC=oprec, FPREC=fprec, FEAT_BF16=feat_bf16,
        num_warps=NUM_WARPS_STATES, **stages, **common)
    has_state = state is not None
    S0 = state[0].contiguous() if has_state else states
    Z0 = state[1].contiguous() if has_state else zst
    for x, x0, xo, f, is_z in ((states, S0, S_out, BM * 2 * BD, False), (zst, Z0, z_out, BM, True)):
        _fe_scan_kernel[(triton.cdiv(f, SCAN_BLOCK_F), B * H)](
            x, x0, x if xo is None else xo, m, NG, f, D=d, BD=BD, IS_Z=is_z, BLOCK_F=SCAN_BLOCK_F, STEPS=SCAN_STEPS,
            HAS_STATE=has_state, RET_STATE=return_state, num_warps=4)
    if head is None:                         # unused pointers (the HEAD branch is compiled out)
        hargs, heps, hconst = (z, z, z, z), 0.0, dict(HEAD=False, HDT=tl.bfloat16, HMMA=tl.float32, HSOFT=False,
                                                     HPREC="ieee", WH=16, BW=16)
    else:
        hdt = tl.bfloat16 if head[5] == torch.bfloat16 else tl.float16
        hsoft = _interpret() and not q.is_cuda and hdt == tl.bfloat16    # the interpreter's bf16 cast truncates
        hmma = tl.float32 if _interpret() and not q.is_cuda else hdt     # and its 16-bit dots are unreliable
        hargs, heps = tuple(t.contiguous() for t in head[:4]), float(head[4])
        hconst = dict(HEAD=True, HDT=hdt, HMMA=hmma, HSOFT=hsoft, HPREC="ieee" if hmma == tl.float32 else "tf32",
                      WH=head_w, BW=pow2_block(head_w))
    _fe_output_kernel[(NC, B * H)](
        q, k, v, v_id, proj.contiguous(), states, zst, lin_w.contiguous(), lin_b.contiguous(), ln_w.contiguous(),
        ln_b.contiguous(), sc_w.contiguous(), sc_b.contiguous(), z, scales, *hargs,
        *q.stride(), *k.stride(), *v.stride(), *vid_st,
        H, T, m, NG, int(row0), scale, float(ln_eps), heps,
        CHUNK=chunk, GROUP=G, DOT=dot, MMA=mma, SOFT=soft, OPREC=oprec, FPREC=fprec, PREC=prec,
        FEAT_BF16=feat_bf16, num_warps=NUM_WARPS_OUTPUT, **hconst, **stages, **common)
    if return_state:
        return z, scales, (S_out, z_out)
    return z, scales


def favor_encoder_ref(q, k, v, v_id, proj, lin_w, lin_b, ln_w, ln_b, ln_eps, sc_w, sc_b, *, row0=0,
                      state=None, operands="fp32", return_state=False, precision=None, head=None):
    """The same forward as plain PyTorch (tests; materialises the [B, H, T, T] causal score matrix).

    Computes in float64 when q or proj is float64, else float32. operands="bf16": the features are computed in
    fp32 (as the kernel and favor_attention do), then features and values [v_id ; v] are rounded to bf16 and
    every product and sum is exact in the working dtype (the kernel's further rounding of its intra-chunk
    scores to bf16 is not modelled). precision="tf32" with operands="bf16": the feature projection's operands
    (q, k and proj d^-1/4) rounded to bf16 first, as the kernel does; the TF32 rounding of the kernel's other
    products is not modelled (the interpreter multiplies exactly; the GPU test bounds it). head: as
    favor_encoder_forward (z replaced by head_ref(z, head)). Same signature and results as favor_encoder_forward."""
    B, H, T, d, m = _check(q, k, v, v_id, proj, lin_w, lin_b, ln_w, ln_b, sc_w, sc_b, row0, state, operands,
                           kernel=False)
    work = torch.float64 if torch.float64 in (q.dtype, proj.dtype) else torch.float32

    def feats(x, p):
        return torch.relu((x * d ** -0.25) @ p.T) + FEATURE_EPS                   # [B, H, T, m]

    vi = v_id[row0:row0 + T].to(work).expand(B, H, T, d)                          # [B, H, T, d]
    vw = v.to(work)                                                                # [B, H, T, d]
    vals = torch.cat([vi, vw], dim=-1)                                             # [B, H, T, 2d]
    if operands == "bf16" and precision == "tf32":
        pb = (proj.float() * d ** -0.25).to(torch.bfloat16).to(work)                  # [m, d]

        def bfeats(x):
            return (torch.relu(x.float().to(torch.bfloat16).to(work) @ pb.T) + FEATURE_EPS).to(torch.bfloat16)
        fq, fk = bfeats(q).to(work), bfeats(k).to(work)                               # [B, H, T, m]
        vals = torch.cat([vi.float(), v.float()], dim=-1).to(torch.bfloat16).to(work)
    elif operands == "bf16":
        fq = feats(q.float(), proj.float()).to(torch.bfloat16).to(work)
        fk = feats(k.float(), proj.float()).to(torch.bfloat16).to(work)
        vals = torch.cat([vi.float(), v.float()], dim=-1).to(torch.bfloat16).to(work)
    else:
        fq, fk = feats(q.to(work), proj.to(work)), feats(k.to(work), proj.to(work))
    if state is None:
        S0 = torch.zeros(B, H, m, 2 * d, dtype=work, device=q.device)
        z0 = torch.zeros(B, H, m, dtype=work, device=q.device)
    else:
        S0, z0 = state[0].to(work), state[1].to(work)
    tri = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    a = (fq @ fk.transpose(-1, -2)).masked_fill(~tri, 0.0)                        # [B, H, T, T]
    num = a @ vals + fq @ S0                                                       # [B, H, T, 2d]
    den = a.sum(-1) + (fq @ z0[..., None])[..., 0]                                 # [B, H, T]
    c = num / (den[..., None] + DEN_EPS)                                           # [B, H, T, 2d]
    lw = lin_w.to(work)
    x = c @ lw[:, :2 * d].T + vw @ lw[:, 2 * d:].T + lin_b.to(work)               # [B, H, T, 2d]
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + ln_eps) * ln_w.to(work) + ln_b.to(work)
    z = 0.5 * y * (1.0 + torch.erf(y / math.sqrt(2.0)))                           # [B, H, T, 2d]
    scales = torch.sigmoid(z @ sc_w.to(work).T + sc_b.to(work))                   # [B, H, T, 2]
    if head is not None:
        _check_head(head, d, q.device, kernel=False)
        z = head_ref(z, head)                                                      # [B, 2H, T, w]
    if not return_state:
        return z, scales
    S = S0 + fk.transpose(-1, -2) @ vals                                           # [B, H, m, 2d]
    zs = z0 + fk.sum(dim=-2)                                                       # [B, H, m]
    return z, scales, (S, zs)
