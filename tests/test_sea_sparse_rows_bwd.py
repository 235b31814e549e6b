"""kernels/sea_sparse_rows_bwd.py (the rows kernel's forward with a backward of the same layout; Triton under
TRITON_INTERPRET=1 on CPU) against a float64 dense re-statement (masked softmax over each row's listed keys and its
gradient formulas) and the row kernel's autograd (kernels/sea_sparse_attention.py). Random CSR lists from
test_sea_sparse_rows (empty rows, a wholly empty block, a long row over several steps, unequal rows inside a block),
causal and bidirectional, GQA, fp32 / bf16 / fp16, D = 16 and 24, several program orders; dq poisoned with NaN."""
import math

import pytest
import torch

import kernels.sea_sparse_attention as ssa
import kernels.sea_sparse_rows as sr
import kernels.sea_sparse_rows_bwd as srb
from tests.test_sea_sparse_rows import B, H, HKV, make, random_csr


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(ssa, "POISON_OUTPUTS", True)
    monkeypatch.setattr(sr, "POISON_OUTPUTS", True)
    monkeypatch.setattr(srb, "POISON_OUTPUTS", True)


def dense_ref64(q, k, v, rp, col, scale, dout, stored=None, abs_terms=False):
    """out and (dq, dk, dv) in float64 by the softmax gradient formulas over each row's listed keys (an empty row
    gives 0): p = softmax, ds = p (dout v^T - delta), dq = scale ds k, dk = scale ds^T q, dv = p^T dout (summed over
    a kv head's query heads). delta = rowsum(stored dout) with `stored` the forward's output as the kernel returned
    it (rounded to q's dtype; the kernels, like FlashAttention, take delta from the stored output), out if None.
    abs_terms: also the same sums of absolute terms (sum p |v|, scale sum |ds| |k|, scale sum |ds| |q|, sum p |dout|),
    the scale of the error when p and ds are rounded before their products."""
    Bq, Hq, T, D = q.shape
    grp = Hq // k.shape[1]
    allowed = torch.zeros(Bq * Hq * T, k.shape[2], dtype=torch.bool)
    for r in range(Bq * Hq * T):
        allowed[r, col[int(rp[r]):int(rp[r + 1])].long()] = True
    allowed = allowed.view(Bq, Hq, T, -1)
    q64, do64 = q.double(), dout.double()
    k64, v64 = (t.double().repeat_interleave(grp, dim=1) for t in (k, v))
    s = (q64 @ k64.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)                            # empty rows: all -inf -> NaN -> 0
    out = p @ v64
    delta = ((out if stored is None else stored.double()) * do64).sum(-1, keepdim=True)     # [B, H, T, 1]
    ds = p * (do64 @ v64.transpose(-1, -2) - delta)
    dq = ds @ k64 * scale
    fold = lambda x: x.view(Bq, k.shape[1], grp, *x.shape[2:]).sum(2)    # noqa: E731  [B, Hkv, T, D]
    grads = (dq, fold(ds.transpose(-1, -2) @ q64 * scale), fold(p.transpose(-1, -2) @ do64))
    if not abs_terms:
        return out, grads
    a = ds.abs()
    return out, grads, (p @ v64.abs(), a @ k64.abs() * scale, fold(a.transpose(-1, -2) @ q64.abs() * scale),
                        fold(p.transpose(-1, -2) @ do64.abs()))


def assert_close_to_ref(got, ref, what, extra=None):
    """fp32: 1e-5 of the largest reference value; 16-bit: one unit in the last place of the value plus that
    (fp32 arithmetic, one final rounding; the interpreter truncates where CUDA rounds). extra: a further elementwise
    allowance (the rounding of p / ds under pieces < 3)."""
    g, r = got.double(), ref
    assert torch.isfinite(g).all(), what
    scale = float(r.abs().max()) or 1.0
    tol = 1e-5 * scale + 1e-7 + (0 if extra is None else extra)
    if got.dtype != torch.float32:
        bits = {torch.bfloat16: 7, torch.float16: 10}[got.dtype]
        _, e = torch.frexp(r.abs())
        tol = tol + torch.ldexp(torch.ones_like(r), e - 1 - bits)
    bad = (g - r).abs() > tol
    assert not bad.any(), f"{what}: {int(bad.sum())} of {bad.numel()} off, max {float((g - r).abs().max()):.3g}"


CASES = [
    # dtype, T, hkv, D, causal, entries per step, head group, filler
    (torch.float32, 37, HKV, 16, True, 16, None, 0),     # GQA, 3 blocks (last partial)
    (torch.bfloat16, 40, HKV, 24, True, 16, 1, 5),       # D = 24, head major, filler past row_ptr[-1]
    (torch.float32, 30, H, 24, False, 64, 8, 0),         # no GQA, bidirectional, all (b, h) time-block major
    (torch.bfloat16, 33, 1, 16, False, 32, 2, 0),        # one kv head
    (torch.float16, 17, HKV, 16, True, 16, 4, 0),
]


def case_inputs(monkeypatch, dtype, T, hkv, D, causal, ne, hg, filler):
    """A CASES row's q, k, v, lists, output gradient and scale (the kernel's step size and head group set)."""
    monkeypatch.setattr(sr, "ENTRIES_PER_STEP", ne)
    monkeypatch.setattr(sr, "HEAD_GROUP", hg)
    q, k, v = make(dtype, T, T, hkv, D, seed=T + D)
    rp, col = random_csr(T, T, 9, torch.Generator().manual_seed(T), row0=0 if causal else None, filler=filler)
    dout = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(7)).to(dtype)
    return q, k, v, rp, col, dout, 1 / math.sqrt(D)


_REFS: dict = {}        # case -> (forward output, float64 references, the row kernel's gradients)


# every case on this module's block-of-rows backward and on the key-major ones (keys, and keys_rows: the default);
# the bf16 ones also on the row kernel's backward (BACKWARD = "row")
@pytest.mark.parametrize("dtype,T,hkv,D,causal,ne,hg,filler,backward",
                         [c + ("rows",) for c in CASES] + [c + ("keys",) for c in CASES]
                         + [c + ("keys_rows",) for c in CASES]
                         + [c + ("row",) for c in CASES if c[0] == torch.bfloat16])
def test_grads_match_float64_and_row_kernel(monkeypatch, dtype, T, hkv, D, causal, ne, hg, filler, backward):
    monkeypatch.setattr(srb, "BACKWARD", backward)
    case = (dtype, T, hkv, D, causal, ne, hg, filler)
    q, k, v, rp, col, dout, scale = case_inputs(monkeypatch, *case)
    x = [t.clone().requires_grad_() for t in (q, k, v)]
    out = srb.sparse_rows_attention(*x, rp, col, scale)
    assert out.dtype == dtype and out.shape == (B, H, T, D)
    grads = torch.autograd.grad(out, x, dout)
    # the references depend on the case and the forward's output only: made once per case and forward output (the
    # backward variants share them; the interpreted row kernel is the slow part of this test)
    seen = _REFS.get(case)
    if seen is None or not torch.equal(seen[0], out.detach()):
        y = [t.clone().requires_grad_() for t in (q, k, v)]
        seen = (out.detach(), dense_ref64(q, k, v, rp, col, scale, dout, stored=out.detach()),
                torch.autograd.grad(ssa.sparse_attention_triton(*y, rp, col, scale), y, dout))
        _REFS[case] = seen
    (want_out, want), grads_row = seen[1], seen[2]
    assert_close_to_ref(out, want_out, "out")
    for name, g, w, t in zip(("dq", "dk", "dv"), grads, want, (q, k, v)):
        assert g.dtype == dtype and g.shape == t.shape, name
        assert_close_to_ref(g, w, name)
    assert (grads[0][0, 0, 2] == 0).all() and (grads[0][1, 1, 16:32] == 0).all()    # empty rows: no gradient
    # the row kernel's autograd on the same lists: the same gradients up to summation order and rounding
    for name, g, w in zip(("dq", "dk", "dv"), grads, grads_row):
        tol = 2e-5 if dtype == torch.float32 else {torch.bfloat16: 2 ** -7, torch.float16: 2 ** -10}[dtype]
        assert float((g.double() - w.double()).abs().max()) <= tol * float(w.double().abs().max()) + 1e-6, name


# pieces < 3 (kernels/sea_sparse_rows.py's PIECES): p and ds rounded to the inputs' dtype before their products with
# v / k / q / dout (pieces = 1, FlashAttention's precision) or kept to two pieces. Each product term then errs by at
# most (2u)^pieces of its size (u the unit roundoff, 2^-8 for bf16, 2^-11 for fp16; doubled for the interpreter's
# truncation), so every output is within that share of the float64 sum of absolute terms on top of the fp32 tolerance.
@pytest.mark.parametrize("pieces, backward", [(1, "keys_rows"), (1, "keys"), (1, "rows"), (2, "keys_rows")])
@pytest.mark.parametrize("case", [c for c in CASES if c[0] != torch.float32], ids=str)
def test_fewer_pieces_within_their_rounding_bound(monkeypatch, pieces, backward, case):
    dtype = case[0]
    q, k, v, rp, col, dout, scale = case_inputs(monkeypatch, *case)
    x = [t.clone().requires_grad_() for t in (q, k, v)]
    out = srb.sparse_rows_attention(*x, rp, col, scale, backward=backward, pieces=pieces)
    grads = torch.autograd.grad(out, x, dout)
    want_out, want, terms = dense_ref64(q, k, v, rp, col, scale, dout, stored=out.detach(), abs_terms=True)
    share = (2 * {torch.bfloat16: 2 ** -8, torch.float16: 2 ** -11}[dtype]) ** pieces
    assert_close_to_ref(out, want_out, "out", extra=share * terms[0])
    # the "keys" backward's dq comes from the row kernel, which is fp32 whatever pieces says
    for name, g, w, t in zip(("dq", "dk", "dv"), grads, want, terms[1:]):
        assert g.dtype == dtype, name
        assert_close_to_ref(g, w, f"{name} pieces={pieces}", extra=share * t)
    # and the knob is live: three pieces give other values (pieces = 1 drops 2^-9-relative parts of p)
    y = [t.clone().requires_grad_() for t in (q, k, v)]
    out3 = srb.sparse_rows_attention(*y, rp, col, scale, backward=backward, pieces=3)
    grads3 = torch.autograd.grad(out3, y, dout)
    if pieces == 1:
        assert not torch.equal(out, out3)
        # dq by the 16-row dq pass (rows, keys_rows), dk / dv by the key-major pass (keys, keys_rows)
        live = {"rows": (0,), "keys": (1, 2), "keys_rows": (0, 1, 2)}[backward]
        assert all(not torch.equal(grads[i], grads3[i]) for i in live), backward


def test_auto_backward_and_pieces_arguments(monkeypatch):
    """BACKWARD "auto" runs keys_rows for 16-bit inputs and row for fp32; bad backward / pieces values are refused."""
    seen = []
    real = srb._rows_pass

    def spy(*a, **kw):
        seen.append(kw["want_kv"])
        return real(*a, **kw)

    monkeypatch.setattr(srb, "_rows_pass", spy)
    monkeypatch.setattr(sr, "ENTRIES_PER_STEP", 16)
    T, D = 20, 16
    rp, col = random_csr(T, T, 5, torch.Generator().manual_seed(4), row0=0)
    for dtype, want in ((torch.bfloat16, [False]), (torch.float32, [])):
        seen.clear()
        x = [t.requires_grad_() for t in make(dtype, T, T, HKV, D, seed=5)]
        torch.autograd.grad(srb.sparse_rows_attention(*x, rp, col, 0.25), x, torch.ones(B, H, T, D, dtype=dtype))
        assert seen == want, dtype                                       # keys_rows: the dq pass without atomics
    x = make(torch.bfloat16, T, T, HKV, D, seed=5)
    with pytest.raises(ValueError, match="pieces=4"):
        srb.sparse_rows_attention(*x, rp, col, 0.25, pieces=4)
    with pytest.raises(ValueError, match="sparse backward 'cols'"):
        srb.sparse_rows_attention(*x, rp, col, 0.25, backward="cols")
    with torch.no_grad(), pytest.raises(ValueError, match="pieces=0"):
        sr.sparse_rows_forward(*x, rp, col, 0.25, pieces=0)


def test_unlisted_keys_get_no_gradient(monkeypatch):
    monkeypatch.setattr(sr, "ENTRIES_PER_STEP", 16)
    T, D = 24, 16
    q, k, v = make(torch.float32, T, T, HKV, D, seed=11)
    rp, col = random_csr(T, T, 5, torch.Generator().manual_seed(12), row0=0)
    listed = torch.zeros(B * HKV * T, dtype=torch.bool)
    grp = H // HKV
    for r in range(B * H * T):
        bh = r // T
        kv = (bh // H) * HKV + (bh % H) // grp
        listed[kv * T + col[int(rp[r]):int(rp[r + 1])].long()] = True
    x = [t.clone().requires_grad_() for t in (q, k, v)]
    _, dk, dv = torch.autograd.grad(srb.sparse_rows_attention(*x, rp, col, 0.25), x, torch.ones(B, H, T, D))
    assert (~listed).any() and listed.any()
    assert (dk.reshape(-1, D)[~listed] == 0).all() and (dv.reshape(-1, D)[~listed] == 0).all()
    assert (dv.reshape(-1, D)[listed].abs().sum(-1) > 0).all()


def test_key_lists_transpose_the_csr_lists():
    """key_lists: every live entry once, under its (b, kv head, key), with its query row; filler entries dropped."""
    T = 21
    rp, col = random_csr(T, T, 6, torch.Generator().manual_seed(3), row0=0, filler=4)
    key_ptr, erow = srb.key_lists(rp, col, B, H, HKV, T)
    assert key_ptr.shape == (B * HKV * T + 1,) and int(key_ptr[-1]) == int(rp[-1])
    want = {}
    for r in range(B * H * T):
        bh = r // T
        kv = (bh // H) * HKV + (bh % H) // (H // HKV)
        for c in col[int(rp[r]):int(rp[r + 1])].tolist():
            want.setdefault(kv * T + c, []).append(r)
    got = {j: sorted(erow[int(key_ptr[j]):int(key_ptr[j + 1])].tolist()) for j in range(B * HKV * T)
           if key_ptr[j + 1] > key_ptr[j]}
    assert got == {j: sorted(rs) for j, rs in want.items()}


def test_refuses_query_blocks():
    q, k, v = make(torch.float32, 8, 16, HKV, 16, seed=1)
    rp, col = random_csr(8, 16, 3, torch.Generator().manual_seed(2), row0=8)
    with pytest.raises(ValueError, match="as many keys as queries"):
        srb.sparse_rows_attention(q, k, v, rp, col, 0.25)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_matches_row_kernel_and_times(dtype, monkeypatch):
    """On CUDA at a real size, lists shaped like SEA's (whole cells of 64 keys, clipped causally): each row its own
    cell and one random earlier cell. Gradients against the row kernel's; both backwards timed (printed)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    T, D, Hh = 8192, 64, 16
    q, k, v = (torch.randn(1, Hh, T, D, device="cuda", generator=g).to(dtype) for _ in range(3))
    # every row holds its own cell of 64 keys (clipped causally) and one earlier random cell
    t = torch.arange(T, device="cuda")
    cells = torch.stack([t // 64, (torch.rand(T, device="cuda", generator=g) * (t // 64 + 1)).long()], 1)
    lo = (cells * 64)                                                    # [T, 2] cell starts
    lens = torch.minimum(torch.full_like(lo, 64), t[:, None] - lo + 1).clamp(min=0)
    lens[:, 1] = torch.where(cells[:, 1] == cells[:, 0], 0, lens[:, 1])  # no duplicate keys
    per_row = lens.sum(1).repeat(Hh)                                     # [H T]
    rp = torch.zeros(Hh * T + 1, dtype=torch.int64, device="cuda")
    rp[1:] = per_row.cumsum(0)
    starts = lo.repeat(Hh, 1).reshape(-1)
    n = lens.repeat(Hh, 1).reshape(-1)
    seg = torch.repeat_interleave(torch.arange(n.numel(), device="cuda"), n)
    off = torch.arange(int(n.sum()), device="cuda") - torch.repeat_interleave(n.cumsum(0) - n, n)
    col = (starts[seg] + off).int()
    dout = torch.randn(q.shape, device="cuda", generator=g).to(dtype)
    x = [t_.clone().requires_grad_() for t_ in (q, k, v)]
    y = [t_.clone().requires_grad_() for t_ in (q, k, v)]
    monkeypatch.setattr(srb, "BACKWARD", "rows")                         # this module's backward first
    out = srb.sparse_rows_attention(*x, rp, col, 0.125)
    ref = ssa.sparse_attention_triton(*y, rp, col, 0.125)
    gy = torch.autograd.grad(ref, y, dout, retain_graph=True)

    def check(grads):                                                    # against the row kernel's autograd
        for name, a, b in zip(("dq", "dk", "dv"), grads, gy):
            tol = 2e-5 if dtype == torch.float32 else 2 ** -7
            assert float((a.double() - b.double()).abs().max()) <= tol * float(b.double().abs().max()) + 1e-6, name

    check(torch.autograd.grad(out, x, dout, retain_graph=True))

    from harness.measure import time_cuda

    def ms(fn):                                                          # the harness's timer (median, L2 flushed)
        return time_cuda(fn, rep_ms=50).median_ms

    t_rows = ms(lambda: torch.autograd.grad(out, x, dout, retain_graph=True))
    t_row = ms(lambda: torch.autograd.grad(ref, y, dout, retain_graph=True))
    monkeypatch.setattr(srb, "BACKWARD", "row")
    t_mixed = ms(lambda: torch.autograd.grad(out, x, dout, retain_graph=True))
    monkeypatch.setattr(ssa, "ROW_BWD_HEADS_FAST", True)
    t_heads = ms(lambda: torch.autograd.grad(out, x, dout, retain_graph=True))
    check(torch.autograd.grad(out, x, dout, retain_graph=True))
    monkeypatch.setattr(ssa, "ROW_BWD_HEADS_FAST", False)
    monkeypatch.setattr(srb, "BACKWARD", "keys")
    check(torch.autograd.grad(out, x, dout, retain_graph=True))
    t_keys = ms(lambda: torch.autograd.grad(out, x, dout, retain_graph=True))
    monkeypatch.setattr(srb, "BACKWARD", "keys_rows")
    check(torch.autograd.grad(out, x, dout, retain_graph=True))
    t_keys_rows = ms(lambda: torch.autograd.grad(out, x, dout, retain_graph=True))
    t_p1 = {}
    if dtype != torch.float32:                                           # P and dS rounded once (pieces = 1)
        out1 = srb.sparse_rows_attention(*x, rp, col, 0.125, pieces=1)
        check(torch.autograd.grad(out1, x, dout, retain_graph=True))
        t_p1["backward keys_rows"] = ms(lambda: torch.autograd.grad(out1, x, dout, retain_graph=True))
        t_p1["forward rows"] = ms(lambda: srb.sparse_rows_attention(*x, rp, col, 0.125, pieces=1))
    t_fwd_rows = ms(lambda: srb.sparse_rows_attention(*x, rp, col, 0.125))
    t_fwd_row = ms(lambda: ssa.sparse_attention_triton(*y, rp, col, 0.125))
    print(f"\n{dtype}, T={T}, nnz {int(rp[-1]) / 1e6:.1f}M: backward rows kernel {t_rows:.3f} ms, row kernel "
          f"{t_row:.3f} ms (on the rows forward's lse {t_mixed:.3f} ms, heads fastest {t_heads:.3f} ms), key-major "
          f"{t_keys:.3f} ms (dq in the 16-row layout {t_keys_rows:.3f} ms); forward "
          f"with lse: rows {t_fwd_rows:.3f} ms, "
          f"row {t_fwd_row:.3f} ms" + "".join(f"; pieces=1 {k_} {v_:.3f} ms" for k_, v_ in t_p1.items()))
