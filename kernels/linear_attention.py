"""Chunked causal linear attention: Triton kernels (forward and backward), a PyTorch chunked fallback and
a plain prefix-sum reference.

    out[t] = sum_{s <= t} (fq[t] . fk[s]) v[s]          fq, fk: [B, H, T, M]   v: [B, H, T, E]
    den[t] = sum_{s <= t}  fq[t] . fk[s]                 (the linear-attention normaliser, [B, H, T])

Chunked form: split T into chunks of C rows; with the state S = sum_s fk[s]^T v[s] ([M, E], fp32) and
z = sum_s fk[s] ([M]) of everything before chunk c, out_c = tril(fq_c fk_c^T) v_c + fq_c S and
den_c = rowsum(tril(fq_c fk_c^T)) + fq_c . z. No (T, M, E) prefix sum is ever built.

Triton, algo="parallel" (default): three launches, parallel over chunks.
  1. group states: chunks are taken `group` (G) at a time; one program per (group, M-block, E-block,
     batch x kv head) sums fk^T v (and fk) over its G chunks -> fp32 states [B, Hs, NG, M, E] (+ [.., M]),
     NG = cdiv(T / C, G).
  2. scan: one program per (256 state values, batch x head) walks the NG groups 8 at a time (a prefix sum
     over each [8, 256] tile plus the running total) and turns the states, in place, into exclusive prefix
     sums (it only reads and writes states); the key sums likewise, in a second launch.
  3. output: one program per (chunk, E-block, batch x head): out_c = fq_c . P_g (the scanned state of its
     group g, all M blocks looped inside the program, so no per-M-block partial outputs) + the chunks of
     g before c, attended quadratically, + c itself with the causal mask (den likewise, same program).
  Memory: the states, NG * M * E * 4 bytes per (batch, kv head). group=None picks the smallest power of
  two G with NG <= MAX_CHECKPOINTS (256; callers may pass their own `group`, see group_for: SEA allows 1024):
  G=1 up to T = 256 C (16384 at C=64), G=4 at T=65536, so the
  states stay <= 256 * M * E * 4 bytes per head (17 MiB for M=266, E=64; 279 MiB for 16 heads) and the
  scan <= 256 steps, at the price of attending up to G-1 earlier chunks of the group quadratically
  (~(G-1)/2 extra C x C x (M + E) products per chunk).
Triton, algo="sequential": the original kernel, one program per (batch x head, M-block, E-block) walking
all chunks with the state in registers and per-M-block partial outputs summed afterwards. Kept for
comparison (scripts/bench_linear_attention.py); it is latency-bound at long T.

Normaliser: computed *in the same pass* (fused), not via a ones column appended to v (which would waste a
whole power-of-two block for E = 64 or 128). Its gradient is two cumulative sums: on the Triton path three small
launches (kernels/linear_attention_den_grad.py, DEN_GRAD_KERNEL), otherwise in PyTorch (O(T M) memory; chunked,
kernels/scan.py: a plain cumsum along T took ~11 ms per call at T = 32k).

Backward is three more passes of the same kernels:
    dfq = causal(q=dout, k=v,    v=fk)      (+ dden * cumsum(fk))
    dfk = anti-causal(q=v, k=dout, v=fq)    (+ reverse-cumsum(dden * fq))
    dv  = anti-causal(q=fk, k=fq,  v=dout)
where "anti-causal" scans the groups from last to first (suffix sums) with an upper-triangular
intra-chunk mask (s >= t) and the later chunks of the group.

Dtypes: fq/fk/v may be fp32, fp16 or bf16; accumulation is fp32 and *outputs (out, den) are always fp32*.
Matmul operands, parallel form: when all three inputs of a pass are fp16 (or all bf16) the tl.dot
operands are that dtype (tensor cores; the fp32 states and intra-chunk scores are rounded to it before
their matmuls); otherwise fp32 operands, IEEE by default, TF32 with tf32=True. Sequential form: every tile
upcast to fp32 (IEEE / TF32 likewise). Backward (Triton): when the forward's three inputs share a half dtype,
the output gradient is rounded to it, so the three backward passes multiply half operands too (fp32
accumulation; with the fp32 gradient they ran fp32 IEEE dots: 22 ms of SEA's 32k forward+backward on an H200,
results/nvidia-h200/sea-train/); otherwise they run in fp32 (tf32 flag). The normaliser's gradient stays fp32.
Gradients come back in each input's dtype. fp64 runs on the PyTorch backend only (in fp64).

Grouped heads: fk and v may have fewer heads than fq (H % Hkv == 0); the kernels index the shared head
directly (no repeat), states are kept per kv head, and the key/value gradients are summed over each group.

Backends: "triton" (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1), "torch" (the same chunked
algorithm in PyTorch, used on CPU when TRITON_INTERPRET is not set), "auto" picks between them;
`pick_backend()` tells which would run, so callers can record it.

This module imports triton lazily (inside the kernel builders), so importing it is cheap.
"""
from __future__ import annotations

import functools
import os

import torch

from kernels.scan import chunked_cumsum, chunked_rev_cumsum

__all__ = ["causal_linear_attention", "causal_linear_attention_ref", "pick_backend"]


# --------------------------------------------------------------------------------------------------
# backend choice


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def pick_backend(x: torch.Tensor, backend: str = "auto") -> str:
    """Which backend `causal_linear_attention` runs for tensors like `x`: "triton" or "torch"."""
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend={backend!r}: expected auto, triton or torch")
    if backend != "auto":
        return backend
    if x.dtype == torch.float64:
        return "torch"
    if x.is_cuda or _interpret():
        try:
            import triton  # noqa: F401
        except ImportError:
            return "torch"
        return "triton"
    return "torch"


# --------------------------------------------------------------------------------------------------
# Triton kernel, sequential form (algo="sequential": the original kernel, kept for comparison)


@functools.lru_cache(maxsize=None)
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def _chunked_linear_attention_kernel(
        Q, K, V, O, DEN,
        sqb, sqh, sqt, sqm,
        skb, skh, skt, skm,
        svb, svh, svt, sve,
        sop, sob, soh, sot, soe,
        sdp, sdb, sdh, sdt,
        H, T, M, E, GQ, GK, GV,
        CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr,
        REVERSE: tl.constexpr, HAS_DEN: tl.constexpr, PRECISION: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)
        pid_e = tl.program_id(1)
        pid_m = tl.program_id(2)
        b = (pid_bh // H).to(tl.int64)          # 64-bit offsets: B*H*T*M can pass 2^31
        h = (pid_bh % H).to(tl.int64)
        q_base = Q + b * sqb + (h // GQ) * sqh
        k_base = K + b * skb + (h // GK) * skh
        v_base = V + b * svb + (h // GV) * svh
        o_base = O + pid_m.to(tl.int64) * sop + b * sob + h * soh
        d_base = DEN + pid_m.to(tl.int64) * sdp + b * sdb + h * sdh

        offs_c = tl.arange(0, CHUNK)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        m_ok = offs_m < M
        e_ok = offs_e < E
        if REVERSE:
            keep = offs_c[None, :] >= offs_c[:, None]       # [C, C]: key s at or after query t
        else:
            keep = offs_c[None, :] <= offs_c[:, None]       # [C, C]: key s at or before query t

        state = tl.zeros([BLOCK_M, BLOCK_E], dtype=tl.float32)   # sum fk^T v over finished chunks
        zsum = tl.zeros([BLOCK_M], dtype=tl.float32)            # sum fk over finished chunks
        n_chunks = tl.cdiv(T, CHUNK)
        for i in range(0, n_chunks):
            if REVERSE:
                c = n_chunks - 1 - i
            else:
                c = i
            t = c * CHUNK + offs_c
            t_ok = t < T
            q = tl.load(q_base + t[:, None] * sqt + offs_m[None, :] * sqm,
                        mask=t_ok[:, None] & m_ok[None, :], other=0.0).to(tl.float32)   # [C, BM]
            k = tl.load(k_base + t[:, None] * skt + offs_m[None, :] * skm,
                        mask=t_ok[:, None] & m_ok[None, :], other=0.0).to(tl.float32)   # [C, BM]
            v = tl.load(v_base + t[:, None] * svt + offs_e[None, :] * sve,
                        mask=t_ok[:, None] & e_ok[None, :], other=0.0).to(tl.float32)   # [C, BE]
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION)                         # [C, C]
            s = tl.where(keep, s, 0.0)
            o = tl.dot(s, v, input_precision=PRECISION)
            o += tl.dot(q, state, input_precision=PRECISION)                              # [C, BE]
            tl.store(o_base + t[:, None] * sot + offs_e[None, :] * soe, o,
                     mask=t_ok[:, None] & e_ok[None, :])
            if HAS_DEN:
                if pid_e == 0:
                    den = tl.sum(s, axis=1) + tl.sum(q * zsum[None, :], axis=1)             # [C]
                    tl.store(d_base + t * sdt, den, mask=t_ok)
                zsum += tl.sum(k, axis=0)
            state += tl.dot(tl.trans(k), v, input_precision=PRECISION)                    # [BM, BE]

    return _chunked_linear_attention_kernel


def _pow2_block(n: int, cap: int) -> int:
    b = 16
    while b < n and b < cap:
        b *= 2
    return b


def _check_triton_args(q, k, v, chunk):
    if chunk < 16 or chunk & (chunk - 1):
        raise ValueError(f"chunk={chunk}: the Triton kernel needs a power of two >= 16")
    for x in (q, k, v):
        if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"Triton linear attention takes fp32/fp16/bf16, got {x.dtype} (use backend='torch')")


def _triton_pass_sequential(q, k, v, *, reverse: bool, with_den: bool, chunk: int, tf32: bool,
                            block_m: int = 64, block_e: int = 64, num_warps: int = 4, group=None):
    """One sequential-kernel pass. q: [B, Hq, T, M], k: [B, Hk, T, M], v: [B, Hv, T, E] (heads divide the max).

    Returns out fp32 [B, H, T, E] and den fp32 [B, H, T] (or None), H = max(Hq, Hk, Hv)."""
    _check_triton_args(q, k, v, chunk)
    B, Hq, T, M = q.shape
    Hk, Hv, E = k.shape[1], v.shape[1], v.shape[3]
    H = max(Hq, Hk, Hv)
    BM = _pow2_block(M, block_m)
    BE = _pow2_block(E, block_e)
    n_mb = triton_cdiv(M, BM)
    n_eb = triton_cdiv(E, BE)
    # partial outputs per feature block; every (t < T, e < E) is written by each program -> empty is fine
    out = _new_buffer((n_mb, B, H, T, E), q.device)
    den = _new_buffer((n_mb, B, H, T), q.device) if with_den else out
    dstr = den.stride() if with_den else (0, 0, 0, 0)
    grid = (B * H, n_eb, n_mb)
    _kernel()[grid](
        q, k, v, out, den,
        *q.stride(), *k.stride(), *v.stride(),
        *out.stride(), *dstr,
        H, T, M, E, H // Hq, H // Hk, H // Hv,
        CHUNK=chunk, BLOCK_M=BM, BLOCK_E=BE, REVERSE=reverse, HAS_DEN=with_den,
        PRECISION="tf32" if tf32 else "ieee", num_warps=num_warps,
    )
    out = out[0] if n_mb == 1 else out.sum(0)
    if not with_den:
        return out, None
    return out, (den[0] if n_mb == 1 else den.sum(0))


# --------------------------------------------------------------------------------------------------
# Triton kernels, chunk-parallel form (the default)


@functools.lru_cache(maxsize=None)
def _parallel_kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def _group_states_kernel(
        K_, W, ST, Z,
        skb, skh, skt, skk,
        swb, swh, swt, swn,
        HS, T, KD, ND, NC, NG, GK, GW,
        CHUNK: tl.constexpr, GROUP: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
        HAS_Z: tl.constexpr, DOT: tl.constexpr, MMA: tl.constexpr, PRECISION: tl.constexpr,
    ):
        """Phase 1. One program per (group g, key block, value block, b * HS + hs):
        ST[b, hs, g, kblk, nblk] = sum_{rows r of the group's chunks} k[r, kblk]^T w[r, nblk]   (fp32)
        Z[b, hs, g, kblk]         = sum_r k[r, kblk]                    (when HAS_Z, by value block 0)"""
        g = tl.program_id(0)
        pid_kn = tl.program_id(1)
        pid_bh = tl.program_id(2)
        n_nb = tl.cdiv(ND, BLOCK_N)
        pid_k = pid_kn // n_nb
        pid_n = pid_kn % n_nb
        b = (pid_bh // HS).to(tl.int64)            # 64-bit offsets throughout
        hs = (pid_bh % HS).to(tl.int64)
        k_base = K_ + b * skb + (hs // GK) * skh
        w_base = W + b * swb + (hs // GW) * swh
        offs_c = tl.arange(0, CHUNK)
        offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        k_ok = offs_k < KD
        n_ok = offs_n < ND
        acc = tl.zeros([BLOCK_K, BLOCK_N], dtype=tl.float32)
        zacc = tl.zeros([BLOCK_K], dtype=tl.float32)
        c_lo = g * GROUP
        c_hi = tl.minimum(c_lo + GROUP, NC)
        for c in range(c_lo, c_hi):
            t = (c * CHUNK + offs_c).to(tl.int64)                                            # [C]
            t_ok = t < T
            # k loaded already transposed (no tl.trans: avoids transposed-operand paths for fp32/tf32 dots)
            kt = tl.load(k_base + t[None, :] * skt + offs_k[:, None] * skk,
                         mask=t_ok[None, :] & k_ok[:, None], other=0.0)                      # [BK, C]
            ww = tl.load(w_base + t[:, None] * swt + offs_n[None, :] * swn,
                         mask=t_ok[:, None] & n_ok[None, :], other=0.0)                      # [C, BN]
            acc = tl.dot(kt.to(DOT).to(MMA), ww.to(DOT).to(MMA), acc, input_precision=PRECISION)
            if HAS_Z:
                zacc += tl.sum(kt.to(tl.float32), axis=1)
        st = ST + (pid_bh.to(tl.int64) * NG + g) * KD * ND
        tl.store(st + offs_k[:, None] * ND + offs_n[None, :], acc, mask=k_ok[:, None] & n_ok[None, :])
        if HAS_Z:
            if pid_n == 0:
                tl.store(Z + (pid_bh.to(tl.int64) * NG + g) * KD + offs_k, zacc, mask=k_ok)

    @triton.jit
    def _scan_kernel(
        X, NG, F,
        BLOCK_F: tl.constexpr, STEPS: tl.constexpr, REVERSE: tl.constexpr,
    ):
        """Phase 2, in place, on NG consecutive blocks of F fp32 values per (b * HS + hs) (the states, viewed
        flat, or the key sums): X[.., g, :] <- sum of the blocks strictly before g (after g when REVERSE).
        One program per (BLOCK_F values, b * HS + hs). It walks the NG blocks STEPS at a time, so the dependent
        chain is NG / STEPS long, not NG (the one-block walk was 0.55 ms at T = 16k, latency-bound, with 32
        programs of 256 steps each): the tile of the STEPS blocks is loaded twice, once shifted back by one
        block (the first row zero), and the running total plus the prefix sum of the shifted tile is stored.
        A block's result is a sum of earlier blocks only (never a total minus a later block, which would let
        a huge later value disturb an earlier row)."""
        pid_f = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        offs_f = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
        f_ok = offs_f < F
        base = X + pid_bh * NG * F       # (NG * F < 2^31 per head: asserted on the host)
        run = tl.zeros([BLOCK_F], dtype=tl.float32)
        for i0 in range(0, NG, STEPS):
            i = i0 + tl.arange(0, STEPS)
            if REVERSE:
                g = NG - 1 - i
                g_prev = g + 1
            else:
                g = i
                g_prev = g - 1
            ok = (i < NG)[:, None] & f_ok[None, :]
            ptr = base + g[:, None] * F + offs_f[None, :]                                  # [STEPS, BF]
            x = tl.load(ptr, mask=ok, other=0.0)
            x_prev = tl.load(base + g_prev[:, None] * F + offs_f[None, :],
                             mask=ok & (i > i0)[:, None], other=0.0)                       # row j: block j - 1
            tl.store(ptr, run[None, :] + tl.cumsum(x_prev, axis=0), mask=ok)
            run += tl.sum(x, axis=0)

    @triton.jit
    def _chunk_output_kernel(
        Q, K_, W, ST, Z, O, DEN,
        sqb, sqh, sqt, sqk,
        skb, skh, skt, skk,
        swb, swh, swt, swn,
        H, T, KD, ND, NC, NG, GQ, GK, GW, GS,
        CHUNK: tl.constexpr, GROUP: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
        REVERSE: tl.constexpr, HAS_DEN: tl.constexpr, DOT: tl.constexpr, MMA: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """Phase 3. One program per (chunk c, value block, b * H + h), all in parallel:
        out_c = q_c . P_g  +  sum over the chunks c' of c's group up to c (from c on when REVERSE) of
                mask(q_c k_c'^T) w_c'          (mask = causal inside c itself, none for other chunks)
        where P_g is the scanned state of c's group g. den likewise with Z and row sums."""
        c = tl.program_id(0)
        pid_n = tl.program_id(1)
        pid_bh = tl.program_id(2)
        b = (pid_bh // H).to(tl.int64)
        h = (pid_bh % H).to(tl.int64)
        q_base = Q + b * sqb + (h // GQ) * sqh
        k_base = K_ + b * skb + (h // GK) * skh
        w_base = W + b * swb + (h // GW) * swh
        HS = H // GS
        bhs = b * HS + h // GS
        g = c // GROUP
        st = ST + (bhs * NG + g) * KD * ND
        zs = Z + (bhs * NG + g) * KD
        offs_c = tl.arange(0, CHUNK)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = offs_n < ND
        t = c.to(tl.int64) * CHUNK + offs_c                                                  # [C]
        t_ok = t < T
        n_kb = tl.cdiv(KD, BLOCK_K)

        # inter-group: the scanned state of this group
        acc = tl.zeros([CHUNK, BLOCK_N], dtype=tl.float32)
        den = tl.zeros([CHUNK], dtype=tl.float32)
        for kb in range(0, n_kb):
            offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
            k_ok = offs_k < KD
            qq = tl.load(q_base + t[:, None] * sqt + offs_k[None, :] * sqk,
                         mask=t_ok[:, None] & k_ok[None, :], other=0.0)                      # [C, BK]
            s_blk = tl.load(st + offs_k[:, None] * ND + offs_n[None, :],
                            mask=k_ok[:, None] & n_ok[None, :], other=0.0)                   # [BK, BN]
            acc = tl.dot(qq.to(DOT).to(MMA), s_blk.to(DOT).to(MMA), acc, input_precision=PRECISION)
            if HAS_DEN:
                z_blk = tl.load(zs + offs_k, mask=k_ok, other=0.0)                           # [BK]
                den += tl.sum(qq.to(tl.float32) * z_blk[None, :], axis=1)

        # intra-group: chunks of this group before c (after c when REVERSE), plus c itself, masked
        if REVERSE:
            keep = offs_c[None, :] >= offs_c[:, None]                                        # key s >= query t
            lo = c
            hi = tl.minimum(g * GROUP + GROUP, NC)
        else:
            keep = offs_c[None, :] <= offs_c[:, None]                                        # key s <= query t
            lo = g * GROUP
            hi = c + 1
        for cp in range(lo, hi):
            tk = (cp * CHUNK + offs_c).to(tl.int64)                                           # [C] key rows
            tk_ok = tk < T
            s = tl.zeros([CHUNK, CHUNK], dtype=tl.float32)
            for kb in range(0, n_kb):
                offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
                k_ok = offs_k < KD
                qq = tl.load(q_base + t[:, None] * sqt + offs_k[None, :] * sqk,
                             mask=t_ok[:, None] & k_ok[None, :], other=0.0)                  # [C, BK]
                kt = tl.load(k_base + tk[None, :] * skt + offs_k[:, None] * skk,
                             mask=tk_ok[None, :] & k_ok[:, None], other=0.0)                 # [BK, C]
                s = tl.dot(qq.to(DOT).to(MMA), kt.to(DOT).to(MMA), s, input_precision=PRECISION)
            s = tl.where(keep | (cp != c), s, 0.0)                                           # [C, C]
            ww = tl.load(w_base + tk[:, None] * swt + offs_n[None, :] * swn,
                         mask=tk_ok[:, None] & n_ok[None, :], other=0.0)                     # [C, BN]
            acc = tl.dot(s.to(DOT).to(MMA), ww.to(DOT).to(MMA), acc, input_precision=PRECISION)
            if HAS_DEN:
                den += tl.sum(s, axis=1)

        o_base = O + pid_bh.to(tl.int64) * T * ND
        tl.store(o_base + t[:, None] * ND + offs_n[None, :], acc, mask=t_ok[:, None] & n_ok[None, :])
        if HAS_DEN:
            if pid_n == 0:
                tl.store(DEN + pid_bh.to(tl.int64) * T + t, den, mask=t_ok)

    return _group_states_kernel, _scan_kernel, _chunk_output_kernel


def tl_float32():
    import triton.language as tl

    return tl.float32


def tl_bfloat16():
    import triton.language as tl

    return tl.bfloat16


def _dot_dtype(q, k, v):
    """Operand dtype of the kernels' tl.dot: fp16/bf16 when all three inputs have it, else fp32."""
    import triton.language as tl

    dts = {x.dtype for x in (q, k, v)}
    if dts == {torch.float16}:
        return tl.float16
    if dts == {torch.bfloat16}:
        return tl.bfloat16
    return tl.float32
MAX_CHECKPOINTS = 256     # auto `group`: at most this many stored states per (batch, state head)
SCAN_BLOCK_F = 256        # scan: state values per program
SCAN_STEPS = 8            # scan: groups per step of its dependent chain


def _auto_group(n_chunks: int, max_checkpoints: int | None = None) -> int:
    """Chunks per group: the smallest power of two keeping cdiv(n_chunks, group) <= max_checkpoints
    (MAX_CHECKPOINTS when None)."""
    cap = MAX_CHECKPOINTS if max_checkpoints is None else max_checkpoints
    g = 1
    while -(-n_chunks // g) > cap:
        g *= 2
    return g


def group_for(T: int, chunk: int, max_checkpoints: int) -> int:
    """The `group` of causal_linear_attention that keeps at most max_checkpoints stored states per head at length T:
    a caller trading state memory (max_checkpoints x M x E x 4 bytes per head) for less quadratic work inside each
    group (each chunk attends up to group - 1 earlier chunks directly)."""
    return _auto_group(triton_cdiv(T, chunk), max_checkpoints)


def _triton_pass_parallel(q, k, v, *, reverse: bool, with_den: bool, chunk: int, tf32: bool,
                          block_m: int = 64, block_e: int = 64, num_warps: int = 4, group: int | None = None):
    """One chunk-parallel pass (3 kernel launches). q: [B, Hq, T, K], k: [B, Hk, T, K], v: [B, Hv, T, N].

    Returns out fp32 [B, H, T, N] and den fp32 [B, H, T] (or None), H = max(Hq, Hk, Hv).
    Extra memory: the group states, fp32 [B, Hs, cdiv(T / chunk, group), K, N] (+ [.., K] sums), Hs = max(Hk, Hv)."""
    _check_triton_args(q, k, v, chunk)
    B, Hq, T, KD = q.shape
    Hk, Hv, ND = k.shape[1], v.shape[1], v.shape[3]
    H = max(Hq, Hk, Hv)
    Hs = max(Hk, Hv)
    NC = triton_cdiv(T, chunk)
    G = _auto_group(NC) if group is None else int(group)
    if G < 1:
        raise ValueError(f"group={group} must be >= 1")
    NG = triton_cdiv(NC, G)
    if NG * KD * ND >= 2**31:
        raise ValueError(f"{NG} stored states of {KD} x {ND} per head overflow int32 offsets: raise `group`")
    BK = _pow2_block(KD, block_m)
    BN = _pow2_block(ND, block_e)
    n_kb, n_nb = triton_cdiv(KD, BK), triton_cdiv(ND, BN)
    dot = _dot_dtype(q, k, v)                 # half tensor-core dots only when all three inputs agree
    # the dtype tl.dot runs in: `dot` on GPUs; Triton's interpreter gets bf16 dots wrong, so there the
    # bf16-rounded operands are multiplied in fp32 (same rounding, exact products)
    mma = tl_float32() if (_interpret() and not q.is_cuda and dot == tl_bfloat16()) else dot
    # input_precision only matters for fp32 operands (IEEE FMA dots unless tf32); half operands get the
    # default "tf32" tag that Triton itself gives them
    prec = "tf32" if (tf32 or dot != tl_float32()) else "ieee"
    dev = q.device
    states = _new_buffer((B, Hs, NG, KD, ND), dev)           # phase 1 writes every element
    zs = _new_buffer((B, Hs, NG, KD), dev) if with_den else states
    out = _new_buffer((B, H, T, ND), dev)
    den = _new_buffer((B, H, T), dev) if with_den else out
    k_states, k_scan, k_out = _parallel_kernels()
    k_states[(NG, n_kb * n_nb, B * Hs)](
        k, v, states, zs, *k.stride(), *v.stride(),
        Hs, T, KD, ND, NC, NG, Hs // Hk, Hs // Hv,
        CHUNK=chunk, GROUP=G, BLOCK_K=BK, BLOCK_N=BN, HAS_Z=with_den, DOT=dot, MMA=mma, PRECISION=prec,
        num_warps=num_warps,
    )
    for x, f in ((states, KD * ND), (zs, KD)) if with_den else ((states, KD * ND),):
        k_scan[(triton_cdiv(f, SCAN_BLOCK_F), B * Hs)](x, NG, f, BLOCK_F=SCAN_BLOCK_F, STEPS=SCAN_STEPS,
                                                      REVERSE=reverse, num_warps=4)
    k_out[(NC, n_nb, B * H)](
        q, k, v, states, zs, out, den, *q.stride(), *k.stride(), *v.stride(),
        H, T, KD, ND, NC, NG, H // Hq, H // Hk, H // Hv, H // Hs,
        CHUNK=chunk, GROUP=G, BLOCK_K=BK, BLOCK_N=BN, REVERSE=reverse, HAS_DEN=with_den, DOT=dot, MMA=mma,
        PRECISION=prec, num_warps=num_warps,
    )
    return out, (den if with_den else None)


def _triton_pass(*args, algo: str = "parallel", **kw):
    return (_triton_pass_parallel if algo == "parallel" else _triton_pass_sequential)(*args, **kw)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _new_buffer(shape, device) -> torch.Tensor:
    """Kernel output buffer (uninitialised; tests patch this to poison it with NaN)."""
    return torch.empty(shape, device=device, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------
# PyTorch chunked fallback (same algorithm, same signature as _triton_pass)


def _torch_pass(q, k, v, *, reverse: bool, with_den: bool, chunk: int, tf32: bool = False):
    H = max(q.shape[1], k.shape[1], v.shape[1])
    work = torch.float64 if torch.float64 in (q.dtype, k.dtype, v.dtype) else torch.float32
    q, k, v = (x.repeat_interleave(H // x.shape[1], dim=1).to(work) for x in (q, k, v))   # [B, H, T, *]
    B, _, T, M = q.shape
    E = v.shape[3]
    out = torch.empty((B, H, T, E), dtype=work, device=q.device)
    den = torch.empty((B, H, T), dtype=work, device=q.device) if with_den else None
    state = torch.zeros((B, H, M, E), dtype=work, device=q.device)
    zsum = torch.zeros((B, H, M), dtype=work, device=q.device)
    tri = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device)
    tri = tri.triu() if reverse else tri.tril()              # [C, C] visible (query row, key col)
    starts = list(range(0, T, chunk))
    for s0 in (reversed(starts) if reverse else starts):
        sl = slice(s0, min(s0 + chunk, T))
        L = sl.stop - sl.start
        qc, kc, vc = q[:, :, sl], k[:, :, sl], v[:, :, sl]  # [B, H, L, *]
        sc = torch.matmul(qc, kc.transpose(-1, -2)).masked_fill(~tri[:L, :L], 0.0)   # [B, H, L, L]
        out[:, :, sl] = torch.matmul(sc, vc) + torch.matmul(qc, state)
        if with_den:
            den[:, :, sl] = sc.sum(-1) + torch.matmul(qc, zsum[..., None])[..., 0]
            zsum = zsum + kc.sum(2)
        state = state + torch.matmul(kc.transpose(-1, -2), vc)
    return out, den


def _pass(backend, *args, **kw):
    return (_triton_pass if backend == "triton" else _torch_pass)(*args, **kw)


def _group_sum(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, H, T, *] -> [B, heads, T, *] summing each group of H // heads consecutive heads."""
    B, H = x.shape[:2]
    if H == heads:
        return x
    return x.view(B, heads, H // heads, *x.shape[2:]).sum(2)


# The normaliser's gradient on the Triton path (fp32 work) by kernels/linear_attention_den_grad.py when True; by
# chunked cumulative sums in PyTorch when False (a switch for same-run A/B measurements).
DEN_GRAD_KERNEL = True


class _CausalLinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fq, fk, v, backend, kw):
        out, den = _pass(backend, fq, fk, v, reverse=False, with_den=True, **kw)
        ctx.save_for_backward(fq, fk, v)
        ctx.cfg = (backend, kw)
        ctx.set_materialize_grads(False)
        return out, den

    @staticmethod
    def backward(ctx, dout, dden):
        fq, fk, v = ctx.saved_tensors
        backend, kw = ctx.cfg
        kw = dict(kw, with_den=False)
        H, Hkv = fq.shape[1], fk.shape[1]
        work = torch.float64 if fq.dtype == torch.float64 else torch.float32
        dfq = dfk = dv = None
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        if dout is not None:
            half = {fq.dtype, fk.dtype, v.dtype}
            if backend == "triton" and len(half) == 1 and half <= {torch.float16, torch.bfloat16}:
                dout = dout.to(fq.dtype)                 # half forward dots -> half backward dots (see the top)
            dout = dout.contiguous()
            if need_q:
                dfq = _pass(backend, dout, v, fk, reverse=False, **kw)[0]            # [B, H, T, M]
            if need_k:
                dfk = _pass(backend, v, dout, fq, reverse=True, **kw)[0]             # [B, H, T, M]
            if need_v:
                dv = _group_sum(_pass(backend, fk, fq, dout, reverse=True, **kw)[0], Hkv)   # [B, Hkv, T, E]
        if dden is not None and backend == "triton" and work == torch.float32 and DEN_GRAD_KERNEL:
            from kernels.linear_attention_den_grad import den_grad_add_

            B, _, T, M = fq.shape
            if need_q:
                dfq = fq.new_zeros(B, H, T, M, dtype=work) if dfq is None else dfq.contiguous()
            if need_k:
                dfk = fq.new_zeros(B, H, T, M, dtype=work) if dfk is None else dfk.contiguous()
            den_grad_add_(fq, fk, dden.to(work), dfq if need_q else None, dfk if need_k else None)
        elif dden is not None:
            dden = dden.to(work)[..., None]                                           # [B, H, T, 1]
            if need_q:
                ck = chunked_cumsum(fk.to(work)).repeat_interleave(H // Hkv, dim=1)   # [B, H, T, M]
                dfq = dden * ck if dfq is None else dfq + dden * ck
            if need_k:
                rq = chunked_rev_cumsum(dden * fq.to(work))                           # [B, H, T, M]
                dfk = rq if dfk is None else dfk + rq
        if dfk is not None:
            dfk = _group_sum(dfk, Hkv)                                                # [B, Hkv, T, M]
        cast = lambda g, like: None if g is None else g.to(like.dtype)               # noqa: E731
        return cast(dfq, fq), cast(dfk, fk), cast(dv, v), None, None


def causal_linear_attention(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, *, chunk: int = 64,
                            backend: str = "auto", tf32: bool = False, block_m: int = 64, block_e: int = 64,
                            num_warps: int = 4, algo: str = "parallel", group: int | None = None):
    """Causal linear attention with its normaliser, differentiable.

    fq: [B, H, T, M]; fk: [B, Hkv, T, M]; v: [B, Hkv, T, E] (H % Hkv == 0).
    Returns (num, den): num[t] = sum_{s<=t} (fq[t].fk[s]) v[s]  -> fp32 [B, H, T, E] (fp64 for fp64 inputs)
                        den[t] = sum_{s<=t}  fq[t].fk[s]        -> fp32 [B, H, T]
    The caller divides (and decides what to do with den == 0). `pick_backend(fq, backend)` names the path.
    chunk: rows per chunk (Triton: power of two >= 16). tf32: TF32 matmuls in the Triton kernel when an
    operand set is fp32 (fp32 IEEE otherwise); all-fp16 / all-bf16 operands always use half tensor-core
    dots with fp32 accumulation. block_m / block_e / num_warps: Triton tiling (caps on the blocks of the
    contracted / output feature axes). algo: "parallel" (chunk-parallel three-phase kernels, default) or
    "sequential" (the original one-program-walks-all-chunks kernel, for comparison). group: chunks per
    stored state in the parallel form (None = auto: at most MAX_CHECKPOINTS states per head).
    """
    if fq.dim() != 4 or fk.dim() != 4 or v.dim() != 4:
        raise ValueError(f"expected 4-d fq, fk, v; got {tuple(fq.shape)}, {tuple(fk.shape)}, {tuple(v.shape)}")
    B, H, T, M = fq.shape
    if fk.shape != (B, fk.shape[1], T, M) or v.shape[:3] != fk.shape[:3] or H % fk.shape[1]:
        raise ValueError(f"incompatible fq {tuple(fq.shape)}, fk {tuple(fk.shape)}, v {tuple(v.shape)}")
    if algo not in ("parallel", "sequential"):
        raise ValueError(f"algo={algo!r}: expected parallel or sequential")
    if group is not None and group < 1:
        raise ValueError(f"group={group} must be >= 1")
    which = pick_backend(fq, backend)
    if which == "torch" and chunk < 1:
        raise ValueError(f"chunk={chunk} must be positive")
    kw = dict(chunk=chunk, tf32=tf32)
    if which == "triton":
        kw.update(block_m=block_m, block_e=block_e, num_warps=num_warps, algo=algo, group=group)
    return _CausalLinearAttention.apply(fq, fk, v, which, kw)


def causal_linear_attention_ref(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor):
    """Plain prefix-sum formula (materialises the [B, H, T, M, E] cumsum: tests only, tiny sizes).

    Same signature/result as causal_linear_attention; computes in the inputs' dtype (use float64)."""
    H = fq.shape[1]
    fk = fk.repeat_interleave(H // fk.shape[1], dim=1)                  # [B, H, T, M]
    v = v.repeat_interleave(H // v.shape[1], dim=1)                     # [B, H, T, E]
    S = torch.cumsum(fk[..., :, None] * v[..., None, :], dim=2)         # [B, H, T, M, E]
    z = torch.cumsum(fk, dim=2)                                         # [B, H, T, M]
    num = torch.einsum("bhtm,bhtme->bhte", fq, S)                       # [B, H, T, E]
    den = (fq * z).sum(-1)                                              # [B, H, T]
    return num, den
