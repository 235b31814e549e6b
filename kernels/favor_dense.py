"""Fused bidirectional FAVOR+ attention with positive softmax features (SEA's Performer pass): Triton forward.

Computes, in float32, the same quantity as
``methods.sea.favor.favor_attention(q, k, v, proj, kernel="softmax", causal=False, valid=valid, operands=...)``:

    x' = x d^-1/4        dash = x' proj^T [T, m]        diag = |x'|^2 / 2
    phi_q = m^-1/2 (exp(dash_q - diag_q - rowmax_f dash_q) + feat_eps)
    phi_k = m^-1/2 (exp(dash_k - diag_k - S) + feat_eps) * valid,  S = max of dash_k over valid keys and features
    out   = phi_q (phi_k^T v) / (phi_q . sum_t phi_k + eps)                              -> [B, H, T, Dv]

without ever writing a [T, m] tensor (dash, exp, features) to memory. Three launches (four with KEY_DIAG="pre"):

  1. key pass, grid (feature block, T split, B*H). A program owns KEY_BLOCK_F features (the last block only the
     features left, in a narrower tile: KEY_TAIL) and a range of keys, which it walks in tiles of keys.
     KEY_FORM="per_feature" (the default since the seventeenth session): the tile is held [features, keys], as
     flash attention holds [queries, keys] (the proj block in the queries' place, loaded once; keys and values
     streamed); dash = proj_blk k'^T, and with a running maximum M_pf of dash per feature over the valid keys it
     has seen (a reduction along the key axis, inside a warp) it accumulates A_p = sum_t exp(dash - diag - M_pf) v_t
     [BLOCK_F, Dv] and z_p likewise, rescaling a feature's row when its maximum grows; it writes M_pf. M_pf <= S,
     so no value that matters underflows and none overflows. KEY_OFFSET="norm" (the default since the nineteenth
     session) subtracts c_f = |proj_f|^2 / 2 instead, a bound of dash - diag for every key, so nothing is rescaled
     in the loop; the running maximum of dash only feeds S, and c_f is written where M_pf was. With one-pass TF32
     asked for dash and bf16 keys, dash is two bf16 products of the raw keys with x_scale proj split in a high and
     a low bf16 part (KEY_PF_DASH: ~2^-16 relative, finer than TF32; the key tile reaches the products as loaded, no
     fp32 copy of the keys), and diag = |k'|^2 / 2 comes from a small pre-pass over the keys (KEY_DIAG). 128-key
     tiles on 2 stages with bf16 products, 64 with fp32 ones. KEY_FORM="per_program" (the form before): tiles
     [keys, features] of KEY_BLOCK_T keys and one online maximum M_p per program (a reduction across warps every
     tile). On an H200 (B=1, H=16, m=266, Dv=128, bf16 values) the whole call took 0.280 / 1.826 ms at 8k / 64k per
     feature against 0.392 / 2.454 per program (results/nvidia-h200/sea-key-pass/call3/); the fixed offsets took the
     query pass from 0.099 to 0.091 ms at 8k and left the key pass at 0.146 (results/nvidia-h200/sea-offsets/).
     Either form also writes (feature block 0 only) sum_t valid v_t. Every (key, feature) pair belongs to exactly one
     program, so the global key stabiliser is S = max of the programs' maxima: no separate stabiliser pass and dash_k
     is computed once. The feature block is the fastest grid axis, so the programs re-reading a key/value range run
     together and share it through L2.
  2. combine, grid (feature block of COMBINE_BLOCK_F, B*H): S = max M_p; KV = m^-1/2 (sum_p exp(M_p - S) A_p +
     feat_eps sum_t valid v_t)  [m, Dv], z = m^-1/2 (sum_p exp(M_p - S) z_p + feat_eps n_valid)  [m] (per feature:
     M_pf in place of M_p), and each block's sums of KV and z over its features (what the query pass needs summed
     over all features). Partials: B H n_split (m Dv + m + Dv) fp32; n_split is chosen for about KEY_PF_PROGRAMS
     (512; per program: KEY_PROGRAMS, 2048) key-pass programs: per program 43 splits of 1536 rows, 94 MB, at B=1
     H=16 T=65536 m=266 Dv=128 (3 feature blocks); per feature 11 splits, 24 MB. The
     A_p are stored [B H, m, n_split, Dv], so a program reads its features' splits in a row (COMBINE="torch":
     the same sums by ~15 torch operations and a batched gemv, the form before the sixteenth session).
  3. query pass, grid (T / QUERY_BLOCK_T, B*H). Per tile of query rows, one loop over the feature blocks with
     an online row maximum: acc = sum_f exp(dash_f - rowmax) KV_f, acc_z likewise with z (QUERY_OFFSET="norm":
     exp(dash_f - diag - C), C = max_f |proj_f|^2 / 2, without rescaling, and exp(C - rowmax) after the loop); then
     num = m^-1/2 (exp(-diag) acc + feat_eps sum_f KV_f), den likewise, out = num / (den + eps). dash_q is
     computed once (the row maximum is not needed before the features are used); sum_f KV_f and sum_f z_f are
     the combine's block sums added up (one reduction a program: summing each feature step's KV block inside the
     loop doubled the pass's time on an H200, results/nvidia-h200/sea-fewer-launches/call1/).

HBM traffic: q, k, v read once each (the key pass re-reads k, v once per feature block, mostly from L2), the
fp32 output written once, plus the partials above. The torch path instead materialises dash, exp and the
feature tensors ([B, H, T, m] fp32, several times) and runs two GEMMs over them.

operands="fp32": every tl.dot is fp32 with input_precision FP32_PRECISION: "tf32x3" by default (three TF32
tensor-core products; on an H200 at T=65536, H=16: 14.2 ms against 24.2 ms with "ieee" CUDA-core FMAs and 18.5 ms
for the torch path, relative L2 to the torch fp32 output 6.6e-7 for both settings,
results/nvidia-h200/sea-kernels/favor-dense.jsonl); "ieee" is the exact-fp32 setting. operands="bf16" (favor.py's
dense bf16 path): dash in fp32 (BF16_DASH_PRECISION, "tf32x3" by default), the products phi_k^T v and phi_q KV take
bf16-rounded features and values with fp32 accumulation, KV is rounded to bf16 before the second product and the
numerator to bf16 after it (as a bf16 GEMM's output), the normaliser stays fp32. The features rounded here are
stabilised by the running maxima (or the fixed offsets) above rather than the final ones (the factor exp(M_p - S)
is not a power of two), so the rounding is of the same size as the torch path's but not bit-identical. Under the
Triton interpreter (CPU tensors), whose bf16 tl.dot is broken, the bf16 products run as fp32 dots of bf16-rounded
values (round to nearest even, the same numbers a bf16 tensor-core dot with fp32 accumulation produces).

Work: 2 B H T m (2 d + 2 Dv) flops (214 GFLOP at T=65536 H=16 d=64 m=266 Dv=128; the key pass computes 272
feature columns with KEY_TAIL, 384 without, the query pass 288), so with "ieee" fp32 dots (CUDA-core FMAs) the
passes are compute-bound, not memory-bound; operands="bf16" or FP32_PRECISION="tf32x3" move the dots onto tensor cores.

Degenerate input: a batch element without any valid key gives 0 here (the torch path gives NaN there).
Forward only (no autograd). Inputs: q, k [B, H, T, d], v [B, H, T, Dv] of any float dtype (loaded and cast
to fp32 in the kernels; any strides with a unit last stride, others are made contiguous), d, Dv <= 128,
proj [m, d] fp32, valid bool [B, T] or None. Output: a fresh contiguous [B, H, T, Dv], float32 (or bfloat16, out_dtype).
identity_cols n (no padding mask): v holds the last Dv - n value columns; the first n, SEA's identity values, are made
in the key pass (favor_softmax_dense's docstring).
"""
from __future__ import annotations

import math
import os

import torch

from kernels._buffers import fresh, pow2_block

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: favor_dense_usable() is False
    triton = None
    tl = None

# Tests set this to True: fresh outputs are then filled with NaN so a skipped write fails.
POISON_OUTPUTS = False

# Tile sizes (tests under the interpreter shrink them; all must be powers of two >= 16 except KEY_SPLIT_ROWS,
# which must be a multiple of KEY_BLOCK_T).
KEY_BLOCK_T = 32          # key rows per tile in the key pass
KEY_BLOCK_F = 128         # features per key-pass program
KEY_SPLIT_ROWS = None     # key rows per key-pass program (T split); None: about KEY_PROGRAMS programs in all
KEY_PROGRAMS = 2048
QUERY_BLOCK_T = 64        # query rows per query-pass program
QUERY_BLOCK_F = 32        # features per step of the query-pass loop
KEY_NUM_WARPS = 4          # H200, B=1, H=16, T=65536, m=266, Dv=128, bf16 operands, tf32, the whole call: 64 features
                           # a program on 8 warps 4.74 ms, on 4 2.59, on 2 2.36; 128 features on 4 warps 2.26
                           # (results/nvidia-h200/sea-round19/call2/tune-favor.txt); again: 2.35 (64 on 2 warps)
                           # against 2.26 (128 on 4) (results/nvidia-h200/sea-bidir-mix/call2/tune-favor.txt)
QUERY_NUM_WARPS = 4
# The key pass reads an fp32 copy of 16-bit keys when True: on an H200 (B=1, H=16, T=65536, m=266, bf16 operands,
# tf32) it took 1.79 ms reading bf16 keys against 1.54 ms reading fp32 ones, and the copy costs ~0.1 ms (SEA's
# estimator passes q and k in the layer's dtype since the twelfth session; the query pass reads bf16 queries in
# +0.02 ms and keeps them: results/nvidia-h200/sea-graph-replay/call3/).
KEY_FP32 = True
# The last key-pass feature block computes only the features left (m - (nfb - 1) KEY_BLOCK_F, in a tile of the next
# power of two >= 16) when True: SEA's m = 266 runs 128 + 128 + 16 feature columns instead of 3 x 128 (a third of
# the key pass's products were padding); False: every block KEY_BLOCK_F wide (a same-run A/B switch).
KEY_TAIL = True
# The combine (partials -> KV, z) as one Triton kernel ("triton": each program sums the splits of COMBINE_BLOCK_F
# features) or as ~15 torch operations with a batched gemv ("torch"; the sixteenth session's A/B switch); "auto":
# the kernel on CUDA, the torch operations under the Triton interpreter (where the kernel's per-feature steps are
# slow to interpret; tests run the kernel there by name).
COMBINE = "auto"
COMBINE_BLOCK_F = 4               # features per combine program (their KV rows one after another); H200, 8k / 64k:
                                  # 2 -> 0.056 / 0.054 ms, 4 -> 0.052 / 0.050, 8 -> 0.065 / 0.067
                                  # (results/nvidia-h200/sea-fewer-launches/call3/)
COMBINE_SPLITS = 64               # key-pass splits per combine tile (more are walked in steps of this many)
# The key pass's form. "per_feature": tiles held features x keys (the flash-attention shape: the proj block in the
# place of the queries, keys streamed, the features of the first product feeding the second from registers), each
# feature f stabilised by its own running maximum of dash over the program's keys (a reduction along the key axis,
# inside a warp, as flash attention's row maximum; M_pf <= S, so no value that matters can underflow), and the combine
# scales each (split, feature) partial by exp(M_pf - S). "per_program": the form before the seventeenth session (keys
# x features tiles, one running maximum per program: a reduction across warps every tile); the same-run A/B switch.
KEY_FORM = "per_feature"
KEY_PF_BLOCK_T = 128              # key rows per tile in the per-feature form; H200, bf16 values, favor_dense's whole
KEY_PF_WARPS = 8                  # call at 8k / 64k: 64 keys on 3 stages 0.402 / 2.198 ms, 128 on 2 stages 0.280 /
KEY_PF_STAGES = 2                 # 1.832, per-program 0.392 / 2.460 (results/nvidia-h200/sea-key-pass/call2/)
# fp32 products (operands="fp32": TF32x3 or IEEE dots of fp32 features and values) need more registers and shared
# memory per key: 128-key tiles failed to compile or run there (call 3's GPU tests); they take these tiles
KEY_PF_FP32_BLOCK_T = 64
KEY_PF_FP32_STAGES = 2
KEY_PF_PROGRAMS = 384             # about this many key-pass programs in the per-feature form (fewer, longer splits);
                                  # H200, SEA's 8k forward with ex2_ftz and "last": 384 -> key pass 0.102 ms, 512 ->
                                  # 0.107, 1024 -> 0.124 (results/nvidia-h200/sea-key-pass-ncu/call2/)
# Per-feature form with one-pass TF32 asked for dash (precision "tf32") and bf16 keys: "bf16x2" computes dash as two
# bf16 products of the raw keys (w d^-1/4 split in a high and a low bf16 part; ~2^-16 relative, finer than TF32),
# so no fp32 copy of the keys is made and the key tile goes to the products as loaded; "tf32": the keys' fp32 copy
# (KEY_FP32) and one TF32 product, as the per-program form.
KEY_PF_DASH = "bf16x2"
# "fp16" (twentieth session): dash as one fp16 product of x_scale w and the keys, each rounded to nearest in fp16 (11
# significant bits: the unit roundoff of one-pass TF32, which also rounds both operands, at half TF32's operand bytes
# and twice its tensor-core rate; bf16 keys are exact in fp16 within its range), with values beyond +-65504 clamped;
# one product a tile for dash instead of bf16x2's two. Like bf16x2, taken only where one-pass TF32 was asked for
# (precision "tf32"); for any key dtype. H200, SEA's 8k profile: the key pass 0.146 -> 0.148 ms (it is not bound by
# its dash products; results/nvidia-h200/sea-bf16-encoder/call1/): kept off.
# The query pass's dash product: "prec" (the call's tl.dot precision on fp32 q' and proj, the measured form) or
# "fp16" (twentieth session): q' and proj rounded to fp16 (clamped to its range), one fp16 product, only where
# one-pass TF32 was asked for (with the key pass's fp16 dash: the query pass 0.092 -> 0.093 ms at 8k, call1/).
QUERY_DASH = "prec"
# identity_cols (SEA's identity values made in the key pass): True sums each program's products with them in a narrow
# accumulator over the few identity columns its rows reach (16 at SEA's widths: a program's rows span ~6 of them at
# 8k and 64k) and places them at the end, so the value product is d columns wide instead of 2d; False: a dense
# [keys, 2d] value tile (twentieth session). H200, SEA's 8k profile (results/nvidia-h200/sea-bf16-encoder/call1/):
# the narrow accumulator takes the key pass 0.146 -> 0.150 ms and removes the 0.014 ms concatenation; the dense tile
# 0.200 ms (as in the sixteenth session's per-program key pass, 0.186 -> 0.226).
KEY_ID_SPARSE = True
# The per-feature key pass's sums of the values over the keys (the feat_eps term's; one feature block's programs store
# them): "every" adds them up in every program, each key tile (a reduction across the tile's rows, through shared
# memory), though only one block's programs store them; "first" only in the programs that store them, the first
# feature block's (a third at SEA's 266 features); "last" in the last feature block's, which SEA's m = 266 makes the
# 16-feature tail (programs with a tenth of the others' products), so the 128-feature programs carry no reduction of
# the values at all. H200, SEA's 8k profile: "every" 0.150 ms, "first" 0.136 (the same output bit for bit;
# results/nvidia-h200/sea-key-pass-ncu/call1/), "last" 0.126; with FEATURE_EXP="ex2_ftz" "every" 0.132, "last" 0.107
# (call2/; its GPU test: none of KV's bf16 elements moved).
KEY_VSUM_BLOCK = "last"
# The per-feature key pass without masks where no key row can be invalid (no padding mask, T a multiple of the key
# tile, d and the value width powers of two >= 16): the key, |k'|^2 and value loads unmasked and dash not masked to
# -inf, the same function. H200, SEA's forward: the key pass 0.101 -> 0.093 ms at 8k, 0.690 -> 0.659 at 64k (the
# same output bit for bit; results/nvidia-h200/sea-key-pass-ncu/call7/).
KEY_EVEN_TILES = True
# Tried (twenty-third session): the query pass's full feature steps without masks, the last partial step masked
# (its loop 283 -> 205 SASS instructions a step, scripts/compile_sm90.py): on an H200 slower, the query pass 0.081 ->
# 0.083 ms at 8k, 0.600 -> 0.613 at 64k (results/nvidia-h200/sea-key-pass-ncu/call7/); removed.
# The per-feature key pass's register cap (Triton's maxnreg launch option; None: the compiler's choice, 255 at SEA's
# 8k tiles: one 8-warp program per SM, 12.5 % occupancy, the issue slots 27 % busy; call1/'s Nsight Compute). H200,
# SEA's 8k forward with "last" and ex2_ftz: 128 with 64-key tiles (two programs an SM) 0.107 ms, as uncapped; 128
# with 128-key tiles (spills) 0.139 (results/nvidia-h200/sea-key-pass-ncu/call2/): kept None.
KEY_PF_MAXNREG = None
# Per-feature form: |k'|^2 / 2 per key from a small kernel run first ("pre", one [B H, T] fp32 vector) or summed
# from each key tile inside the pass ("tile").
KEY_DIAG = "pre"
# The per-feature key pass's exponent offset: "norm" takes exp(dash - diag - c_f) with c_f = |proj_f|^2 / 2, a bound
# of dash - diag for every key (dash - diag = proj_f . k' - |k'|^2 / 2 = (|proj_f|^2 - |proj_f - k'|^2) / 2), so the
# features are <= 1 without a running maximum and the accumulators are never rescaled inside the loop (the combine
# applies exp(c_f - S) once, as it applied exp(M_pf - S)); "running": the running per-feature maximum of dash, the
# accumulators rescaled whenever it grows (flash attention's form; the A/B switch). Both are the same function; they
# differ where a feature's value falls below fp32's range: in "norm" a value exp(dash - diag - S) >= e^-20 (what
# can matter against feat_eps = 1e-4) is stored as itself times exp(S - c_f), which underflows only if c_f - S > ~67
# (c_f ~ d / 2 = 32 for SEA's orthogonal features, S >= 0 unless every key has a negative projection on every one).
KEY_OFFSET = "norm"
# The query pass's exponent offset: "norm" takes exp(dash - diag - C), C = max_f |proj_f|^2 / 2 (the maximum of the
# combine's per-block maxima), the row maximum of dash kept as a plain maximum and exp(C - rowmax) applied to
# the sums once, so the [rows, Dv] accumulator is not rescaled at every feature step; "running": the online row
# maximum (the A/B switch). Same function, same range argument as KEY_OFFSET, with C - rowmax in place of c_f - S
# (C ~ 45-50 for SEA's m = 266, d = 64; rowmax is the largest of 266 projections of the query, not below 0 unless the
# query lies in the negative orthant of every orthogonal block of features). Exponents of the correction are capped
# at 80 in the combine (only such a degenerate input reaches it), so an empty split never gives inf * 0.
QUERY_OFFSET = "norm"
FP32_PRECISION = "tf32x3"         # tl.dot input precision for operands="fp32" ("ieee": CUDA-core fp32)
BF16_DASH_PRECISION = "tf32x3"    # tl.dot input precision of x' proj^T for operands="bf16"


# The per-feature key pass's and the query pass's features exp(x) under the fixed offsets (KEY_OFFSET / QUERY_OFFSET
# "norm", where x <= 0): "ex2_ftz" takes 2^(x log2 e) by PTX's ex2.approx.ftz with log2 e folded into the
# subtraction (dash log2 e - (diag + c) log2 e: one FFMA), results below 2^-126 flushed to zero (the range argument of
# KEY_OFFSET already counts only normal floats); "exp": tl.exp, which Triton lowers to a multiply and ex2.approx.f32
# without .ftz, which ptxas expands to a compare and two multiplies around each MUFU.EX2 for subnormal results. The
# key pass's loop is ~1570 SASS instructions a 128-key tile, ~10 per feature element of which ~4 this (sm_90a,
# triton 3.6, scripts/compile_sm90.py): 1346 with "ex2_ftz", the query pass's 341 -> 283. H200, SEA's 8k profile
# (results/nvidia-h200/sea-key-pass-ncu/call2/): key pass 0.150 -> 0.132 ms, query pass 0.086 -> 0.083; the GPU
# tests' errors against the torch path unchanged to three digits.
FEATURE_EXP = "ex2_ftz"
_VSUM_MODES = {"every": 0, "first": 1, "last": 2}


def _fresh(shape, dtype, device):
    return fresh(shape, dtype, device, poison=POISON_OUTPUTS)


if triton is not None:
    from kernels._tl_math import LOG2E, ex2_ftz, round_bf16
    from kernels._tl_math import round_bf16_bits as _round_bf16

    @triton.jit
    def _clamp_fp16(x):
        # x (any float) -> fp16, rounded to nearest, clamped to fp16's finite range (a value beyond +-65504 would
        # become inf there; clamped, the product stays finite and such a key's or query's features ~0 as before)
        return tl.minimum(tl.maximum(x.to(tl.float32), -65504.0), 65504.0).to(tl.float16)

    @triton.jit
    def _identity_weights(offs_t, tmask, ecol, id_den, id_span, ID_COLS: tl.constexpr, ROUND: tl.constexpr,
                          EMU: tl.constexpr):
        # [BLOCK_T, len(ecol)]: the identity values relu(1 - |t / id_den * id_span - e|) of rows offs_t in columns
        # ecol (SEA's identity rows without a padding mask, id_den = max(T - 1, 1), id_span = ID_COLS - 1; IEEE
        # division, as torch's), zero on rows past the range and on columns >= ID_COLS; rounded to bf16 when ROUND
        y = tl.math.div_rn(offs_t.to(tl.float32), id_den) * id_span
        wid = tl.maximum(1.0 - tl.abs(y[:, None] - ecol[None, :].to(tl.float32)), 0.0)
        wid = tl.where(tmask[:, None] & (ecol < ID_COLS)[None, :], wid, 0.0)
        if ROUND:
            wid = round_bf16(wid, EMU)
        return wid

    @triton.jit
    def _value_tile_id(vbase, offs_t, svt, tmask, offs_e, DV, id_den, id_span, ID_COLS: tl.constexpr,
                       ROUND: tl.constexpr, EMU: tl.constexpr):
        # [BLOCK_T, BLOCK_DV] values in fp32 for identity_cols: columns e < ID_COLS the identity values
        # (_identity_weights; rounded to bf16 when ROUND: bf16 value operands, as the estimator's cast of the
        # concatenated values), columns e >= ID_COLS loaded from v's column e - ID_COLS; zero on rows past the range
        ident = _identity_weights(offs_t, tmask, offs_e, id_den, id_span, ID_COLS, ROUND, EMU)   # 0 off its cols
        vt = tl.load(vbase + offs_t[:, None] * svt + (offs_e - ID_COLS)[None, :],
                     mask=tmask[:, None] & ((offs_e >= ID_COLS) & (offs_e < DV))[None, :], other=0.0).to(tl.float32)
        return ident + vt                                                # each entry one of the two, the other 0

    @triton.jit
    def _key_rows(VALID, b, T, start, row_end, HAS_VALID: tl.constexpr, BLOCK_T: tl.constexpr):
        # a key tile's rows (int64), those inside the program's range, and those also valid
        offs_t = start + tl.arange(0, BLOCK_T)
        tmask = offs_t < row_end
        if HAS_VALID:
            rmask = tmask & (tl.load(VALID + b * T + offs_t, mask=tmask, other=0) != 0)
        else:
            rmask = tmask
        return offs_t, tmask, rmask

    @triton.jit
    def _value_tile(vbase, offs_t, svt, tmask, rmask, offs_e, emask):
        # [BLOCK_T, BLOCK_DV] values in fp32, zero on rows that are not valid keys (padded values may hold anything)
        vt = tl.load(vbase + offs_t[:, None] * svt + offs_e[None, :], mask=tmask[:, None] & emask[None, :],
                     other=0.0).to(tl.float32)
        return tl.where(rmask[:, None], vt, 0.0)

    @triton.jit
    def _key_block(K, V, VALID, PROJ, A, Z, MX, VS, f0, fb, sp, bh,
                   skb, skh, skt, svb, svh, svt,
                   H, T, D, DV, M, ROWS, NSPLIT, NFB, x_scale,
                   HAS_VALID: tl.constexpr, BF16: tl.constexpr, EMU: tl.constexpr,
                   DASH_PREC: tl.constexpr, PROD_PREC: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_DV: tl.constexpr):
        # features f0 .. f0 + BLOCK_F - 1 (feature block fb) over key rows sp * ROWS .. of head bh
        b = bh // H
        h = bh % H
        offs_f = f0 + tl.arange(0, BLOCK_F)
        fmask = offs_f < M
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        offs_e = tl.arange(0, BLOCK_DV)
        emask = offs_e < DV
        # proj block, transposed: [BLOCK_D, BLOCK_F]
        pt = tl.load(PROJ + offs_f[None, :] * D + offs_d[:, None], mask=fmask[None, :] & dmask[:, None],
                     other=0.0).to(tl.float32)
        acc = tl.zeros([BLOCK_F, BLOCK_DV], dtype=tl.float32)
        zacc = tl.zeros([BLOCK_F], dtype=tl.float32)
        vsum = tl.zeros([BLOCK_DV], dtype=tl.float32)
        m_run = tl.full([], float("-inf"), tl.float32)
        row0 = sp * ROWS
        row_end = tl.minimum(row0 + ROWS, T)
        kbase = K + b * skb + h * skh
        vbase = V + b * svb + h * svh
        for start in range(row0, row_end, BLOCK_T):
            offs_t, tmask, rmask = _key_rows(VALID, b, T, start, row_end, HAS_VALID, BLOCK_T)
            kt = tl.load(kbase + offs_t[:, None] * skt + offs_d[None, :], mask=tmask[:, None] & dmask[None, :],
                         other=0.0).to(tl.float32) * x_scale                       # [BT, BD]
            diag = tl.sum(kt * kt, axis=1) * 0.5                                    # [BT]
            dash = tl.dot(kt, pt, input_precision=DASH_PREC)                        # [BT, BF]
            pm = rmask[:, None] & fmask[None, :]
            dash = tl.where(pm, dash, float("-inf"))
            m_new = tl.maximum(m_run, tl.max(tl.max(dash, axis=1), axis=0))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_run - m_safe)
            p = tl.where(pm, tl.exp(dash - diag[:, None] - m_safe), 0.0)           # [BT, BF]
            vt = _value_tile(vbase, offs_t, svt, tmask, rmask, offs_e, emask)       # [BT, BDV]
            if BF16:
                if EMU:     # interpreter: its bf16 tl.dot is broken; fp32 dot of bf16-rounded values instead
                    kv = tl.dot(tl.trans(_round_bf16(p)), _round_bf16(vt), input_precision="ieee")
                else:
                    kv = tl.dot(tl.trans(p.to(tl.bfloat16)), vt.to(tl.bfloat16))
            else:
                kv = tl.dot(tl.trans(p), vt, input_precision=PROD_PREC)            # [BF, BDV]
            acc = acc * alpha + kv
            zacc = zacc * alpha + tl.sum(p, axis=0)
            vsum += tl.sum(vt, axis=0)
            m_run = m_new
        part = bh * NSPLIT + sp
        # A is [BH, M, NSPLIT, DV] (the split inside the feature) so the combine reads each feature's splits in a row
        tl.store(A + ((bh * M + offs_f[:, None]) * NSPLIT + sp) * DV + offs_e[None, :], acc,
                 mask=fmask[:, None] & emask[None, :])
        tl.store(Z + part * M + offs_f, zacc, mask=fmask)
        tl.store(MX + part * NFB + fb, m_run)
        if fb == 0:                                  # one feature block writes the value sums
            tl.store(VS + part * DV + offs_e, vsum, mask=emask)

    @triton.jit
    def _key_kernel(K, V, VALID, PROJ, A, Z, MX, VS,
                    skb, skh, skt, svb, svh, svt,
                    H, T, D, DV, M, ROWS, NSPLIT, NFB, x_scale,
                    HAS_VALID: tl.constexpr, BF16: tl.constexpr, EMU: tl.constexpr,
                    DASH_PREC: tl.constexpr, PROD_PREC: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr, TAIL_F: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_DV: tl.constexpr):
        # grid (NFB, NSPLIT, B H): feature blocks of BLOCK_F features; with TAIL_F > 0 the last block holds the
        # M - (NFB - 1) BLOCK_F remaining features in a narrower tile of TAIL_F (no padded features computed)
        fb = tl.program_id(0)
        sp = tl.program_id(1).to(tl.int64)
        bh = tl.program_id(2).to(tl.int64)            # int64 offsets throughout
        if TAIL_F == 0:
            _key_block(K, V, VALID, PROJ, A, Z, MX, VS, fb * BLOCK_F, fb, sp, bh, skb, skh, skt, svb, svh, svt,
                       H, T, D, DV, M, ROWS, NSPLIT, NFB, x_scale, HAS_VALID, BF16, EMU,
                       DASH_PREC, PROD_PREC, BLOCK_T, BLOCK_F, BLOCK_D, BLOCK_DV)
        else:
            if fb < NFB - 1:
                _key_block(K, V, VALID, PROJ, A, Z, MX, VS, fb * BLOCK_F, fb, sp, bh, skb, skh, skt, svb, svh, svt,
                           H, T, D, DV, M, ROWS, NSPLIT, NFB, x_scale, HAS_VALID, BF16, EMU,
                           DASH_PREC, PROD_PREC, BLOCK_T, BLOCK_F, BLOCK_D, BLOCK_DV)
            else:
                _key_block(K, V, VALID, PROJ, A, Z, MX, VS, fb * BLOCK_F, fb, sp, bh, skb, skh, skt, svb, svh, svt,
                           H, T, D, DV, M, ROWS, NSPLIT, NFB, x_scale, HAS_VALID, BF16, EMU,
                           DASH_PREC, PROD_PREC, BLOCK_T, TAIL_F, BLOCK_D, BLOCK_DV)

    @triton.jit
    def _key_pf_block(K, V, VALID, PROJ, A, Z, MX, VS, MXF, DG, f0, fb, sp, bh,
                      skb, skh, skt, svb, svh, svt,
                      H, T, D, DV, M, ROWS, NSPLIT, NFB, x_scale,
                      HAS_VALID: tl.constexpr, BF16: tl.constexpr, EMU: tl.constexpr,
                      DASH_PREC: tl.constexpr, PROD_PREC: tl.constexpr, DASH_X2: tl.constexpr,
                      DIAG_PRE: tl.constexpr, FIXED_OFF: tl.constexpr,
                      BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr,
                      BLOCK_DV: tl.constexpr, DASH_F16: tl.constexpr, ID_COLS: tl.constexpr, id_den, id_span,
                      ID_SPAN: tl.constexpr, BLOCK_ID: tl.constexpr, VSUM_MODE: tl.constexpr,
                      EX2: tl.constexpr, EVEN: tl.constexpr):
        # KEY_FORM="per_feature": features f0 .. f0 + BLOCK_F - 1 over key rows sp * ROWS .. of head bh, tiles held
        # [features, keys], a running maximum of dash per feature. DASH_X2 (bf16 keys): dash = w_hi k + w_lo k, two
        # bf16 products of the raw keys with x_scale w split in two bf16 parts (each product exact, fp32 sums:
        # ~2^-16 relative, finer than one-pass TF32's 2^-11), so the key tile feeds the products as loaded.
        # DIAG_PRE: |k'|^2 / 2 read from DG [BH, T] (_key_sqnorm_kernel) instead of summed from the tile.
        # FIXED_OFF (KEY_OFFSET="norm"): exp(dash - diag - c_f), c_f = |proj_f|^2 / 2 >= dash - diag for every key,
        # so nothing is rescaled in the loop; the running maximum of dash is kept only for S (MX), and c_f goes
        # where M_pf went (MXF), so the combine's exp(MXF - S) is the same correction.
        b = bh // H
        h = bh % H
        offs_f = f0 + tl.arange(0, BLOCK_F)
        fmask = offs_f < M
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        offs_e = tl.arange(0, BLOCK_DV)
        if ID_SPAN > 0:                     # sparse identity columns: acc holds v's columns only (KEY_ID_SPARSE)
            emask = offs_e < DV - ID_COLS
        else:
            emask = offs_e < DV
        w = tl.load(PROJ + offs_f[:, None] * D + offs_d[None, :], mask=fmask[:, None] & dmask[None, :],
                    other=0.0).to(tl.float32)                                       # [BF, BD]
        acc = tl.zeros([BLOCK_F, BLOCK_DV], dtype=tl.float32)
        zacc = tl.zeros([BLOCK_F], dtype=tl.float32)
        vsum = tl.zeros([BLOCK_DV], dtype=tl.float32)
        m_run = tl.full([BLOCK_F], float("-inf"), tl.float32)
        vs_fb = NFB - 1 if VSUM_MODE == 2 else 0        # the feature block whose programs store the value sums
        row0 = sp * ROWS
        if ID_SPAN > 0:
            # the program's rows reach identity columns e_lo .. e_lo + ID_SPAN - 1 only (the host sized ID_SPAN so):
            # their sums in a [BF, ID_SPAN] accumulator, one narrow product a tile, placed into columns at the end
            e_lo = tl.floor(tl.math.div_rn(row0.to(tl.float32), id_den) * id_span).to(tl.int32)
            ecol = e_lo + tl.arange(0, ID_SPAN)
            acc_id = tl.zeros([BLOCK_F, ID_SPAN], dtype=tl.float32)
            vs_id = tl.zeros([ID_SPAN], dtype=tl.float32)
        row_end = tl.minimum(row0 + ROWS, T)
        kbase = K + b * skb + h * skh
        vbase = V + b * svb + h * svh
        if FIXED_OFF:
            c_f = tl.sum(w * w, axis=1) * 0.5                                       # [BF]: max of dash - diag
            if EX2:
                c2 = c_f * LOG2E                                                    # (FEATURE_EXP="ex2_ftz")
        if DASH_X2:
            ws = w * x_scale
            w_hi = ws.to(tl.bfloat16)
            w_lo = (ws - w_hi.to(tl.float32)).to(tl.bfloat16)
        if DASH_F16:
            w16 = _clamp_fp16(w * x_scale)
        for start in range(row0, row_end, BLOCK_T):
            offs_t, tmask, rmask = _key_rows(VALID, b, T, start, row_end, HAS_VALID, BLOCK_T)
            if EVEN:        # (KEY_EVEN_TILES) every row of the tile a valid key, D == BLOCK_D: no masks
                kraw = tl.load(kbase + offs_t[None, :] * skt + offs_d[:, None])
            else:
                kraw = tl.load(kbase + offs_t[None, :] * skt + offs_d[:, None],
                               mask=dmask[:, None] & tmask[None, :], other=0.0)    # [BD, BT]: k^T
            if DASH_F16:    # one fp16 product: x_scale w and k rounded to 11 bits, as one-pass TF32 rounds them
                if EMU:
                    dash = tl.dot(w16.to(tl.float32), _clamp_fp16(kraw).to(tl.float32), input_precision="ieee")
                else:
                    dash = tl.dot(w16, _clamp_fp16(kraw))                           # [BF, BT]
            elif DASH_X2:
                if EMU:     # the interpreter's bf16 tl.dot is broken: fp32 dots of the bf16 values (exact products)
                    dash = tl.dot(w_hi.to(tl.float32), kraw.to(tl.float32), input_precision="ieee")
                    dash += tl.dot(w_lo.to(tl.float32), kraw.to(tl.float32), input_precision="ieee")
                else:
                    dash = tl.dot(w_lo, kraw)
                    dash = tl.dot(w_hi, kraw, dash)                                 # [BF, BT]
            else:
                kt = kraw.to(tl.float32) * x_scale                                  # k'^T
                dash = tl.dot(w, kt, input_precision=DASH_PREC)                     # [BF, BT]
            if DIAG_PRE:
                if EVEN:
                    diag = tl.load(DG + bh * T + offs_t)
                else:
                    diag = tl.load(DG + bh * T + offs_t, mask=rmask, other=0.0)     # [BT]
            else:
                kd = kraw.to(tl.float32) * x_scale
                diag = tl.where(rmask, tl.sum(kd * kd, axis=0) * 0.5, 0.0)          # [BT] (NaN keys off)
            if not EVEN:
                dash = tl.where(rmask[None, :], dash, float("-inf"))
            m_new = tl.maximum(m_run, tl.max(dash, axis=1))                         # [BF]
            if FIXED_OFF:
                if EX2:
                    p = ex2_ftz(dash * LOG2E - (diag * LOG2E)[None, :] - c2[:, None], EMU)
                else:
                    p = tl.exp(dash - diag[None, :] - c_f[:, None])                 # [BF, BT] <= 1, 0 off keys
            else:
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                alpha = tl.exp(m_run - m_safe)                                      # 0 while nothing was valid
                p = tl.exp(dash - diag[None, :] - m_safe[:, None])                  # [BF, BT], 0 off valid keys
                acc = acc * alpha[:, None]
                zacc = zacc * alpha
            if ID_SPAN > 0:
                wid = _identity_weights(offs_t, tmask, ecol, id_den, id_span, ID_COLS, BF16, EMU)   # [BT, ID_SPAN]
                if BF16:
                    if EMU:
                        acc_id += tl.dot(_round_bf16(p), wid, input_precision="ieee")
                    else:
                        acc_id = tl.dot(p.to(tl.bfloat16), wid.to(tl.bfloat16), acc_id)
                else:
                    acc_id = tl.dot(p, wid, acc_id, input_precision=PROD_PREC)
                if VSUM_MODE == 0:      # noqa: SIM114 - a compile-time branch beside a runtime one (KEY_VSUM_BLOCK)
                    vs_id += tl.sum(wid, axis=0)
                elif fb == vs_fb:
                    vs_id += tl.sum(wid, axis=0)
                if EVEN:
                    vt = tl.load(vbase + offs_t[:, None] * svt + offs_e[None, :]).to(tl.float32)
                else:
                    vt = _value_tile(vbase, offs_t, svt, tmask, rmask, offs_e, emask)   # v's columns
            elif ID_COLS > 0:                                                       # identity_cols (no mask)
                vt = _value_tile_id(vbase, offs_t, svt, tmask, offs_e, DV, id_den, id_span, ID_COLS, BF16, EMU)
            else:
                vt = _value_tile(vbase, offs_t, svt, tmask, rmask, offs_e, emask)   # [BT, BDV]
            if BF16:
                if EMU:
                    acc += tl.dot(_round_bf16(p), _round_bf16(vt), input_precision="ieee")
                else:
                    acc = tl.dot(p.to(tl.bfloat16), vt.to(tl.bfloat16), acc)
            else:
                acc = tl.dot(p, vt, acc, input_precision=PROD_PREC)                 # [BF, BDV]
            zacc += tl.sum(p, axis=1)
            if VSUM_MODE == 0:          # noqa: SIM114 - as above
                vsum += tl.sum(vt, axis=0)
            elif fb == vs_fb:
                vsum += tl.sum(vt, axis=0)
            m_run = m_new
        part = bh * NSPLIT + sp
        # A and MXF are [BH, M, NSPLIT(, DV)]: the combine reads each feature's splits in a row
        arow = A + ((bh * M + offs_f[:, None]) * NSPLIT + sp) * DV
        if ID_SPAN > 0:      # identity columns placed by a one-hot product (exact: one term per output), then v's
            offs_c = tl.arange(0, BLOCK_ID)
            place = (offs_c[None, :] == ecol[:, None]).to(tl.float32)             # [ID_SPAN, BLOCK_ID]
            tl.store(arow + offs_c[None, :], tl.dot(acc_id, place, input_precision="ieee"),
                     mask=fmask[:, None] & (offs_c < ID_COLS)[None, :])
            tl.store(arow + ID_COLS + offs_e[None, :], acc, mask=fmask[:, None] & emask[None, :])
            if fb == vs_fb:
                tl.store(VS + part * DV + offs_c, tl.sum(vs_id[:, None] * place, axis=0), mask=offs_c < ID_COLS)
                tl.store(VS + part * DV + ID_COLS + offs_e, vsum, mask=emask)
        else:
            tl.store(arow + offs_e[None, :], acc, mask=fmask[:, None] & emask[None, :])
        tl.store(Z + part * M + offs_f, zacc, mask=fmask)
        if FIXED_OFF:
            tl.store(MXF + (bh * M + offs_f) * NSPLIT + sp, c_f, mask=fmask)
        else:
            tl.store(MXF + (bh * M + offs_f) * NSPLIT + sp, m_run, mask=fmask)
        tl.store(MX + part * NFB + fb, tl.max(tl.where(fmask, m_run, float("-inf")), axis=0))
        if ID_SPAN == 0:                                                           # (else stored above)
            if fb == vs_fb:
                tl.store(VS + part * DV + offs_e, vsum, mask=emask)

    @triton.jit
    def _key_pf_kernel(K, V, VALID, PROJ, A, Z, MX, VS, MXF, DG,
                       skb, skh, skt, svb, svh, svt,
                       H, T, D, DV, M, ROWS, NSPLIT, NFB, x_scale,
                       HAS_VALID: tl.constexpr, BF16: tl.constexpr, EMU: tl.constexpr,
                       DASH_PREC: tl.constexpr, PROD_PREC: tl.constexpr, DASH_X2: tl.constexpr,
                       DIAG_PRE: tl.constexpr, FIXED_OFF: tl.constexpr,
                       BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr, TAIL_F: tl.constexpr,
                       BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, DASH_F16: tl.constexpr,
                       ID_COLS: tl.constexpr, id_den, id_span, ID_SPAN: tl.constexpr, BLOCK_ID: tl.constexpr,
                       VSUM_MODE: tl.constexpr, EX2: tl.constexpr, EVEN: tl.constexpr):
        # grid (NFB, NSPLIT, B H), as _key_kernel (TAIL_F: the last block's narrower tile)
        fb = tl.program_id(0)
        sp = tl.program_id(1).to(tl.int64)
        bh = tl.program_id(2).to(tl.int64)
        if TAIL_F == 0:
            _key_pf_block(K, V, VALID, PROJ, A, Z, MX, VS, MXF, DG, fb * BLOCK_F, fb, sp, bh,
                          skb, skh, skt, svb, svh, svt, H, T, D, DV, M, ROWS, NSPLIT, NFB, x_scale,
                          HAS_VALID, BF16, EMU, DASH_PREC, PROD_PREC, DASH_X2, DIAG_PRE, FIXED_OFF, BLOCK_T, BLOCK_F,
                          BLOCK_D, BLOCK_DV, DASH_F16, ID_COLS, id_den, id_span, ID_SPAN, BLOCK_ID,
                          VSUM_MODE, EX2, EVEN)
        else:
            if fb < NFB - 1:
                _key_pf_block(K, V, VALID, PROJ, A, Z, MX, VS, MXF, DG, fb * BLOCK_F, fb, sp, bh,
                              skb, skh, skt, svb, svh, svt, H, T, D, DV, M, ROWS, NSPLIT, NFB, x_scale,
                              HAS_VALID, BF16, EMU, DASH_PREC, PROD_PREC, DASH_X2, DIAG_PRE, FIXED_OFF, BLOCK_T,
                              BLOCK_F, BLOCK_D, BLOCK_DV, DASH_F16, ID_COLS, id_den, id_span, ID_SPAN, BLOCK_ID,
                              VSUM_MODE, EX2, EVEN)
            else:
                _key_pf_block(K, V, VALID, PROJ, A, Z, MX, VS, MXF, DG, fb * BLOCK_F, fb, sp, bh,
                              skb, skh, skt, svb, svh, svt, H, T, D, DV, M, ROWS, NSPLIT, NFB, x_scale,
                              HAS_VALID, BF16, EMU, DASH_PREC, PROD_PREC, DASH_X2, DIAG_PRE, FIXED_OFF, BLOCK_T,
                              TAIL_F, BLOCK_D, BLOCK_DV, DASH_F16, ID_COLS, id_den, id_span, ID_SPAN, BLOCK_ID,
                              VSUM_MODE, EX2, EVEN)

    @triton.jit
    def _key_sqnorm_kernel(K, DG, skb, skh, skt, H, T, D, x_scale,
                           BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        # grid (cdiv(T, BLOCK_T), B H): DG[bh, t] = |k_t d^-1/4|^2 / 2 in fp32 (KEY_DIAG="pre")
        tb = tl.program_id(0).to(tl.int64)
        bh = tl.program_id(1).to(tl.int64)
        offs_t = tb * BLOCK_T + tl.arange(0, BLOCK_T)
        offs_d = tl.arange(0, BLOCK_D)
        kt = tl.load(K + (bh // H) * skb + (bh % H) * skh + offs_t[:, None] * skt + offs_d[None, :],
                     mask=(offs_t < T)[:, None] & (offs_d < D)[None, :], other=0.0).to(tl.float32) * x_scale
        tl.store(DG + bh * T + offs_t, tl.sum(kt * kt, axis=1) * 0.5, mask=offs_t < T)

    @triton.jit
    def _combine_kernel(A, Z, MX, VS, NV, MXF, KV, ZO, KVSP, ZSP, PROJ, CSP,
                        M, D, DV, NSPLIT, NFB, n_all, phi_scale, feat_eps,
                        HAS_NV: tl.constexpr, KEY_F: tl.constexpr, BF16: tl.constexpr, PER_FEATURE: tl.constexpr,
                        BLOCK_F: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_D: tl.constexpr):
        # grid (cdiv(M, BLOCK_F), B H): for each of BLOCK_F features f, KV_f = phi_scale (sum_p exp(M_p - S) A_p,f +
        # feat_eps sum_p vsum_p) from one [splits, Dv] tile (A is [BH, M, NSPLIT, DV]), z_f likewise; S = max_p M_p
        # over the head's key-pass programs (each program recomputes it). Also the block's sums over its features of
        # KV (as stored: bf16-rounded with BF16) and of z, [BH, cdiv(M, BLOCK_F), DV] / [BH, cdiv(M, BLOCK_F)], which
        # the query pass adds up. PER_FEATURE (KEY_FORM="per_feature"): split p's partial of feature f is scaled by
        # exp(M_pf - S) (MXF [BH, M, NSPLIT]) instead of its program's exp(M_p - S). And CSP [BH, cdiv(M, BLOCK_F)]:
        # the block's max_f |proj_f|^2 / 2, from which the query pass takes its offset (QUERY_OFFSET="norm").
        fblk = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
        nblk = tl.num_programs(0)
        offs_cf = fblk * BLOCK_F + tl.arange(0, BLOCK_F)
        offs_cd = tl.arange(0, BLOCK_D)
        wblk = tl.load(PROJ + offs_cf[:, None] * D + offs_cd[None, :],
                       mask=(offs_cf < M)[:, None] & (offs_cd < D)[None, :], other=0.0)
        tl.store(CSP + bh * nblk + fblk, tl.max(tl.sum(wblk * wblk, axis=1), axis=0) * 0.5)
        offs_e = tl.arange(0, BLOCK_DV)
        emask = offs_e < DV
        offs_s = tl.arange(0, BLOCK_S)
        n_mx = NSPLIT * NFB
        stab = tl.full([], float("-inf"), tl.float32)
        for s0 in range(0, n_mx, BLOCK_S):
            mx = tl.load(MX + bh * n_mx + s0 + offs_s, mask=s0 + offs_s < n_mx, other=float("-inf"))
            stab = tl.maximum(stab, tl.max(mx, axis=0))
        stab = tl.where(stab == float("-inf"), 0.0, stab)                           # no valid key at all
        vsum = tl.zeros([BLOCK_DV], dtype=tl.float32)
        for s0 in range(0, NSPLIT, BLOCK_S):
            sm = s0 + offs_s < NSPLIT
            vs = tl.load(VS + (bh * NSPLIT + s0 + offs_s[:, None]) * DV + offs_e[None, :],
                         mask=sm[:, None] & emask[None, :], other=0.0)
            vsum += tl.sum(vs, axis=0)
        if HAS_NV:
            n_valid = tl.load(NV + bh)
        else:
            n_valid = n_all
        kvs = tl.zeros([BLOCK_DV], dtype=tl.float32)
        zs = 0.0
        for i in tl.static_range(BLOCK_F):
            f = fblk * BLOCK_F + i
            fs = (offs_s * 0 + f) < M                                               # [BS]: f is a feature
            fe = (offs_e * 0 + f) < M                                               # [BDV]
            acc = tl.zeros([BLOCK_DV], dtype=tl.float32)
            zacc = 0.0
            for s0 in range(0, NSPLIT, BLOCK_S):
                sm = (s0 + offs_s < NSPLIT) & fs
                part = bh * NSPLIT + s0 + offs_s                                    # [BS]
                a = tl.load(A + ((bh * M + f) * NSPLIT + s0 + offs_s[:, None]) * DV + offs_e[None, :],
                            mask=sm[:, None] & emask[None, :], other=0.0)           # [BS, BDV]
                zp = tl.load(Z + part * M + f, mask=sm, other=0.0)
                if PER_FEATURE:
                    mp = tl.load(MXF + (bh * M + f) * NSPLIT + s0 + offs_s, mask=sm, other=float("-inf"))
                else:
                    mp = tl.load(MX + part * NFB + f // KEY_F, mask=sm, other=float("-inf"))
                sc = tl.exp(tl.minimum(mp - stab, 80.0))                            # 0 off and where none valid
                acc += tl.sum(sc[:, None] * a, axis=0)
                zacc += tl.sum(sc * zp, axis=0)
            kv = phi_scale * (acc + feat_eps * vsum)
            z = phi_scale * (zacc + feat_eps * n_valid)
            if BF16:
                kv = kv.to(tl.bfloat16)                                             # favor.py's bf16 KV
            tl.store(KV + (bh * M + f) * DV + offs_e, kv, mask=emask & fe)
            tl.store(ZO + bh * M + f + offs_s * 0, z + offs_s * 0.0, mask=(offs_s == 0) & fs)
            kvs += tl.where(fe, kv.to(tl.float32), 0.0)
            zs += tl.where(f < M, z, 0.0)
        tl.store(KVSP + (bh * nblk + fblk) * DV + offs_e, kvs, mask=emask)
        tl.store(ZSP + bh * nblk + fblk, zs)

    @triton.jit
    def _query_tile(Q, PROJ, KV, Z, KVSP, ZSP, tb, bh, sqb, sqh, sqt,
                    H, T, D, DV, M, NCB, x_scale, phi_scale, eps, feat_eps,
                    CM, BF16: tl.constexpr, EMU: tl.constexpr, DASH_PREC: tl.constexpr, PROD_PREC: tl.constexpr,
                    FIXED_OFF: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_DV: tl.constexpr, BLOCK_CB: tl.constexpr, DASH_F16: tl.constexpr, EX2: tl.constexpr):
        # the query pass's output for query rows tb * BLOCK_T .. of head bh: fp32 [BLOCK_T, BLOCK_DV]. FIXED_OFF
        # (QUERY_OFFSET="norm"): features exp(dash - diag - C), C = max_f |proj_f|^2 / 2 >= dash - diag (the max of
        # the combine's per-block maxima CM [BH, NCB]), so nothing is rescaled in the loop; the row maximum of dash
        # is kept and its factor exp(C - rowmax) applied once
        b = bh // H
        h = bh % H
        offs_t = tb * BLOCK_T + tl.arange(0, BLOCK_T)
        tmask = offs_t < T
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        offs_e = tl.arange(0, BLOCK_DV)
        emask = offs_e < DV
        qt = tl.load(Q + b * sqb + h * sqh + offs_t[:, None] * sqt + offs_d[None, :],
                     mask=tmask[:, None] & dmask[None, :], other=0.0).to(tl.float32) * x_scale   # [BT, BD]
        diag = tl.sum(qt * qt, axis=1) * 0.5                                        # [BT]
        if DASH_F16:                                  # QUERY_DASH="fp16": q' and proj rounded to 11 bits, as TF32
            q16 = _clamp_fp16(qt)
        m_run = tl.full([BLOCK_T], float("-inf"), tl.float32)
        acc = tl.zeros([BLOCK_T, BLOCK_DV], dtype=tl.float32)
        accz = tl.zeros([BLOCK_T], dtype=tl.float32)
        # sum_f KV_f and sum_f z_f from the combine's per-block sums (one reduction, not one per feature step)
        offs_cb = tl.arange(0, BLOCK_CB)
        cbm = offs_cb < NCB
        kvs = tl.sum(tl.load(KVSP + (bh * NCB + offs_cb[:, None]) * DV + offs_e[None, :],
                             mask=cbm[:, None] & emask[None, :], other=0.0), axis=0)    # [BDV]
        zs = tl.sum(tl.load(ZSP + bh * NCB + offs_cb, mask=cbm, other=0.0), axis=0)
        if FIXED_OFF:                                                               # max of the blocks' maxima
            c_off = tl.max(tl.load(CM + bh * NCB + offs_cb, mask=cbm, other=0.0), axis=0)
            if EX2:
                dc2 = (diag + c_off) * LOG2E                                        # (FEATURE_EXP="ex2_ftz")
        kvbase = KV + bh * M * DV
        for f0 in range(0, M, BLOCK_F):
            offs_f = f0 + tl.arange(0, BLOCK_F)
            fmask = offs_f < M
            pt = tl.load(PROJ + offs_f[None, :] * D + offs_d[:, None], mask=fmask[None, :] & dmask[:, None],
                         other=0.0).to(tl.float32)                                  # [BD, BF]
            if DASH_F16:
                if EMU:
                    dash = tl.dot(q16.to(tl.float32), _clamp_fp16(pt).to(tl.float32), input_precision="ieee")
                else:
                    dash = tl.dot(q16, _clamp_fp16(pt))                             # [BT, BF]
            else:
                dash = tl.dot(qt, pt, input_precision=DASH_PREC)                    # [BT, BF]
            dash = tl.where(fmask[None, :], dash, float("-inf"))
            m_new = tl.maximum(m_run, tl.max(dash, axis=1))                         # finite: >= 1 feature
            if FIXED_OFF:
                if EX2:
                    p = ex2_ftz(dash * LOG2E - dc2[:, None], EMU)
                else:
                    p = tl.exp(dash - (diag + c_off)[:, None])                      # [BT, BF] <= 1
            else:
                alpha = tl.exp(m_run - m_new)
                p = tl.exp(dash - m_new[:, None])                                   # [BT, BF], 0 off features
            kvb = tl.load(kvbase + offs_f[:, None] * DV + offs_e[None, :], mask=fmask[:, None] & emask[None, :],
                          other=0.0)                                                # [BF, BDV]
            zb = tl.load(Z + bh * M + offs_f, mask=fmask, other=0.0)                # [BF]
            if BF16:
                if EMU:
                    prod = tl.dot(_round_bf16(p), kvb.to(tl.float32), input_precision="ieee")
                else:
                    prod = tl.dot(p.to(tl.bfloat16), kvb)
            else:
                prod = tl.dot(p, kvb, input_precision=PROD_PREC)                    # [BT, BDV]
            if FIXED_OFF:
                acc += prod
                accz += tl.sum(p * zb[None, :], axis=1)
            else:
                acc = acc * alpha[:, None] + prod
                accz = accz * alpha + tl.sum(p * zb[None, :], axis=1)
            m_run = m_new
        if FIXED_OFF:
            g = tl.exp(tl.minimum(c_off - m_run, 80.0))                             # the offset, back to rowmax
        else:
            g = tl.exp(-diag)                                                       # exp(-|q'|^2 / 2)
        num = phi_scale * (g[:, None] * acc + feat_eps * kvs[None, :])
        den = phi_scale * (g * accz + feat_eps * zs)
        if BF16:
            num = round_bf16(num, EMU)                                              # a bf16 GEMM's output
        return num / (den[:, None] + eps)

    @triton.jit
    def _query_kernel(Q, PROJ, KV, Z, KVSP, ZSP, O, CM,
                      sqb, sqh, sqt, sob, soh, sot,
                      H, T, D, DV, M, NCB, x_scale, phi_scale, eps, feat_eps,
                      BF16: tl.constexpr, EMU: tl.constexpr, DASH_PREC: tl.constexpr, PROD_PREC: tl.constexpr,
                      FIXED_OFF: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr,
                      BLOCK_DV: tl.constexpr, BLOCK_CB: tl.constexpr, OUT_BF16: tl.constexpr,
                      DASH_F16: tl.constexpr, EX2: tl.constexpr):
        tb = tl.program_id(0).to(tl.int64)
        bh = tl.program_id(1).to(tl.int64)
        out = _query_tile(Q, PROJ, KV, Z, KVSP, ZSP, tb, bh, sqb, sqh, sqt, H, T, D, DV, M, NCB, x_scale, phi_scale,
                          eps, feat_eps, CM, BF16, EMU, DASH_PREC, PROD_PREC, FIXED_OFF, BLOCK_T, BLOCK_F, BLOCK_D,
                          BLOCK_DV, BLOCK_CB, DASH_F16, EX2)
        offs_t = tb * BLOCK_T + tl.arange(0, BLOCK_T)
        offs_e = tl.arange(0, BLOCK_DV)
        if OUT_BF16 and EMU:                        # the interpreter's downcast truncates: round to nearest first
            out = _round_bf16(out)
        tl.store(O + (bh // H) * sob + (bh % H) * soh + offs_t[:, None] * sot + offs_e[None, :],
                 out.to(O.dtype.element_ty), mask=(offs_t < T)[:, None] & (offs_e < DV)[None, :])


def favor_dense_usable(device) -> bool:
    """True when the Triton kernels can run on `device` (CUDA, or any device under TRITON_INTERPRET=1)."""
    if triton is None:
        return False
    return torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _check(q, k, v, proj, valid, operands, identity_cols=0):
    if operands not in ("fp32", "bf16"):
        raise ValueError(f"operands {operands!r}: expected fp32 or bf16")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise ValueError(f"{name} must be [B, H, T, dim]; got shape {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise ValueError(f"{name} must be a float tensor; got {x.dtype}")
    B, H, T, d = q.shape
    if tuple(k.shape) != (B, H, T, d):
        raise ValueError(f"k shape {tuple(k.shape)} must equal q shape {tuple(q.shape)} (repeat kv heads first)")
    if tuple(v.shape[:3]) != (B, H, T):
        raise ValueError(f"v shape {tuple(v.shape)} must be [B={B}, H={H}, T={T}, Dv]")
    if d > 128 or d < 1:
        raise ValueError(f"head dim d={d}: the fused kernel supports 1..128")
    if v.shape[3] + identity_cols > 128 or v.shape[3] < 1:
        raise ValueError(f"value width Dv={v.shape[3]} (+ {identity_cols} identity columns): the fused kernel "
                         "supports 1..128")
    if identity_cols < 0 or (identity_cols and valid is not None):
        raise ValueError(f"identity_cols={identity_cols}: >= 0, and only without a padding mask")
    if proj.dim() != 2 or proj.shape[1] != d or proj.shape[0] < 1:
        raise ValueError(f"proj must be [m, d={d}]; got shape {tuple(proj.shape)}")
    if proj.dtype != torch.float32:
        raise ValueError(f"proj must be float32; got {proj.dtype}")
    if valid is not None:
        if valid.dtype != torch.bool or tuple(valid.shape) != (B, T):
            raise ValueError(f"valid must be bool [B={B}, T={T}]; got {valid.dtype} {tuple(valid.shape)}")
    devs = {x.device for x in (q, k, v, proj) + ((valid,) if valid is not None else ())}
    if len(devs) != 1:
        raise ValueError(f"all inputs must be on one device; got {sorted(str(x) for x in devs)}")


def _key_form() -> str:
    if KEY_FORM not in ("per_feature", "per_program"):
        raise ValueError(f"favor_dense.KEY_FORM={KEY_FORM!r}: expected per_feature or per_program")
    return KEY_FORM


def _key_offset() -> str:
    if KEY_OFFSET not in ("norm", "running"):
        raise ValueError(f"favor_dense.KEY_OFFSET={KEY_OFFSET!r}: expected norm or running")
    return KEY_OFFSET


def _query_offset() -> str:
    if QUERY_OFFSET not in ("norm", "running"):
        raise ValueError(f"favor_dense.QUERY_OFFSET={QUERY_OFFSET!r}: expected norm or running")
    return QUERY_OFFSET


def _query_dash(call: str | None = None) -> str:
    dash = QUERY_DASH if call is None else call
    if dash not in ("prec", "fp16"):
        raise ValueError(f"favor_dense: query dash {dash!r} (QUERY_DASH or query_dash=): expected prec or fp16")
    return dash


def _identity_span(identity_cols: int, T: int, rows: int) -> int:
    """KEY_ID_SPARSE: how many identity columns one key-pass program's rows reach (a power of two >= 16, with a
    margin for the float row positions), or 0 (the dense identity tile) when off, without identity columns, under the
    running offsets (whose rescaling the narrow accumulator would need too), or when the span is not narrower than
    the identity columns."""
    if not (KEY_ID_SPARSE and identity_cols and _key_offset() == "norm"):
        return 0
    step = (identity_cols - 1) / max(T - 1, 1)                                   # identity column per row
    span = max(16, pow2_block(math.ceil((rows - 1) * step) + 3))
    return span if span < pow2_block(identity_cols) else 0


def _pf_tiles(bf16: bool) -> tuple[int, int]:
    """(key rows per tile, pipeline stages) of the per-feature key pass for bf16 or fp32 products."""
    return (KEY_PF_BLOCK_T, KEY_PF_STAGES) if bf16 else (KEY_PF_FP32_BLOCK_T, KEY_PF_FP32_STAGES)


def _feature_ex2() -> bool:
    """FEATURE_EXP as the kernels' EX2 flag."""
    if FEATURE_EXP not in ("exp", "ex2_ftz"):
        raise ValueError(f"FEATURE_EXP={FEATURE_EXP!r}: 'exp' or 'ex2_ftz'")
    return FEATURE_EXP == "ex2_ftz"


def _even_tiles(masked: bool, T: int, block_t: int, d: int, dv: int) -> bool:
    """KEY_EVEN_TILES and every key tile free of invalid rows and padded columns: no padding mask, T a multiple of
    the key tile, d and the value tile's width dv powers of two >= 16 (their blocks exactly)."""
    return (KEY_EVEN_TILES and not masked and T % block_t == 0 and d == pow2_block(d)
            and dv == pow2_block(dv))


def _vsum_mode() -> int:
    """KEY_VSUM_BLOCK as the kernel's VSUM_MODE."""
    if KEY_VSUM_BLOCK not in _VSUM_MODES:
        raise ValueError(f"KEY_VSUM_BLOCK={KEY_VSUM_BLOCK!r}: one of {sorted(_VSUM_MODES)}")
    return _VSUM_MODES[KEY_VSUM_BLOCK]


def _split_rows(T: int, heads_x_blocks: int, bf16: bool = True) -> int:
    """Key rows per key-pass program: KEY_SPLIT_ROWS, or enough splits for about KEY_PROGRAMS programs
    (KEY_PF_PROGRAMS in the per-feature form); a multiple of the form's key tile (per-feature: for bf16 or fp32
    products)."""
    block_t = _pf_tiles(bf16)[0] if _key_form() == "per_feature" else KEY_BLOCK_T
    if KEY_SPLIT_ROWS is not None:
        if KEY_SPLIT_ROWS % block_t or KEY_SPLIT_ROWS <= 0:
            raise ValueError(f"KEY_SPLIT_ROWS={KEY_SPLIT_ROWS} must be a positive multiple of the key tile "
                             f"({block_t})")
        return KEY_SPLIT_ROWS
    programs = KEY_PF_PROGRAMS if _key_form() == "per_feature" else KEY_PROGRAMS
    tiles = -(-T // block_t)
    nsplit = max(1, min(tiles, -(-programs // heads_x_blocks)))
    return -(-tiles // nsplit) * block_t


def _unit_last(x):
    return x if x.stride(-1) == 1 else x.contiguous()


def favor_softmax_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, proj: torch.Tensor, *,
                        valid: torch.Tensor | None = None, operands: str = "fp32", eps: float = 1e-6,
                        feat_eps: float = 1e-4, precision: str | None = None,
                        out_dtype: torch.dtype = torch.float32, identity_cols: int = 0, key_dash: str | None = None,
                        query_dash: str | None = None) -> torch.Tensor:
    """Bidirectional FAVOR+ softmax-feature attention, fused (see the module docstring).
    q, k [B, H, T, d]; v [B, H, T, Dv]; proj [m, d] fp32; valid bool [B, T] or None -> [B, H, T, Dv] in out_dtype
    (float32, or bfloat16: the fp32 result rounded to nearest once as the query pass stores it, half the bytes).
    precision: None (FP32_PRECISION / BF16_DASH_PRECISION) or one of tf32x3, ieee, tf32 for every fp32 tl.dot
    (tf32: one-pass TF32, ~2^-11 relative per product; the exp of the features carries it as an absolute error).
    identity_cols n > 0 (no padding mask; the per-feature key pass): the values are [identity rows ; v], the first n
    columns SEA's identity values relu(1 - |t / max(T - 1, 1) * (n - 1) - e|) made inside the key pass (rounded to
    bf16 with bf16 operands, as a bf16 copy of the concatenation would hold them) instead of read from a
    concatenated tensor; the output has n + v's width columns. key_dash, query_dash: this call's KEY_PF_DASH and
    QUERY_DASH (None: the module's)."""
    if out_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"favor_softmax_dense: out_dtype {out_dtype} must be torch.float32 or torch.bfloat16")
    st = key_summary(q, k, v, proj, valid=valid, operands=operands, feat_eps=feat_eps, precision=precision,
                     identity_cols=identity_cols, key_dash=key_dash)
    return query_pass(st, st["q"], out_dtype=out_dtype, eps=eps, feat_eps=feat_eps, query_dash=query_dash)


def query_pass(st: dict, q: torch.Tensor, *, out_dtype: torch.dtype = torch.float32, eps: float = 1e-6,
               feat_eps: float = 1e-4, query_dash: str | None = None) -> torch.Tensor:
    """The query pass of favor_softmax_dense on the summary `st` of key_summary: q [B, H, Tq, d], any rows of the
    queries the summary was made with (a row's output depends on its query and the keys' summary only, so a slice
    of rows gives those rows of the whole call's output, bit for bit) -> [B, H, Tq, Dv] in out_dtype."""
    if out_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"favor_dense query pass: out_dtype {out_dtype} must be torch.float32 or torch.bfloat16")
    if q.dim() != 4 or q.shape[:2] != st["q"].shape[:2] or q.shape[3] != st["q"].shape[3] or q.dtype != st["q"].dtype:
        raise ValueError(f"favor_dense query pass: q {tuple(q.shape)} {q.dtype} is not rows of the summary's "
                         f"queries {tuple(st['q'].shape)} {st['q'].dtype}")
    q = _unit_last(q)
    B, H, T, _ = q.shape
    Dv = st["Dv"]
    out = _fresh((B, H, T, Dv), out_dtype, q.device)
    q_off = _query_offset() == "norm"
    _query_kernel[(triton.cdiv(T, QUERY_BLOCK_T), B * H)](
        q, st["proj"], st["kv"], st["z"], st["kvs_part"], st["zs_part"], out, st["cs_part"],
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        H, T, q.shape[3], Dv, st["m"], st["ncb"], st["x_scale"], st["phi_scale"], float(eps), float(feat_eps),
        BF16=st["bf16"], EMU=st["emu"], DASH_PREC=st["dash_prec"], PROD_PREC=st["prod_prec"], FIXED_OFF=q_off,
        BLOCK_T=QUERY_BLOCK_T, BLOCK_F=QUERY_BLOCK_F, BLOCK_D=pow2_block(q.shape[3]), BLOCK_DV=pow2_block(Dv),
        BLOCK_CB=pow2_block(st["ncb"]), OUT_BF16=out_dtype == torch.bfloat16,
        DASH_F16=_query_dash(query_dash) == "fp16" and st["dash_prec"] == "tf32", EX2=_feature_ex2(),
        num_warps=QUERY_NUM_WARPS)
    return out


def key_summary(q, k, v, proj, *, valid=None, operands="fp32", feat_eps=1e-4, precision=None,
                identity_cols: int = 0, key_dash: str | None = None) -> dict:
    """The key pass and the combine of favor_softmax_dense (same arguments): a dict with the [B H, m, Dv] summary
    'kv' (bf16 with bf16 operands), 'z' [B H, m], the per-block sums 'kvs_part' / 'zs_part' and maxima of
    |proj_f|^2 / 2 'cs_part' ('ncb' blocks) and what
    the query pass needs besides ('q' with a unit last stride, 'proj', 'm', 'Dv', 'x_scale', 'phi_scale', 'bf16',
    'emu', 'dash_prec', 'prod_prec')."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, proj)):
        raise RuntimeError("favor_softmax_dense is forward-only (no backward); call it under torch.no_grad() "
                           "or with inputs that do not require grad")
    _check(q, k, v, proj, valid, operands, identity_cols)
    B, H, T, d = q.shape
    Dv = v.shape[3] + identity_cols
    m = proj.shape[0]
    dev = q.device
    bf16 = operands == "bf16"
    emu = dev.type != "cuda"          # interpreter: bf16 products as fp32 dots of bf16-rounded values (same result)
    per_feature = _key_form() == "per_feature"
    if identity_cols and not per_feature:
        raise ValueError("favor_dense: identity_cols needs the per-feature key pass (KEY_FORM=per_feature)")
    key_dash = KEY_PF_DASH if key_dash is None else key_dash
    if key_dash not in ("bf16x2", "tf32", "fp16") or KEY_DIAG not in ("pre", "tile"):
        raise ValueError(f"favor_dense: key dash {key_dash!r} (KEY_PF_DASH or key_dash=: bf16x2, tf32 or fp16), "
                         f"KEY_DIAG={KEY_DIAG!r} (pre or tile)")
    if precision not in (None, "tf32x3", "ieee", "tf32"):
        raise ValueError(f"favor_dense: precision={precision!r}, expected None, tf32x3, ieee or tf32")
    dash_prec = precision or (BF16_DASH_PRECISION if bf16 else FP32_PRECISION)
    dash_x2 = per_feature and key_dash == "bf16x2" and dash_prec == "tf32" and k.dtype == torch.bfloat16
    dash_f16 = per_feature and key_dash == "fp16" and dash_prec == "tf32"
    if KEY_FP32 and k.dtype != torch.float32 and not (dash_x2 or dash_f16):
        k = k.float()
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    proj = proj.contiguous()
    BH = B * H
    x_scale = float(d) ** -0.25
    phi_scale = float(m) ** -0.5
    BD, BDV = pow2_block(d), pow2_block(Dv)
    prod_prec = precision or FP32_PRECISION
    nfb = triton.cdiv(m, KEY_BLOCK_F)
    tail = m - (nfb - 1) * KEY_BLOCK_F                                               # features in the last block
    tail_f = pow2_block(tail) if KEY_TAIL and pow2_block(tail) < KEY_BLOCK_F else 0
    rows = _split_rows(T, BH * nfb, bf16)
    nsplit = triton.cdiv(T, rows)

    # 1. key pass: per (feature block, key range, head) partial sums with their own stabiliser
    a_part = _fresh((BH, m, nsplit, Dv), torch.float32, dev)                        # split inside the feature
    z_part = _fresh((BH, nsplit, m), torch.float32, dev)
    mx_part = _fresh((BH, nsplit, nfb), torch.float32, dev)
    vs_part = _fresh((BH, nsplit, Dv), torch.float32, dev)
    valid_u8 = valid.to(torch.uint8).contiguous() if valid is not None else mx_part   # dummy when None
    strides = (k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2))
    id_span_cols = _identity_span(identity_cols, T, rows)
    if per_feature:
        pf_block_t, pf_stages = _pf_tiles(bf16)
        mxf_part = _fresh((BH, m, nsplit), torch.float32, dev)                      # M_pf, split inside the feature
        if KEY_DIAG == "pre":
            diag = _fresh((BH, T), torch.float32, dev)
            _key_sqnorm_kernel[(triton.cdiv(T, 64), BH)](k, diag, k.stride(0), k.stride(1), k.stride(2), H, T, d,
                                                        x_scale, BLOCK_T=64, BLOCK_D=BD, num_warps=4)
        else:
            diag = mx_part                                                           # unused
        _key_pf_kernel[(nfb, nsplit, BH)](
            k, v, valid_u8, proj, a_part, z_part, mx_part, vs_part, mxf_part, diag, *strides,
            H, T, d, Dv, m, rows, nsplit, nfb, x_scale,
            HAS_VALID=valid is not None, BF16=bf16, EMU=emu, DASH_PREC=dash_prec, PROD_PREC=prod_prec,
            DASH_X2=dash_x2, DIAG_PRE=KEY_DIAG == "pre", FIXED_OFF=_key_offset() == "norm",
            BLOCK_T=pf_block_t, BLOCK_F=KEY_BLOCK_F, TAIL_F=tail_f, BLOCK_D=BD,
            BLOCK_DV=pow2_block(Dv - identity_cols) if id_span_cols else BDV, DASH_F16=dash_f16,
            ID_COLS=identity_cols, id_den=float(max(T - 1, 1)), id_span=float(max(identity_cols - 1, 0)),
            ID_SPAN=id_span_cols, BLOCK_ID=pow2_block(identity_cols) if identity_cols else 16,
            VSUM_MODE=_vsum_mode(), EX2=_feature_ex2(),
            EVEN=_even_tiles(valid is not None, T, pf_block_t, d, Dv - identity_cols if id_span_cols else Dv),
            num_warps=KEY_PF_WARPS, num_stages=pf_stages,
            **({} if KEY_PF_MAXNREG is None else {"maxnreg": KEY_PF_MAXNREG}))
    else:
        mxf_part = mx_part                                                           # unused
        _key_kernel[(nfb, nsplit, BH)](
            k, v, valid_u8, proj, a_part, z_part, mx_part, vs_part, *strides,
            H, T, d, Dv, m, rows, nsplit, nfb, x_scale,
            HAS_VALID=valid is not None, BF16=bf16, EMU=emu, DASH_PREC=dash_prec, PROD_PREC=prod_prec,
            BLOCK_T=KEY_BLOCK_T, BLOCK_F=KEY_BLOCK_F, TAIL_F=tail_f, BLOCK_D=BD, BLOCK_DV=BDV,
            num_warps=KEY_NUM_WARPS)

    # 2. combine: one stabiliser per head, as favor.py's key features
    if valid is not None:
        n_valid = valid.sum(dim=1).float().repeat_interleave(H)                      # [BH]
    else:
        n_valid = None
    if COMBINE not in ("auto", "triton", "torch"):
        raise ValueError(f"favor_dense.COMBINE={COMBINE!r}: expected auto, triton or torch")
    if COMBINE == "triton" or (COMBINE == "auto" and dev.type == "cuda"):
        ncb = triton.cdiv(m, COMBINE_BLOCK_F)
        kv = _fresh((BH, m, Dv), torch.bfloat16 if bf16 else torch.float32, dev)
        z = _fresh((BH, m), torch.float32, dev)
        kvs_part = _fresh((BH, ncb, Dv), torch.float32, dev)
        zs_part = _fresh((BH, ncb), torch.float32, dev)
        cs_part = _fresh((BH, ncb), torch.float32, dev)
        _combine_kernel[(ncb, BH)](
            a_part, z_part, mx_part, vs_part, mx_part if n_valid is None else n_valid, mxf_part, kv, z, kvs_part,
            zs_part, proj, cs_part, m, d, Dv, nsplit, nfb, float(T), phi_scale, float(feat_eps),
            HAS_NV=n_valid is not None, KEY_F=KEY_BLOCK_F, BF16=bf16, PER_FEATURE=per_feature,
            BLOCK_F=COMBINE_BLOCK_F,
            BLOCK_S=pow2_block(min(nsplit, COMBINE_SPLITS)), BLOCK_DV=BDV, BLOCK_D=BD, num_warps=4)
    else:                                                                            # torch (A/B switch)
        stab = mx_part.amax(dim=(1, 2))                                              # [BH]
        stab = torch.where(torch.isinf(stab), torch.zeros_like(stab), stab)          # no valid key at all
        if per_feature:                                                              # [BH, S, m], 0 for -inf
            scale_f = torch.exp((mxf_part - stab[:, None, None]).clamp(max=80.0)).transpose(1, 2)
        else:
            scale = torch.exp(mx_part - stab[:, None, None])                         # [BH, S, nfb], 0 for -inf
            scale_f = scale.repeat_interleave(KEY_BLOCK_F, dim=2)[:, :, :m]          # [BH, S, m]
        if n_valid is None:
            n_valid = torch.full((BH,), float(T), device=dev)
        kv = torch.einsum("pfs,pfse->pfe", scale_f.transpose(1, 2), a_part)         # [BH, m, Dv]
        kv = phi_scale * (kv + feat_eps * vs_part.sum(1)[:, None, :])                # [BH, m, Dv]
        z = phi_scale * ((scale_f * z_part).sum(1) + feat_eps * n_valid[:, None])    # [BH, m]
        if bf16:
            kv = kv.to(torch.bfloat16)                                               # favor.py's bf16 KV
        kv, z = kv.contiguous(), z.contiguous()
        ncb = 1
        kvs_part = kv.float().sum(1, keepdim=True).contiguous()                      # [BH, 1, Dv]
        zs_part = z.sum(1, keepdim=True).contiguous()                                # [BH, 1]
        cs_part = (0.5 * proj.square().sum(1).amax()).expand(BH, 1).contiguous()     # [BH, 1]

    return dict(q=q, proj=proj, kv=kv, z=z, kvs_part=kvs_part, zs_part=zs_part, cs_part=cs_part, ncb=ncb, m=m, Dv=Dv,
                x_scale=x_scale, phi_scale=phi_scale, bf16=bf16, emu=emu, dash_prec=dash_prec, prod_prec=prod_prec)
