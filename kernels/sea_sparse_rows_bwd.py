"""SEA's sparse attention over CSR key lists with a backward: the rows kernel's forward (kernels/sea_sparse_rows.py,
with its log-sum-exp) and a backward kernel of the same layout, one Triton program per block of query rows.

What: `sparse_rows_attention(q, k, v, row_ptr, col, scale)` is differentiable in q, k, v (backward: see BACKWARD)
and computes what kernels/sea_sparse_attention.py's row kernel computes (same mask format, semantics and checks):
per query row r the softmax over its listed keys, out in q's dtype. Gradients, for p = exp(q k^T scale - lse) on the
listed entries:
    delta_r = sum_d out_r,d dout_r,d;  ds = p (dout v^T - delta);  dq = scale ds k;  dk = scale ds^T q;  dv = p^T dout
dq in q's dtype, dk / dv in k's / v's dtype (summed over the query heads of a kv head, GQA), through fp32 buffers
(atomic adds; the key-major backward stores them directly).

Why: SEA's forward+backward at 32k causal spent 5.5 ms of ~24 in the row kernel's backward (`_bwd_kernel`: one
program per query row, fp32 FMA loops over its keys, dk / dv by atomic adds), 1.8 ms in its forward, on an H200
(results/nvidia-h200/sea-train/); the rows kernel's forward runs the same lists about 2x faster than the row kernel
(one program per 16 rows walking their entries 64 at a time: per-row latency chains shared, tensor-core tiles).

Layout of the backward (mirrors `_rows_fwd_kernel`): one program per ROWS_PER_PROGRAM = 16 consecutive t of one
(b, h), the same program order (head groups kept in L2, time-block major inside), walking the block's CSR entries
ENTRIES_PER_STEP = 64 at a time. Per step: gather the 64 key and value rows once, S = q k^T scale [16, 64] (tensor
cores; 16-bit products are exact in fp32), P = exp(S - lse) on member entries (0 elsewhere: each entry belongs to
one row of the block), dP = dout v^T [16, 64] (exact likewise), dS = P (dP - delta); dq += dS k [16, D] (fp32 P,
dS times 16-bit operands by `_split_dot`: three 16-bit pieces, fp32 accuracy on tensor cores). Per entry e of row
r(e): dk[e] = scale dS[r(e), e] q[r(e)] and dv[e] = P[r(e), e] dout[r(e)], from the column sums of dS and P and the
q / dout rows gathered again per entry (fp32 products), added to the key rows by fp32 atomic adds: one per (entry,
d) for dk and for dv, as in the row kernel (nnz x D each). Gradients are fp32 arithmetic up to summation order,
like the row kernel's; fp32 inputs use IEEE dots; under Triton's interpreter (EMU) the 16-bit pieces run as fp32
dots.

Prediction (H200, 32k causal, bf16, SEA's causal_per_batch lists): backward 5.5 -> 2.5-3.5 ms, forward (the rows
kernel with lse) 1.8 -> ~1.0 ms. Measured (results/nvidia-h200/sea-train/): forward 1.77 -> 1.11 ms as predicted, but
this backward took 10.2 ms (dk / dv first as [64, D] tensor-core products) and 9.9 ms (as now), twice the row
kernel's 5.5 ms; also 10.2 against 5.2 ms at 8k on synthetic lists, and 10.9 ms with all 16 heads interleaved. Not
traced (the row kernel with its heads interleaved was slower too, 6.1 ms, so same-address atomics of neighbouring
rows do not explain it alone). Hence BACKWARD below: the row kernel's backward on this forward's lse, or the
key-major one (the default since the ninth session).

Key-major backward (BACKWARD = "keys"): dq by the row kernel's backward without its atomic adds (WANT_KV=False), and
dk / dv by `_keys_bwd_kernel` over the lists transposed to key order (`key_lists`: each entry's query row and key by
`_entry_keys_kernel`, a sort of the entries by (b, kv head, key) on 32-bit keys, key_ptr by searchsorted; no host
sync): one program per 16 consecutive keys of one (b, kv head) walks their entries 64 at a time, gathers the q /
dout rows of the entries' query rows with their lse and delta, and accumulates dk = scale dS^T q, dv = P^T dout [16,
D] in registers (`_split_dot`, fp32 accuracy), stored once: no atomics. Prediction (H200, SEA's 32k causal lists,
against the row kernel's 5.5 ms): dq pass ~1.8 ms (the row kernel's forward cost), transposition ~1.5 ms (a sort of
~13M int64 keys and the gathers), key kernel ~1.2 ms (the rows forward's gathers, on q / dout instead of k / v):
~4.5 ms, uncertain by ~1.5 ms. Measured (H200, SEA fast at 32k causal, results/nvidia-h200/sea-train/call8, call9,
call11): dq pass 1.60 ms, key kernel 1.47 ms, the sort 1.06 ms on 64-bit keys and 0.47 ms on 32-bit ones; the whole
step 16.77 -> 15.42 ms of kernels, 16.97 -> 15.65 ms wall (same run, A/B/A), +213 MiB peak memory at 32k (the sorted
lists). dq, dk, dv are stored once each, so they are written in the inputs' dtypes (grad_buffers(stored=True): no
zero fill, no casts); every dq pass computes delta = rowsum(o dout) itself, in place of a PyTorch product and sum
(the dq pass 1.60 -> 1.77 ms across calls, results/nvidia-h200/sea-train/call13/). BACKWARD = "keys_rows": the
same with the dq pass by `_rows_bwd_kernel` (WANT_KV=False; the rows forward's layout): 1.77 -> 0.83 ms (call14/).
Tried and removed: that dq pass also storing each entry's row and sort key in place of `_entry_keys_kernel` (0.34
ms): the dq pass 0.72 -> 1.10-1.14 ms, the step's kernels 12.28 -> 12.36 / 12.31 ms (A/B/A, call16/).

Limits: no padding mask (the lists hold only the keys each row may see); q, k, v in one dtype among bf16 / fp16 /
fp32, made contiguous; the output gradient is made contiguous.
"""
from __future__ import annotations

import torch

from kernels import sea_sparse_rows as rows_mod
from kernels._buffers import pow2_block
from kernels.sea_sparse_attention import grad_buffers, row_backward
from kernels.sea_sparse_rows import head_group, sparse_rows_forward

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: nothing here can run
    triton = None
    tl = None

# Tests set this to True: the fresh dq buffer is then filled with NaN so a skipped write fails.
POISON_OUTPUTS = False
# Which kernel runs the backward: "row" (the row kernel's `_bwd_kernel` of kernels/sea_sparse_attention.py, one
# program per row, on the same lists and the rows forward's lse) or "rows" (this module's, one program per block of
# rows). Measured on an H200 (bf16, SEA's lists at 32k causal, results/nvidia-h200/sea-train/): rows 9.9-10.2 ms,
# row 5.5 ms; so "row", after the rows forward (with lse 1.02 against the row kernel's 1.56 ms at 8k, same run).
# "keys": dq by the row kernel without atomics, dk / dv key-major (`key_lists`, `_keys_bwd_kernel`: no atomics): the
# step 16.77 -> 15.42 ms of kernels at 32k (A/B/A, results/nvidia-h200/sea-train/call11/), +213 MiB.
# SEA's sparse_backward option picks one per layer. "keys_rows": key-major dk / dv, dq by this module's 16-row
# program without atomics (the layout of the rows forward): the dq pass 1.77 -> 0.83 ms, the step's kernels 14.20 ->
# 13.27 ms at 32k (A/B/A), fwd+bwd 14.4 -> 13.4 ms (same harness command; results/nvidia-h200/sea-train/call14/).
# With fp32 inputs (FMA dots) the key-major passes lose: at 8k on synthetic lists row 4.85, keys 12.3, keys_rows
# 19.4 ms (same run). "auto" (the default): keys_rows for 16-bit inputs, row for fp32.
BACKWARD = "auto"
BACKWARDS = ("auto", "row", "rows", "keys", "keys_rows")
# key-major backward: keys per program (a power of two >= 16, the N of its tl.dot tiles)
KEYS_PER_PROGRAM = 16


if triton is not None:
    _split_dot = rows_mod._split_dot
    _rows_program = rows_mod._rows_program

    @triton.jit
    def _scores(q, kt, do, vt, FP32: tl.constexpr, EMU: tl.constexpr):
        """(q kt^T, do vt^T) in fp32: IEEE dots for fp32 inputs; 16-bit inputs on tensor cores (exact products, fp32
        sums), or as fp32 IEEE dots under Triton's interpreter (EMU), whose bf16 tl.dot is wrong."""
        if FP32:
            return tl.dot(q, tl.trans(kt), input_precision="ieee"), tl.dot(do, tl.trans(vt), input_precision="ieee")
        if EMU:
            return (tl.dot(q.to(tl.float32), tl.trans(kt.to(tl.float32)), input_precision="ieee"),
                    tl.dot(do.to(tl.float32), tl.trans(vt.to(tl.float32)), input_precision="ieee"))
        return tl.dot(q, tl.trans(kt)), tl.dot(do, tl.trans(vt))

    @triton.jit
    def _entry_keys_kernel(ROWPTR, COL, EROW, KEY, n, T, H, Hkv, NROWS, sentinel, NE: tl.constexpr):
        # One program per CSR row r (and one more, r = NROWS, for the filler entries past ROWPTR[NROWS]): each of
        # its entries gets EROW = r and KEY = (b Hkv + kv head) T + col, the filler ones EROW = NROWS and KEY =
        # sentinel (sorted after every key).
        r = tl.program_id(0).to(tl.int64)
        last = r == NROWS
        beg = tl.load(ROWPTR + r)
        end = tl.where(last, n, tl.load(ROWPTR + tl.minimum(r + 1, NROWS)))
        bh = r // T
        kvrow = ((bh // H) * Hkv + (bh % H) // (H // Hkv)) * T
        for e0 in range(beg, end, NE):
            e = e0 + tl.arange(0, NE)
            emask = e < end
            c = tl.load(COL + e, mask=emask, other=0).to(tl.int64)      # filler entries: read, not used
            key = tl.where(last, sentinel, kvrow + c)
            tl.store(EROW + e, r.to(EROW.dtype.element_ty), mask=emask)
            tl.store(KEY + e, key.to(KEY.dtype.element_ty), mask=emask)

    @triton.jit
    def _rows_bwd_kernel(Q, K, V, DO, ROWPTR, COL, LSE, DELTA, DQ, DK, DV, O, scale,
                         sqb, sqh, sqt, skb, skh, skt,
                         H, T, D, GROUP, NTB, HG,
                         ROWS: tl.constexpr, NE: tl.constexpr, BLOCK_D: tl.constexpr, FP32: tl.constexpr,
                         EMU: tl.constexpr, WANT_KV: tl.constexpr, PIECES: tl.constexpr):
        # q, dout, dq, o share q's (contiguous) layout; k, v, dk, dv share k's. Program order as _rows_fwd_kernel.
        # WANT_KV False: dq only (DK, DV untouched). delta = rowsum(o dout) here, also stored to DELTA.
        b, h, hk, t, rmask, row, beg, end, e_lo, e_hi, offs_d, dmask = _rows_program(
            ROWPTR, H, T, D, GROUP, NTB, HG, ROWS, BLOCK_D)
        qmask = rmask[:, None] & dmask[None, :]                          # [ROWS, BLOCK_D]
        qoff = b * sqb + h * sqh + t[:, None] * sqt + offs_d[None, :]
        q = tl.load(Q + qoff, mask=qmask, other=0.0)                     # [ROWS, BLOCK_D] input dtype
        do = tl.load(DO + qoff, mask=qmask, other=0.0)
        lse = tl.load(LSE + row, mask=rmask, other=float("inf"))         # [ROWS] fp32 (+inf: empty row)
        o = tl.load(O + qoff, mask=qmask, other=0.0).to(tl.float32)
        delta = tl.sum(o * do.to(tl.float32), axis=1)                    # [ROWS] fp32
        tl.store(DELTA + row, delta, mask=rmask)
        kvoff = b * skb + hk * skh
        offs_e = tl.arange(0, NE)
        dq = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)
        for e0 in range(e_lo, e_hi, NE):
            e = e0 + offs_e                                              # [NE] int64 entries
            emask = e < e_hi
            kid = tl.load(COL + e, mask=emask, other=0).to(tl.int64)     # [NE] key positions
            kvm = emask[:, None] & dmask[None, :]                        # [NE, BLOCK_D]
            ptr = kvoff + kid[:, None] * skt + offs_d[None, :]
            kt = tl.load(K + ptr, mask=kvm, other=0.0)                   # [NE, BLOCK_D] gathered key rows
            vt = tl.load(V + ptr, mask=kvm, other=0.0)                   # [NE, BLOCK_D] gathered value rows
            member = (e[None, :] >= beg[:, None]) & (e[None, :] < end[:, None])   # [ROWS, NE]
            s, dp = _scores(q, kt, do, vt, FP32, EMU)                    # [ROWS, NE] q k^T, dout v^T
            p = tl.where(member, tl.exp(s * scale - lse[:, None]), 0.0)  # [ROWS, NE]
            ds = p * (dp - delta[:, None])                               # [ROWS, NE]
            if FP32:
                dq = tl.dot(ds, kt, dq, input_precision="ieee")
            else:
                dq = _split_dot(ds, kt, dq, EMU, PIECES)                # [ROWS, BLOCK_D]
            # dk, dv per entry: each entry belongs to one row r(e), so dk[e] = ds[r(e), e] q[r(e)] and
            # dv[e] = p[r(e), e] dout[r(e)]: the column sums of ds and p, and the q / dout rows of each entry's row
            # gathered again (L1 / L2 hits), in the gathers' layout like the row kernel (no [NE, D] products on
            # tensor cores, no layout change before the atomics)
            if WANT_KV:
                er = tl.sum(tl.where(member, tl.arange(0, ROWS)[:, None], 0), axis=0)    # [NE] row of each entry
                eoff = b * sqb + h * sqh + (tl.min(t, axis=0) + er)[:, None] * sqt + offs_d[None, :]
                qe = tl.load(Q + eoff, mask=kvm, other=0.0).to(tl.float32)   # [NE, BLOCK_D]
                doe = tl.load(DO + eoff, mask=kvm, other=0.0).to(tl.float32)
                tl.atomic_add(DK + ptr, tl.sum(ds, axis=0)[:, None] * qe * scale, mask=kvm)
                tl.atomic_add(DV + ptr, tl.sum(p, axis=0)[:, None] * doe, mask=kvm)
        tl.store(DQ + qoff, dq * scale, mask=qmask)


    @triton.jit
    def _keys_bwd_kernel(Q, K, V, DO, KEYPTR, EROW, LSE, DELTA, DK, DV, scale,
                         skb, skh, skt, T, D, Hkv, NKB,
                         KB: tl.constexpr, NE: tl.constexpr, BLOCK_D: tl.constexpr, FP32: tl.constexpr,
                         EMU: tl.constexpr, PIECES: tl.constexpr):
        # One program per KB consecutive keys of one (b, kv head); their CSR-transposed entries (the query rows that
        # list them, contiguous in EROW: key j's are [KEYPTR[j], KEYPTR[j + 1])) walked NE at a time. q, dout are
        # contiguous [B, H, T, D] (query row r at r * D); k, v, dk, dv share k's layout. Each key belongs to one
        # program: dk, dv are stored, not added.
        pid = tl.program_id(0).to(tl.int64)
        bk = pid // NKB                                                  # b * Hkv + kv head
        j0 = (pid % NKB) * KB
        b = bk // Hkv
        hk = bk % Hkv
        j = j0 + tl.arange(0, KB)                                        # [KB] key positions
        jmask = j < T
        kbeg = tl.load(KEYPTR + bk * T + j, mask=jmask, other=0)         # [KB] entries of each key
        kend = tl.load(KEYPTR + bk * T + j + 1, mask=jmask, other=0)
        e_lo = tl.load(KEYPTR + bk * T + j0)
        e_hi = tl.load(KEYPTR + bk * T + tl.minimum(j0 + KB, T))
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        kmask = jmask[:, None] & dmask[None, :]                          # [KB, BLOCK_D]
        kptr = b * skb + hk * skh + j[:, None] * skt + offs_d[None, :]
        kt = tl.load(K + kptr, mask=kmask, other=0.0)                    # [KB, BLOCK_D]
        vt = tl.load(V + kptr, mask=kmask, other=0.0)
        dk = tl.zeros([KB, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([KB, BLOCK_D], dtype=tl.float32)
        offs_e = tl.arange(0, NE)
        for e0 in range(e_lo, e_hi, NE):
            e = e0 + offs_e                                              # [NE] entries (sorted by key)
            emask = e < e_hi
            r = tl.load(EROW + e, mask=emask, other=0).to(tl.int64)      # [NE] query rows (b, h, t)
            qm = emask[:, None] & dmask[None, :]
            qe = tl.load(Q + r[:, None] * D + offs_d[None, :], mask=qm, other=0.0)     # [NE, BLOCK_D] gathered
            doe = tl.load(DO + r[:, None] * D + offs_d[None, :], mask=qm, other=0.0)
            lse = tl.load(LSE + r, mask=emask, other=float("inf"))      # [NE]
            delta = tl.load(DELTA + r, mask=emask, other=0.0)
            member = (e[:, None] >= kbeg[None, :]) & (e[:, None] < kend[None, :])   # [NE, KB] entry of key?
            s, dp = _scores(qe, kt, doe, vt, FP32, EMU)                  # [NE, KB] q k^T, dout v^T
            p = tl.where(member, tl.exp(s * scale - lse[:, None]), 0.0)  # [NE, KB]
            ds = p * (dp - delta[:, None])
            if FP32:
                dk = tl.dot(tl.trans(ds), qe, dk, input_precision="ieee")
                dv = tl.dot(tl.trans(p), doe, dv, input_precision="ieee")
            else:
                dk = _split_dot(tl.trans(ds), qe, dk, EMU, PIECES)      # [KB, BLOCK_D]
                dv = _split_dot(tl.trans(p), doe, dv, EMU, PIECES)
        tl.store(DK + kptr, dk * scale, mask=kmask)
        tl.store(DV + kptr, dv, mask=kmask)


def key_lists(row_ptr, col, B: int, H: int, Hkv: int, T: int):
    """The CSR lists transposed to key-major order without a host sync: (key_ptr int64 [B*Hkv*T + 1], erow int32
    (int64 past 2^31 rows) [col.numel()]) where the entries of key j of (b, kv head) are
    erow[key_ptr[(b Hkv + kv) T + j] : ...[... + 1]], each the flat query row (b, h, t) that lists it. Filler
    entries of col past row_ptr[-1] sort after all keys."""
    n = col.numel()
    rows = row_ptr.numel() - 1
    sentinel = B * Hkv * T
    # int32 row ids and keys while they fit (a radix sort of 32-bit keys takes half the passes of 64-bit ones)
    idt = torch.int32 if max(rows, sentinel) < 2 ** 31 - 1 else torch.int64
    # each entry's CSR row and sort key by one program per row (the filler entries past row_ptr[-1] in an extra
    # row `rows`); in tensor ops (repeat_interleave, divisions, where) this took ~0.45 ms of SEA's 32k causal step
    erow = torch.empty(n, dtype=idt, device=col.device)
    key = torch.empty(n, dtype=idt, device=col.device)
    if n:
        _entry_keys_kernel[(rows + 1,)](row_ptr, col, erow, key, n, T, H, Hkv, rows, sentinel, NE=128, num_warps=4)
    key_sorted, order = torch.sort(key)
    key_ptr = torch.searchsorted(key_sorted, torch.arange(sentinel + 1, device=col.device, dtype=idt))
    return key_ptr, erow[order]


class _RowsAttnFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, row_ptr, col, scale, backward, pieces):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o, lse = sparse_rows_forward(q, k, v, row_ptr, col, scale, want_lse=True, pieces=pieces)
        ctx.save_for_backward(q, k, v, o, lse, row_ptr, col)
        ctx.scale, ctx.backward, ctx.pieces = scale, backward, pieces
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, row_ptr, col = ctx.saved_tensors
        grads = rows_backward(q, k, v, o, lse, row_ptr, col, ctx.scale, do, backward=ctx.backward,
                              pieces=ctx.pieces)
        return grads + (None, None, None, None, None)


def rows_backward(q, k, v, o, lse, row_ptr, col, scale: float, do, backward: str | None = None,
                  pieces: int | None = None):
    """(dq, dk, dv) of sparse_rows_attention for the output gradient `do`, given its forward's out `o` and lse.
    backward: one of BACKWARDS, None for the module's BACKWARD. pieces: 16-bit pieces of dS and P in the products
    with 16-bit operands (kernels/sea_sparse_rows.py's PIECES_CHOICES, None: its PIECES; "row" always runs fp32)."""
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    backward = BACKWARD if backward is None else backward
    if backward not in BACKWARDS:
        raise ValueError(f"sparse backward {backward!r}: expected one of {BACKWARDS}")
    if backward == "auto":
        backward = "row" if q.dtype == torch.float32 else "keys_rows"
    pieces = rows_mod.check_pieces(pieces)
    # key-major: dq without atomics, dk / dv stored by key, so fresh buffers in the inputs' dtypes. Every dq pass
    # computes delta = rowsum(o do) itself and stores it for the key pass.
    key_major = backward in ("keys", "keys_rows")
    do, delta, dq, dk, dv = grad_buffers(q, k, do, poison=POISON_OUTPUTS, stored=key_major and T > 0)
    ne = rows_mod.ENTRIES_PER_STEP
    if backward == "row":
        row_backward(q, k, v, o, do, row_ptr, col, lse, delta, dq, dk, dv, scale)
    elif key_major:
        if backward == "keys":
            row_backward(q, k, v, o, do, row_ptr, col, lse, delta, dq, dk, dv, scale, want_kv=False)
        elif T and B * H:                                                # keys_rows: dq in the rows layout
            _rows_pass(q, k, v, o, do, row_ptr, col, lse, delta, dq, dk, dv, scale, want_kv=False, pieces=pieces)
        kb = KEYS_PER_PROGRAM
        if kb < 16 or kb & (kb - 1):
            raise ValueError(f"KEYS_PER_PROGRAM={kb}: must be a power of two >= 16")
        if T and B * H:
            key_ptr, erow = key_lists(row_ptr, col, B, H, Hkv, T)
            nkb = triton.cdiv(T, kb)
            _keys_bwd_kernel[(B * Hkv * nkb,)](
                q, k, v, do, key_ptr, erow, lse, delta, dk, dv, float(scale),
                k.stride(0), k.stride(1), k.stride(2), T, D, Hkv, nkb,
                KB=kb, NE=ne, BLOCK_D=pow2_block(D), FP32=q.dtype == torch.float32, EMU=q.device.type != "cuda",
                PIECES=pieces, num_warps=rows_mod.NUM_WARPS)
    elif T and B * H:
        _rows_pass(q, k, v, o, do, row_ptr, col, lse, delta, dq, dk, dv, scale, want_kv=True, pieces=pieces)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def _rows_pass(q, k, v, o, do, row_ptr, col, lse, delta, dq, dk, dv, scale: float, *, want_kv: bool,
               pieces: int) -> None:
    """Launch `_rows_bwd_kernel` (16 rows per program): dq stored, dk / dv added atomically when want_kv; delta =
    rowsum(o do) computed in the kernel and stored."""
    B, H, T, D = q.shape
    ntb = triton.cdiv(T, rows_mod.ROWS_PER_PROGRAM)
    hg = head_group(B * H, k.shape[2], D, k.element_size())
    _rows_bwd_kernel[(B * H * ntb,)](
        q, k, v, do, row_ptr, col, lse, delta, dq, dk, dv, o, float(scale),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        H, T, D, H // k.shape[1], ntb, hg,
        ROWS=rows_mod.ROWS_PER_PROGRAM, NE=rows_mod.ENTRIES_PER_STEP, BLOCK_D=pow2_block(D),
        FP32=q.dtype == torch.float32, EMU=q.device.type != "cuda", WANT_KV=want_kv, PIECES=pieces,
        num_warps=rows_mod.NUM_WARPS)


def sparse_rows_attention(q, k, v, row_ptr, col, scale: float, backward: str | None = None,
                          pieces: int | None = None):
    """Differentiable SEA sparse attention (q [B, H, T, D], k, v [B, Hkv, T, D], CSR lists over rows (b, h, t)):
    the rows kernel's forward and this module's backward (`backward`: one of BACKWARDS, None for BACKWARD). Same
    result as kernels.sea_sparse_attention's row kernel up to float summation order (pieces=3; pieces: see
    kernels/sea_sparse_rows.py's PIECES, None for it)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if k.shape[2] != q.shape[2]:
        raise ValueError("sparse_rows_attention expects as many keys as queries (self-attention); got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}")
    if backward is not None and backward not in BACKWARDS:
        raise ValueError(f"sparse backward {backward!r}: expected one of {BACKWARDS} (or None: BACKWARD)")
    return _RowsAttnFn.apply(q, k, v, row_ptr.to(torch.int64).contiguous(), col.to(torch.int32).contiguous(),
                             float(scale), backward, rows_mod.check_pieces(pieces))
