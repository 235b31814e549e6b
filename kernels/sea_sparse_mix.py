"""SEA's sparse attention and its mix with the average context in one Triton pass (forward only).

What: for every query row r = (b, h, t) of a block of rows q [B, H, Tq, D] against keys k, v [B, Hkv, Tk, D],
    c[r]   = sum_j softmax_j(q_r . k_j * scale) v_j   over the row's CSR keys j (the row kernel's c; empty row: 0)
    out[r] = ((1 - s_mix[r]) * c_avg[r] + s_mix[r] * s_prob[r] * c[r]).to(q.dtype)       (arithmetic in fp32)
with s_prob, s_mix fp32 [B, H, Tq, 1] and c_avg fp32 [B, H, Tq, D] (causal: cumulative mean of v) or
[B, H, 1, D] (bidirectional: one row broadcast over Tq; any strides, stride 0 on T included).

Why: the two-step path (kernels.sea_sparse_attention row kernel, then methods/sea/layer.py's
torch.addcmul((1 - s_mix) * c_avg, s_mix * s_prob, c.float()).to(q.dtype)) writes c [B, H, T, D] in q's dtype and
the row log-sum-exp, then reads c back through four elementwise kernels with three fp32 [B, H, T, D] temporaries
((1 - s_mix) c_avg, c.float(), the addcmul result) before the cast. Here the kernel is `_fwd_kernel` (same loop, same
BLOCK_N, one program per (row, b*h)) whose epilogue loads the row's c_avg and two scalars and stores the mixed row:
c stays in registers (fp32, never rounded to q's dtype: for bf16 / fp16 this is the one numerical difference from
the two-step path, which rounds c before mixing) and no LSE is written (forward only, nothing to save).

Traffic per row (D = 64, bf16): two-step = row kernel (read q 128 B, write c 128 B + lse 4 B) + mix (read c_avg 256
B, write/read (1-s_mix) c_avg 512 B, read c 128 B, write/read c.float() 512 B, write/read the fp32 sum 512 B, write
out 128 B, scalars) ~ 2.3 kB outside the gathers; fused = read q 128 B + c_avg 256 B + scalars 8 B, write out 128 B
~ 0.5 kB. At B=1, H=16, T=65536 (1 Mi rows) that is ~2.4 GB -> ~0.55 GB. The key/value gathers (64 keys x 2 x 128 B
= 16 kB per row; one head's k and v, 16 MB, stay in L2 while its rows run) are unchanged: the row kernel is bound by
them, not by its streaming traffic.

Prediction (written before any GPU run), H200, T = 65536 causal, B=1, H = 16, D = 64, bf16, 64 keys per row:
measured there, the row kernel 2.5 ms and the mix stage 1.6 ms, of which the cumulative mean (fp32 cast of v,
chunked scan, divide: ~1.0-1.1 ms by difference, not measured alone) stays outside this kernel. The part replaced
besides the row kernel is the (1 - s_mix) * c_avg multiply, c.float(), the addcmul and the bf16 cast: ~0.5-0.6 ms
(the profile in results/nvidia-h200/sea-compile/profile-causal-eager.txt shows the addcmul alone at 0.24 ms). The
fused kernel adds a 256 B coalesced c_avg read per row (268 MB, ~0.06-0.1 ms at streaming rate, largely hidden under
the gather latency since it is issued before the loop) and drops the c + lse writes (138 MB). Predicted: fused
kernel ~2.6-2.7 ms against 2.5 + ~0.55 = ~3.05 ms for the two steps it replaces, i.e. ~0.35-0.5 ms saved per layer
forward (~10-15 % of row kernel + mix, ~2 % of the 23.7 ms eager SEA forward), and ~0.9 GB less peak temporary
memory (c in bf16 and three fp32 [B, H, T, D] temporaries). If the kernel measures above ~2.8 ms the c_avg load is not
hidden (try loading it after the loop, or the causal mean computed in the kernel from a running sum).

Under TRITON_INTERPRET=1 (CPU tests) the fp32 -> bf16 cast of the store truncates toward zero (triton 3.6 and 3.9,
whatever fp_downcast_rounding says); on CUDA it rounds to nearest even like torch. The tests allow either.

Limits: forward only (refuses when grad is needed); q, k, v in one dtype among bf16 / fp16 / fp32; D stride of
c_avg and of `out` may be anything, q / k / v are made contiguous (as sparse_attention_block does); no padding
mask zeroing (the layer's bidirectional padded rows are multiplied by `valid` after the mix: do it on `out`).
"""
from __future__ import annotations


import torch

import kernels.sea_sparse_attention as _ssa
from kernels._buffers import fresh, pow2_block, triton_runs_on

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: nothing here can run
    triton = None
    tl = None

# Tests set this to True: the fresh output is then filled with NaN so a skipped write fails.
POISON_OUTPUTS = False



if triton is not None:
    from kernels.sea_sparse_attention import _row_attend, _row_program

    @triton.jit
    def _fwd_mix_kernel(Q, K, V, ROWPTR, COL, SPROB, SMIX, CAVG, O, scale,
                        sqb, sqh, sqt, skb, skh, skt,
                        sob, soh, sot, sod,
                        spb, sph, spt, smb, smh, smt,
                        scb, sch, sct, scd,
                        H, T, D, GROUP,
                        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        t, bh, b, h, hk, offs_d, dmask = _row_program(H, GROUP, D, BLOCK_D)
        q = tl.load(Q + b * sqb + h * sqh + t * sqt + offs_d, mask=dmask, other=0.0).to(tl.float32)
        # the mix operands, issued before the gather loop so their latency hides under it
        cavg = tl.load(CAVG + b * scb + h * sch + t * sct + offs_d * scd, mask=dmask, other=0.0)
        sp = tl.load(SPROB + b * spb + h * sph + t * spt)
        sm = tl.load(SMIX + b * smb + h * smh + t * smt)
        row = bh * T + t
        beg = tl.load(ROWPTR + row)
        end = tl.load(ROWPTR + row + 1)
        _, l_i, acc = _row_attend(q, K + b * skb + hk * skh, V + b * skb + hk * skh, COL, beg, end, skt, scale,
                                  offs_d, dmask, BLOCK_N, BLOCK_D)   # the row kernel's loop (sea_sparse_attention)
        safe_l = tl.where(l_i > 0, l_i, 1.0)
        c = acc / safe_l                                                 # the row kernel's c, fp32; empty row: 0
        out = (1.0 - sm) * cavg + (sm * sp) * c
        tl.store(O + b * sob + h * soh + t * sot + offs_d * sod, out.to(O.dtype.element_ty), mask=dmask)


def mix_usable(device: torch.device) -> bool:
    """Whether the fused kernel can run on `device` (CUDA, or CPU tensors under TRITON_INTERPRET=1)."""
    return triton_runs_on(device, triton is not None)


def check_mix_inputs(q, k, v, row_ptr, col, s_prob, s_mix, c_avg, out):
    _ssa.check_csr_block_inputs(q, k, v, row_ptr, col)                  # q, k, v, the lists (shared with the row kernels)
    check_mix_operands(q, s_prob, s_mix, c_avg, out)


def check_mix_operands(q, s_prob, s_mix, c_avg, out=None):
    """The mix operands' dtypes, shapes and devices against q [B, H, Tq, D] (every kernel with SEA's mix epilogue:
    this module's, kernels/sea_sparse_rows.py's, kernels/sea_shared_attention.py's)."""
    B, H, Tq, D = q.shape
    for name, x in (("s_prob", s_prob), ("s_mix", s_mix)):
        if x.dtype != torch.float32 or tuple(x.shape) != (B, H, Tq, 1):
            raise ValueError(f"{name} must be float32 [B, H, Tq, 1] = {(B, H, Tq, 1)}; got {x.dtype} {tuple(x.shape)}")
    if c_avg.dtype != torch.float32 or tuple(c_avg.shape) not in ((B, H, Tq, D), (B, H, 1, D)):
        raise ValueError(f"c_avg must be float32 [B, H, Tq, D] = {(B, H, Tq, D)} or [B, H, 1, D]; "
                         f"got {c_avg.dtype} {tuple(c_avg.shape)}")
    if out is not None and (tuple(out.shape) != (B, H, Tq, D) or out.dtype != q.dtype):
        raise ValueError(f"out must be {q.dtype} {(B, H, Tq, D)}; got {out.dtype} {tuple(out.shape)}")
    tensors = (s_prob, s_mix, c_avg) + (() if out is None else (out,))
    if any(x.device != q.device for x in tensors):
        raise ValueError("q, k, v, row_ptr, col, s_prob, s_mix, c_avg (and out) must be on one device")


def check_mix(q, mix, who: str) -> None:
    """A kernel's `mix` argument, (s_prob, s_mix, c_avg), checked against q (ValueError / RuntimeError naming `who`):
    a triple of operands check_mix_operands accepts, none requiring grad (the epilogues are forward-only)."""
    if not isinstance(mix, (tuple, list)) or len(mix) != 3:
        raise ValueError(f"{who}: mix must be (s_prob, s_mix, c_avg)")
    if torch.is_grad_enabled() and any(x.requires_grad for x in mix):
        raise RuntimeError(f"{who} is forward-only (no autograd): the mix operands require grad")
    check_mix_operands(q, *mix)


def mix_launch_args(mix, o) -> tuple:
    """The mix epilogue's launch arguments: (S_PROB, S_MIX, C_AVG pointers, then their [B, H, T] strides and c_avg's
    four, its row stride 0 for a single c_avg row); without a mix (None) o's pointer three times and zero strides."""
    if mix is None:
        return (o, o, o) + (0,) * 10                                     # unused pointers and strides
    s_prob, s_mix, c_avg = mix
    cst = c_avg.stride()
    return (s_prob, s_mix, c_avg, *s_prob.stride()[:3], *s_mix.stride()[:3],
            cst[0], cst[1], 0 if c_avg.shape[2] == 1 else cst[2], cst[3])


def sparse_attention_mix(q, k, v, row_ptr, col, scale: float, s_prob, s_mix, c_avg, *, out=None):
    """out [B, H, Tq, D] in q's dtype = ((1 - s_mix) c_avg + s_mix s_prob c).to(q.dtype), c = the row kernel's
    sparse attention of the block's rows q [B, H, Tq, D] over their CSR keys in k, v [B, Hkv, Tk, D] (Tk >= Tq;
    row_ptr int64 [B*H*Tq + 1], col int32 key positions 0 .. Tk - 1, may be longer than row_ptr[-1]).
    s_prob, s_mix fp32 [B, H, Tq, 1]; c_avg fp32 [B, H, Tq, D] or [B, H, 1, D] (any strides). Forward only.
    out: optionally a preallocated [B, H, Tq, D] tensor of q's dtype, any strides (e.g. a query-block slice
    out_full[:, :, s:e] of the layer's output), written in place and returned."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, s_prob, s_mix, c_avg)):
        raise RuntimeError("sparse_attention_mix is forward-only; use sea_sparse_attention and the torch mix "
                           "for gradients")
    check_mix_inputs(q, k, v, row_ptr, col, s_prob, s_mix, c_avg, out)
    B, H, Tq, D = q.shape
    Hkv = k.shape[1]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    row_ptr = row_ptr.to(torch.int64).contiguous()
    col = col.to(torch.int32).contiguous()
    o = fresh((B, H, Tq, D), q.dtype, q.device, poison=POISON_OUTPUTS) if out is None else out
    if Tq == 0 or B * H == 0:
        return o
    cst = c_avg.stride()
    sct = 0 if c_avg.shape[2] == 1 else cst[2]                           # broadcast row: stride 0 over Tq
    _fwd_mix_kernel[(Tq, B * H)](
        q, k, v, row_ptr, col, s_prob, s_mix, c_avg, o, float(scale),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        o.stride(0), o.stride(1), o.stride(2), o.stride(3),
        s_prob.stride(0), s_prob.stride(1), s_prob.stride(2),
        s_mix.stride(0), s_mix.stride(1), s_mix.stride(2),
        cst[0], cst[1], sct, cst[3],
        H, Tq, D, H // Hkv,
        BLOCK_N=_ssa.BLOCK_N, BLOCK_D=pow2_block(D))
    return o
