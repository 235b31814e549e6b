"""kernels/sea_sparse_rows.py (one program per block of query rows; Triton under TRITON_INTERPRET=1 on CPU) against the
row kernel of kernels/sea_sparse_attention.py (`_triton_forward`: one program per row), the plain-PyTorch gather
path (`sparse_attention_torch`) and a float64 re-statement. Random CSR lists with empty rows, a wholly empty block, a
long row (several steps of entries), unequal rows inside a block (rows straddling steps), partial last blocks, GQA,
query blocks (Tq < Tk), filler past row_ptr[-1], every program order (head groups of 1, 2, 4, all); fp32, bf16,
fp16, D = 16 and 24; outputs poisoned with NaN first. Tests shrink ENTRIES_PER_STEP to 16 so blocks take many steps
(ROWS_PER_PROGRAM stays 16: the tl.dot minimum)."""
import math

import pytest
import torch

import kernels.sea_sparse_attention as ssa
import kernels.sea_sparse_rows as sr
from methods.sea.interp import mask_to_csr
from methods.sea.topk import select_topk, selection_caps

B, H, HKV = 2, 4, 2


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(ssa, "POISON_OUTPUTS", True)
    monkeypatch.setattr(sr, "POISON_OUTPUTS", True)


def random_csr(Tq, Tk, W, gen, *, row0=None, filler=0):
    """CSR lists for B*H*Tq rows over keys 0..Tk-1 (row0 set: causal, row t sees keys 0..row0+t): distinct keys in
    random order, 0..W per row (unequal inside a block); row (0, 0, 2) empty, rows t = 16..31 of (1, 1) empty (a
    whole block at 16 rows per program), row (1, 3, 1) holds min(span, 45) keys (3+ steps of 16 entries). `filler` extra
    col entries past row_ptr[-1] that no row points at (a capacity layout)."""
    cols, counts = [], []
    for b in range(B):
        for h in range(H):
            for t in range(Tq):
                span = Tk if row0 is None else row0 + t + 1
                n = int(torch.randint(0, min(W, span) + 1, (1,), generator=gen))
                if (b, h, t) == (0, 0, 2) or ((b, h) == (1, 1) and 16 <= t < 32):
                    n = 0
                if (b, h, t) == (1, 3, 1):
                    n = min(span, 45)
                cols.append(torch.randperm(span, generator=gen)[:n])
                counts.append(n)
    row_ptr = torch.zeros(B * H * Tq + 1, dtype=torch.int64)
    row_ptr[1:] = torch.tensor(counts).cumsum(0)
    cols.append(torch.randint(0, Tk, (filler,), generator=gen))
    return row_ptr, torch.cat(cols).int()


def make(dtype, Tq, Tk, hkv, D, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Tq, D, generator=gen).to(dtype)                # [B, H, Tq, D]
    k = torch.randn(B, hkv, Tk, D, generator=gen).to(dtype)              # [B, Hkv, Tk, D]
    v = torch.randn(B, hkv, Tk, D, generator=gen).to(dtype)              # [B, Hkv, Tk, D]
    return q, k, v


def assert_within_one_ulp(got, want, atol=1e-6):
    """got, want in one 16-bit float dtype: equal, or one unit in the last place apart (two fp32 values equal up to
    summation order can round to neighbours; the interpreter also truncates fp32 -> bf16 where torch rounds), plus
    atol: the fp32 rounding of the sum p v itself (terms ~1) where it cancels to a tiny output (seen: 8.1e-7, whose
    bf16 ulp is 3.6e-9, computed 8.08e-7 by the row kernel and 8.75e-7 here, both in fp32 from the same inputs)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    bits = {torch.bfloat16: 7, torch.float16: 10}[got.dtype]
    g, w = got.double(), want.double()
    mag = torch.maximum(g.abs(), w.abs())
    _, e = torch.frexp(mag)                                              # mag = m 2^e, m in [0.5, 1)
    ulp = torch.ldexp(torch.ones_like(mag), e - 1 - bits)
    bad = (g - w).abs() > ulp + atol
    assert not torch.isnan(g).any() and not bad.any(), f"{int(bad.sum())} of {bad.numel()} elements > 1 ulp apart"


def assert_same_out(got, want):
    if got.dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    else:
        assert_within_one_ulp(got, want)


def assert_same_lse(got, want):
    assert torch.equal(torch.isinf(got), torch.isinf(want)) and (got[torch.isinf(got)] > 0).all()
    fin = torch.isfinite(want)
    torch.testing.assert_close(got[fin], want[fin], rtol=1e-5, atol=1e-6)


def ref64(q, k, v, rp, col, scale):
    """Float64 re-statement, plain loops over rows: (out [B, H, Tq, D], lse [B, H, Tq]; +inf for an empty row)."""
    Bq, Hq, Tq, Dq = q.shape
    grp = Hq // k.shape[1]
    out = torch.zeros(Bq, Hq, Tq, Dq, dtype=torch.float64)
    lse = torch.full((Bq, Hq, Tq), float("inf"), dtype=torch.float64)
    for b in range(Bq):
        for h in range(Hq):
            for t in range(Tq):
                r = (b * Hq + h) * Tq + t
                j = col[int(rp[r]):int(rp[r + 1])].long()
                if j.numel():
                    s = k[b, h // grp, j].double() @ q[b, h, t].double() * scale   # [n]
                    out[b, h, t] = torch.softmax(s, 0) @ v[b, h // grp, j].double()
                    lse[b, h, t] = torch.logsumexp(s, 0)
    return out, lse


CASES = [
    # dtype, Tq, Tk, hkv, D, causal block start (None: every row sees all Tk keys), entries/step, head group, filler
    (torch.float32, 37, 37, HKV, 16, 0, 16, None, 0),      # causal self-attention, GQA, 3 blocks (last partial)
    (torch.bfloat16, 21, 50, HKV, 24, 29, 32, 1, 5),       # query block (rows 29..49 of 50), D = 24, head major
    (torch.float32, 18, 30, H, 24, None, 64, 8, 0),        # no GQA, bidirectional block, all (b, h) time-block major
    (torch.bfloat16, 40, 40, 1, 16, None, 16, 2, 3),       # one kv head, groups of 2 (b, h)
    (torch.float16, 17, 17, HKV, 16, 0, 16, 4, 0),
]


@pytest.mark.parametrize("dtype,Tq,Tk,hkv,D,row0,ne,hg,filler", CASES)
def test_matches_row_kernel_and_torch(monkeypatch, dtype, Tq, Tk, hkv, D, row0, ne, hg, filler):
    monkeypatch.setattr(sr, "ENTRIES_PER_STEP", ne)
    monkeypatch.setattr(sr, "HEAD_GROUP", hg)
    q, k, v = make(dtype, Tq, Tk, hkv, D, seed=Tq + D)
    rp, col = random_csr(Tq, Tk, 9, torch.Generator().manual_seed(Tk), row0=row0, filler=filler)
    assert col.numel() == int(rp[-1]) + filler
    scale = 1 / math.sqrt(D)
    out, lse = sr.sparse_rows_forward(q, k, v, rp, col, scale, want_lse=True)
    assert out.dtype == dtype and out.shape == (B, H, Tq, D) and lse.dtype == torch.float32 and lse.shape == (B, H, Tq)
    # the row kernel (one program per row), out and lse (+inf for an empty row)
    want, want_lse = ssa._triton_forward(q, k, v, rp, col, scale)
    assert_same_out(out, want)
    assert_same_lse(lse, want_lse)
    assert torch.isinf(lse[0, 0, 2]) and (out[0, 0, 2] == 0).all() and (out[1, 1, 16:32] == 0).all()
    # the gather path, and the row kernel on fp32 copies (no rounding of the inputs' products): one final rounding
    assert_same_out(out, ssa.sparse_attention_torch(q, k, v, rp, col, scale, block=True))
    want32, _ = ssa._triton_forward(q.float(), k.float(), v.float(), rp, col, scale)
    if dtype == torch.float32:
        assert_same_out(out, want32)
    else:
        assert_within_one_ulp(out, want32.to(dtype))
    if dtype == torch.bfloat16:
        # fp32 arithmetic throughout (p v at fp32 accuracy, not p rounded to bf16 for the product): all but a few
        # boundary cases are exactly one rounding (nearest even, or the interpreter's truncation) of the fp32 result
        trunc = (want32.contiguous().view(torch.int32) & ~0xFFFF).view(torch.float32).to(dtype)
        once = (out == want32.to(dtype)) | (out == trunc)
        assert float(once.float().mean()) > 0.99
    # without lse: the same output (same program, the lse store compiled out)
    again = sr.sparse_rows_forward(q, k, v, rp, col, scale)
    assert isinstance(again, torch.Tensor) and torch.equal(again, out)


def test_float64_restatement_fp32(monkeypatch):
    monkeypatch.setattr(sr, "ENTRIES_PER_STEP", 16)
    Tq, Tk, D = 10, 48, 16
    q, k, v = make(torch.float32, Tq, Tk, HKV, D, seed=3)
    rp, col = random_csr(Tq, Tk, 30, torch.Generator().manual_seed(4), row0=Tk - Tq)
    assert (rp[1:] - rp[:-1]).max() > 2 * sr.ENTRIES_PER_STEP             # one row spans several steps
    out, lse = sr.sparse_rows_forward(q, k, v, rp, col, 0.37, want_lse=True)
    want, want_lse = ref64(q, k, v, rp, col, 0.37)
    torch.testing.assert_close(out.double(), want, atol=2e-6, rtol=2e-6)
    assert_same_lse(lse.double(), want_lse)


def test_all_rows_empty_written():
    """Every row empty (no program enters its loop): out 0 and lse +inf everywhere, over the NaN poison."""
    Tq, D = 7, 16
    q, k, v = make(torch.bfloat16, Tq, Tq, HKV, D, seed=5)
    rp = torch.zeros(B * H * Tq + 1, dtype=torch.int64)
    col = torch.zeros(3, dtype=torch.int32)
    assert torch.isnan(sr.fresh((2,), torch.float32, "cpu", poison=sr.POISON_OUTPUTS)).all()
    out, lse = sr.sparse_rows_forward(q, k, v, rp, col, 0.3, want_lse=True)
    assert (out == 0).all() and torch.isposinf(lse).all()


def test_sea_lists_causal_block(monkeypatch):
    """Lists as SEA builds them for a causal query block: causal_per_batch top-k on a random A_hat, mask_to_csr with
    host caps (col longer than row_ptr[-1]), rows row0 .. row0 + Tq - 1 against Tk = row0 + Tq keys."""
    monkeypatch.setattr(sr, "ENTRIES_PER_STEP", 16)
    Tq, row0, K, kk, D = 20, 22, 8, 4, 16
    Tk = row0 + Tq
    q, k, v = make(torch.bfloat16, Tq, Tk, HKV, D, seed=12)
    probs = torch.rand(B, H, Tq, K, generator=torch.Generator().manual_seed(11))   # [B, H, Tq, K] stand-in A_hat
    mask = select_topk(probs, mode="causal_per_batch", k=kk, causal=True, row0=row0)   # [B, H, Tq, K] bool
    caps = selection_caps("causal_per_batch", B=B, H=H, T=Tq, K=K, k=kk, causal=True, row0=row0)
    rp, col = mask_to_csr(mask, k=kk, causal=True, caps=caps, row0=row0)
    n = rp[1:] - rp[:-1]
    assert col.numel() > int(rp[-1]) and (n == 0).any() and len(set(n.tolist())) > 2   # filler, empty, uneven
    out, lse = sr.sparse_rows_forward(q, k, v, rp, col, 0.25, want_lse=True)
    want, want_lse = ssa._triton_forward(q, k, v, rp, col, 0.25)
    assert_within_one_ulp(out, want)
    assert_same_lse(lse, want_lse)
    out64, _ = ref64(q, k, v, rp, col, 0.25)
    torch.testing.assert_close(out.double(), out64, atol=1e-3, rtol=8e-3)   # one bf16 rounding


def _args(**over):
    Tq, Tk, D = 4, 6, 16
    q, k, v = make(torch.float32, Tq, Tk, HKV, D, seed=41)
    rp, col = random_csr(Tq, Tk, 3, torch.Generator().manual_seed(42))
    a = dict(q=q, k=k, v=v, row_ptr=rp, col=col, scale=0.5)
    a.update(over)
    return a


def test_refuses_grad():
    for name in ("q", "k", "v"):
        a = _args()
        a[name] = a[name].clone().requires_grad_()
        with pytest.raises(RuntimeError, match="forward-only"):
            sr.sparse_rows_forward(**a)
    with torch.no_grad():                                                # no grad mode: fine
        assert not torch.isnan(sr.sparse_rows_forward(**a)).any()


@pytest.mark.parametrize("bad,match", [
    (lambda a: dict(k=a["k"].half(), v=a["v"].half()), "one dtype"),
    (lambda a: dict(q=a["q"].double(), k=a["k"].double(), v=a["v"].double()), "dtype"),
    (lambda a: dict(q=a["q"][0]), r"\[B, H, T, D\]"),
    (lambda a: dict(k=a["k"][..., :8], v=a["v"][..., :8]), "alike"),
    (lambda a: dict(k=a["k"][:, :, :3], v=a["v"][:, :, :3]), "as many keys"),
    (lambda a: dict(k=a["k"].repeat(1, 3, 1, 1)[:, :3], v=a["v"].repeat(1, 3, 1, 1)[:, :3]), "multiple"),
    (lambda a: dict(row_ptr=a["row_ptr"][:-1]), "row_ptr"),
    (lambda a: dict(row_ptr=a["row_ptr"][None]), "1-D"),
    (lambda a: dict(col=a["col"].float()), "integer"),
    (lambda a: dict(col=a["col"][:int(a["row_ptr"][-1]) - 1]), "col has"),
])
def test_refuses_mismatch(bad, match):
    a = _args()
    with pytest.raises(ValueError, match=match):
        sr.sparse_rows_forward(**_args(**bad(a)))


@pytest.mark.parametrize("name,value,match", [
    ("ROWS_PER_PROGRAM", 24, "power of two"), ("ROWS_PER_PROGRAM", 8, "power of two"),
    ("ENTRIES_PER_STEP", 48, "power of two"), ("HEAD_GROUP", 3, "divisor"),
])
def test_refuses_bad_block_constants(monkeypatch, name, value, match):
    monkeypatch.setattr(sr, name, value)
    with pytest.raises(ValueError, match=match):
        sr.sparse_rows_forward(**_args())


def test_head_group_fits_l2_budget(monkeypatch):
    """Auto group: the largest divisor of B*H whose k and v (2 Tk D bytes each) fit in 32 MiB (the backward); the
    forward's FORWARD_HEAD_GROUP where it divides B*H; HEAD_GROUP over both."""
    assert sr.HEAD_GROUP is None and sr.HEAD_GROUP_L2_BYTES == 32 << 20
    assert sr.head_group(16, 65536, 64, 2) == 2                          # 16 MiB per (b, h)
    assert sr.head_group(16, 16384, 64, 2) == 8
    assert sr.head_group(16, 262144, 64, 2) == 1                         # 64 MiB: one at a time
    assert sr.head_group(12, 32768, 64, 2) == 4                          # 5 fit; 4 divides 12
    assert sr.head_group(6, 128, 16, 4) == 6
    assert sr.FORWARD_HEAD_GROUP == 1                                   # the forward: one (b, h) at a time
    assert sr.head_group(16, 16384, 64, 2, forward=True) == 1
    monkeypatch.setattr(sr, "FORWARD_HEAD_GROUP", 3)                    # not a divisor of 16: the L2 rule
    assert sr.head_group(16, 16384, 64, 2, forward=True) == 8
    monkeypatch.setattr(sr, "HEAD_GROUP", 4)
    assert sr.head_group(16, 128, 16, 4) == 4
    assert sr.head_group(16, 128, 16, 4, forward=True) == 4             # HEAD_GROUP wins for both


@pytest.mark.gpu
def test_gpu_real_size_matches_row_kernel():
    """B=1, H=16, D=64, bf16, causal, T = 16384 and 65536, lists as SEA builds them (causal_per_batch, K=64, k=64,
    random A_hat): equal to the row kernel within one bf16 ulp (lse to fp32 rounding); prints both times (the module
    docstring predicts 0.5-0.8 ms against 2.6 ms at T = 65536)."""
    from harness.measure import time_cuda

    dev = "cuda"
    Bg, Hg, Dg, K, kk = 1, 16, 64, 64, 64
    for T in (16384, 65536):
        g = torch.Generator(device=dev).manual_seed(0)
        a_hat = torch.rand(Bg, Hg, T, K, device=dev, generator=g)        # [B, H, T, K] stand-in estimate
        mask = select_topk(a_hat, mode="causal_per_batch", k=kk, causal=True, backend="auto")   # [B, H, T, K]
        caps = selection_caps("causal_per_batch", B=Bg, H=Hg, T=T, K=K, k=kk, causal=True)
        rp, col = mask_to_csr(mask, k=kk, causal=True, caps=caps, backend="triton")
        del a_hat, mask
        q, k, v = (torch.randn(Bg, Hg, T, Dg, device=dev, generator=g, dtype=torch.bfloat16) for _ in range(3))
        scale = 1 / math.sqrt(Dg)
        n = rp[1:] - rp[:-1]
        out, lse = sr.sparse_rows_forward(q, k, v, rp, col, scale, want_lse=True)
        want, want_lse = ssa._triton_forward(q, k, v, rp, col, scale)
        assert_within_one_ulp(out, want)
        assert_same_lse(lse, want_lse)

        def ms(f):                                                   # the harness's timer (median, L2 flushed)
            return time_cuda(f, rep_ms=50).median_ms

        t_row = ms(lambda: ssa._triton_forward(q, k, v, rp, col, scale))
        t_blk = ms(lambda: sr.sparse_rows_forward(q, k, v, rp, col, scale))
        t_lse = ms(lambda: sr.sparse_rows_forward(q, k, v, rp, col, scale, want_lse=True))
        print(f"T={T}: nnz {int(rp[-1]) / 1e6:.1f}M over {n.numel()} rows ({float((n <= 8).float().mean()):.0%} "
              f"with <= 8 keys, max {int(n.max())}); row kernel {t_row:.3f} ms, row blocks {t_blk:.3f} ms "
              f"({t_lse:.3f} ms with lse), {t_row / t_blk:.1f}x")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gpu_small_all_dtypes_match_row_kernel(dtype):
    """The compiled paths on CUDA (fp32: ieee dots; bf16 / fp16: tensor-core dots with the 3-piece split of p):
    random lists (empty rows, a 45-key row, a query block) against the row kernel on the same GPU."""
    dev = "cuda"
    Tq, Tk, D = 37, 80, 24
    q, k, v = (x.to(dev) for x in make(dtype, Tq, Tk, HKV, D, seed=7))
    rp, col = (x.to(dev) for x in random_csr(Tq, Tk, 30, torch.Generator().manual_seed(8), row0=Tk - Tq, filler=4))
    out, lse = sr.sparse_rows_forward(q, k, v, rp, col, 0.2, want_lse=True)
    want, want_lse = ssa._triton_forward(q, k, v, rp, col, 0.2)
    assert_same_out(out.cpu(), want.cpu())
    assert_same_lse(lse.cpu(), want_lse.cpu())


MIX_CASES = [
    # dtype, Tq, Tk, hkv, D, causal block start, c_avg one broadcast row (bidirectional) or one per query row
    (torch.float32, 37, 37, HKV, 16, None, True),
    (torch.float32, 21, 50, HKV, 24, 29, False),
    (torch.bfloat16, 40, 40, 1, 16, None, True),
    (torch.bfloat16, 17, 17, HKV, 16, 0, False),
]


@pytest.mark.parametrize("dtype,Tq,Tk,hkv,D,row0,one_row", MIX_CASES)
def test_mix_epilogue(monkeypatch, dtype, Tq, Tk, hkv, D, row0, one_row):
    """mix=(s_prob, s_mix, c_avg): fp32 against a float64 restatement of (1 - s_mix) c_avg + s_mix s_prob c; 16-bit
    against kernels/sea_sparse_mix.py (the row kernel with the same epilogue: c kept in fp32) within one ulp; c_avg as
    one broadcast row [B, H, 1, D] or per query row from a non-contiguous view; the lse is still c's."""
    from kernels.sea_sparse_mix import sparse_attention_mix

    monkeypatch.setattr(sr, "ENTRIES_PER_STEP", 16)
    gen = torch.Generator().manual_seed(5)
    q, k, v = make(dtype, Tq, Tk, hkv, D, seed=4)
    rp, col = random_csr(Tq, Tk, 20, gen, row0=row0)
    s_prob = torch.rand(B, H, Tq, 1, generator=gen)
    s_mix = torch.rand(B, H, Tq, 1, generator=gen)
    if one_row:
        c_avg = torch.randn(B, H, 1, D, generator=gen)                   # [B, H, 1, D]
    else:
        c_avg = torch.randn(B, H, D, Tq, generator=gen).transpose(2, 3)  # [B, H, Tq, D], T stride 1
    scale = D ** -0.5
    out, lse = sr.sparse_rows_forward(q, k, v, rp, col, scale, want_lse=True, mix=(s_prob, s_mix, c_avg))
    assert out.dtype == dtype and out.shape == q.shape
    c64, lse64 = ref64(q, k, v, rp, col, scale)
    assert_same_lse(lse, lse64.float())
    if dtype == torch.float32:
        want = (1 - s_mix.double()) * c_avg.double() + s_mix.double() * s_prob.double() * c64
        torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)
    else:
        assert_within_one_ulp(out, sparse_attention_mix(q, k, v, rp, col, scale, s_prob, s_mix, c_avg))
    with pytest.raises(ValueError, match="s_mix must be float32"):
        sr.sparse_rows_forward(q, k, v, rp, col, scale, mix=(s_prob, s_mix[:, :, :1], c_avg))
