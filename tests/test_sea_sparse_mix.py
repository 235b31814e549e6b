"""Fused SEA sparse attention + mix (kernels/sea_sparse_mix.py, Triton under TRITON_INTERPRET=1 on CPU) against the
two-step path (row kernel, then the layer's fp32 mix) and a float64 re-statement."""
import math

import pytest
import torch

import kernels.sea_sparse_attention as ssa
import kernels.sea_sparse_mix as ssm
from methods.sea.interp import mask_to_csr
from methods.sea.topk import select_topk, selection_caps

B, H, HKV, D = 2, 4, 2, 16


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(ssa, "POISON_OUTPUTS", True)
    monkeypatch.setattr(ssm, "POISON_OUTPUTS", True)


def random_csr(Tq, Tk, W, gen, *, row0=None):
    """Random CSR lists for B*H*Tq rows over keys 0..Tk-1 (row0 set: causal, row t sees keys 0..row0+t): distinct
    keys in random order, 0..W per row; row (0, 0, 2) empty, row (1, 3, 1) holds min(span, 45) keys (> BLOCK_N)."""
    cols, counts = [], []
    for b in range(B):
        for h in range(H):
            for t in range(Tq):
                span = Tk if row0 is None else row0 + t + 1
                n = int(torch.randint(0, min(W, span) + 1, (1,), generator=gen))
                if (b, h, t) == (0, 0, 2):
                    n = 0
                if (b, h, t) == (1, 3, 1):
                    n = min(span, 45)
                cols.append(torch.randperm(span, generator=gen)[:n])
                counts.append(n)
    row_ptr = torch.zeros(B * H * Tq + 1, dtype=torch.int64)
    row_ptr[1:] = torch.tensor(counts).cumsum(0)
    return row_ptr, torch.cat(cols).int()


def make(dtype, Tq, Tk, hkv, seed, *, broadcast):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Tq, D, generator=gen).to(dtype)
    k = torch.randn(B, hkv, Tk, D, generator=gen).to(dtype)
    v = torch.randn(B, hkv, Tk, D, generator=gen).to(dtype)
    s_prob = torch.rand(B, H, Tq, 1, generator=gen) * 2                  # [B, H, Tq, 1]
    s_mix = torch.rand(B, H, Tq, 1, generator=gen)                       # [B, H, Tq, 1]
    c_avg = torch.randn(B, H, 1 if broadcast else Tq, D, generator=gen)  # [B, H, 1 or Tq, D]
    return q, k, v, s_prob, s_mix, c_avg


def assert_one_rounding(out, want32):
    """out (q's dtype) is want32 (fp32) rounded once: to nearest even, or toward zero for bf16 under the Triton
    interpreter (which truncates fp32 -> bf16 whatever the rounding mode; CUDA rounds to nearest even)."""
    near = want32.to(out.dtype)
    ok = out == near
    if out.dtype == torch.bfloat16:
        trunc = (want32.contiguous().view(torch.int32) & ~0xFFFF).view(torch.float32).to(torch.bfloat16)
        ok |= out == trunc
    assert ok.all(), f"{int((~ok).sum())} elements are not one rounding of the fp32 mix"


def two_step(q, k, v, rp, col, scale, s_prob, s_mix, c_avg):
    """What methods/sea/layer.py does today: the row kernel's c (in q's dtype), then the fp32 mix and cast."""
    c, ran = ssa.sparse_attention_block(q, k, v, rp, col, scale, backend="triton")   # [B, H, Tq, D]
    assert ran == "triton"
    return torch.addcmul((1 - s_mix) * c_avg, s_mix * s_prob, c.float()).to(q.dtype)


def ref64(q, k, v, rp, col, scale, s_prob, s_mix, c_avg):
    """Float64 re-statement with plain loops over rows and matmuls."""
    Bq, Hq, Tq, Dq = q.shape
    grp = Hq // k.shape[1]
    out = torch.empty(Bq, Hq, Tq, Dq, dtype=torch.float64)
    ca = c_avg.double().expand(Bq, Hq, Tq, Dq)                           # [B, H, Tq, D]
    for b in range(Bq):
        for h in range(Hq):
            for t in range(Tq):
                r = (b * Hq + h) * Tq + t
                j = col[int(rp[r]):int(rp[r + 1])].long()
                kk, vv = k[b, h // grp, j].double(), v[b, h // grp, j].double()   # [n, D]
                if j.numel():
                    p = torch.softmax(kk @ q[b, h, t].double() * scale, 0)   # [n]
                    c = p @ vv                                            # [D]
                else:
                    c = torch.zeros(Dq, dtype=torch.float64)
                sm, sp = float(s_mix[b, h, t, 0]), float(s_prob[b, h, t, 0])
                out[b, h, t] = (1 - sm) * ca[b, h, t] + sm * sp * c
    return out


CASES = [
    # dtype, Tq, Tk, hkv, broadcast c_avg, causal block (row0)
    (torch.float32, 13, 13, HKV, False, 0),
    (torch.bfloat16, 11, 48, HKV, False, 37),
    (torch.bfloat16, 9, 48, H, True, None),
    (torch.float16, 7, 20, 1, True, None),
]


@pytest.mark.parametrize("dtype,Tq,Tk,hkv,broadcast,row0", CASES)
def test_matches_two_step_path(dtype, Tq, Tk, hkv, broadcast, row0):
    q, k, v, sp, sm, ca = make(dtype, Tq, Tk, hkv, seed=Tq, broadcast=broadcast)
    rp, col = random_csr(Tq, Tk, 40, torch.Generator().manual_seed(Tk), row0=row0)
    scale = 1 / math.sqrt(D)
    out = ssm.sparse_attention_mix(q, k, v, rp, col, scale, sp, sm, ca)
    assert out.dtype == dtype and out.shape == (B, H, Tq, D)
    assert not torch.isnan(out).any()
    # the same mix with c kept in fp32 (the row kernel on the fp32 copies of the inputs: identical c up to
    # summation order): the fused output rounds once to q's dtype, so it matches within that dtype's rounding
    c32, _ = ssa.sparse_attention_block(q.float(), k.float(), v.float(), rp, col, scale, backend="triton")
    want32 = torch.addcmul((1 - sm) * ca, sm * sp, c32).to(dtype)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-3, rtol=8e-3)
    torch.testing.assert_close(out.float(), want32.float(), **tol)
    # today's two-step path rounds c to q's dtype before the mix: one more rounding of s_mix s_prob c (<= 2 |c|)
    want = two_step(q, k, v, rp, col, scale, sp, sm, ca)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(out.float(), want.float(), **tol)
    # the empty row is the average context alone
    assert_one_rounding(out[0, 0, 2], (1 - sm[0, 0, 2]) * ca[0, 0, min(2, ca.shape[2] - 1)])


def test_float64_restatement_fp32():
    Tq, Tk = 10, 48
    q, k, v, sp, sm, ca = make(torch.float32, Tq, Tk, HKV, seed=3, broadcast=False)
    rp, col = random_csr(Tq, Tk, 40, torch.Generator().manual_seed(4), row0=Tk - Tq)
    out = ssm.sparse_attention_mix(q, k, v, rp, col, 0.37, sp, sm, ca)
    want = ref64(q, k, v, rp, col, 0.37, sp, sm, ca)
    assert (rp[1:] - rp[:-1]).max() > ssa.BLOCK_N                        # one row takes two loop blocks
    torch.testing.assert_close(out.double(), want, atol=2e-6, rtol=2e-6)


def test_sea_helpers_causal_block_with_capacity_lists():
    """Lists as the layer builds them for a causal query block: mask_to_csr with host caps (col longer than
    row_ptr[-1]), rows row0 .. row0 + Tq - 1 against Tk = row0 + Tq keys; causal c_avg = cumulative mean of v."""
    Tq, row0, K, kk = 8, 24, 8, 4
    Tk = row0 + Tq
    gen = torch.Generator().manual_seed(11)
    q, k, v, sp, sm, _ = make(torch.bfloat16, Tq, Tk, HKV, seed=12, broadcast=False)
    probs = torch.rand(B, H, Tq, K, generator=gen)                       # [B, H, Tq, K] stand-in for A_hat
    mask = select_topk(probs, mode="causal_per_batch", k=kk, causal=True, row0=row0)   # [B, H, Tq, K] bool
    caps = selection_caps("causal_per_batch", B=B, H=H, T=Tq, K=K, k=kk, causal=True, row0=row0)
    rp, col = mask_to_csr(mask, k=kk, causal=True, caps=caps, row0=row0)
    assert col.numel() > int(rp[-1])                                     # capacity layout: filler tail
    vr = v.float().repeat_interleave(H // HKV, 1)                        # [B, H, Tk, D]
    ca = (vr.cumsum(2) / torch.arange(1, Tk + 1)[:, None])[:, :, row0:]  # [B, H, Tq, D]
    out = ssm.sparse_attention_mix(q, k, v, rp, col, 0.25, sp, sm, ca)
    want = two_step(q, k, v, rp, col, 0.25, sp, sm, ca)
    torch.testing.assert_close(out.float(), want.float(), atol=2e-2, rtol=2e-2)
    want64 = ref64(q, k, v, rp, col, 0.25, sp, sm, ca)
    torch.testing.assert_close(out.double(), want64, atol=1e-3, rtol=8e-3)   # one bf16 rounding


def test_strided_inputs_and_out_slice():
    """c_avg as a non-contiguous view, an expanded (stride 0) broadcast row, scalers as views, and `out` a slice
    of a larger NaN-filled tensor with D not innermost: only the slice is written."""
    Tq, Tk = 6, 6
    q, k, v, sp, sm, ca = make(torch.float32, Tq, Tk, HKV, seed=21, broadcast=False)
    rp, col = random_csr(Tq, Tk, 6, torch.Generator().manual_seed(22))
    want = ref64(q, k, v, rp, col, 0.5, sp, sm, ca)
    ca_t = ca.transpose(2, 3).contiguous().transpose(2, 3)              # [B, H, Tq, D], D stride Tq
    sp_v = torch.cat([sp, sp], -1)[..., :1]                              # [B, H, Tq, 1], T stride 2
    full = torch.full((B, H, D, Tq + 5), float("nan")).transpose(2, 3)  # [B, H, Tq + 5, D], D stride Tq + 5
    got = ssm.sparse_attention_mix(q, k, v, rp, col, 0.5, sp_v, sm, ca_t, out=full[:, :, 3:3 + Tq])
    assert got.data_ptr() == full[:, :, 3:].data_ptr()
    torch.testing.assert_close(full[:, :, 3:3 + Tq].double(), want, atol=2e-6, rtol=2e-6)
    assert torch.isnan(full[:, :, :3]).all() and torch.isnan(full[:, :, 3 + Tq:]).all()
    row = torch.randn(B, H, 1, D)                                        # [B, H, 1, D]
    a = ssm.sparse_attention_mix(q, k, v, rp, col, 0.5, sp, sm, row.expand(B, H, Tq, D))   # stride 0 on T
    b = ssm.sparse_attention_mix(q, k, v, rp, col, 0.5, sp, sm, row)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(a.double(), ref64(q, k, v, rp, col, 0.5, sp, sm, row), atol=2e-6, rtol=2e-6)


def test_poisoned_output_is_overwritten():
    """With POISON_OUTPUTS the fresh buffer starts as NaN: every row, empty ones included, must be written."""
    Tq = 5
    q, k, v, sp, sm, ca = make(torch.bfloat16, Tq, Tq, HKV, seed=31, broadcast=True)
    rp = torch.zeros(B * H * Tq + 1, dtype=torch.int64)                  # every row empty
    col = torch.zeros(3, dtype=torch.int32)
    assert torch.isnan(ssm.fresh((2,), torch.bfloat16, "cpu", poison=ssm.POISON_OUTPUTS)).all()
    out = ssm.sparse_attention_mix(q, k, v, rp, col, 0.3, sp, sm, ca)
    assert_one_rounding(out, ((1 - sm) * ca).expand(B, H, Tq, D))


def _args(**over):
    Tq, Tk = 4, 6
    q, k, v, sp, sm, ca = make(torch.float32, Tq, Tk, HKV, seed=41, broadcast=False)
    rp, col = random_csr(Tq, Tk, 3, torch.Generator().manual_seed(42))
    a = dict(q=q, k=k, v=v, row_ptr=rp, col=col, scale=0.5, s_prob=sp, s_mix=sm, c_avg=ca)
    a.update(over)
    return a


def test_refuses_grad():
    a = _args()
    a["c_avg"] = a["c_avg"].requires_grad_()
    with pytest.raises(RuntimeError, match="forward-only"):
        ssm.sparse_attention_mix(**a)
    with torch.no_grad():                                                # no grad mode: fine
        assert not torch.isnan(ssm.sparse_attention_mix(**a)).any()


@pytest.mark.parametrize("bad,match", [
    (lambda a: dict(k=a["k"].half(), v=a["v"].half()), "one dtype"),
    (lambda a: dict(q=a["q"].double(), k=a["k"].double(), v=a["v"].double()), "dtype"),
    (lambda a: dict(s_prob=a["s_prob"][..., 0]), "s_prob"),
    (lambda a: dict(s_mix=a["s_mix"].bfloat16()), "s_mix"),
    (lambda a: dict(c_avg=a["c_avg"].bfloat16()), "c_avg"),
    (lambda a: dict(c_avg=a["c_avg"][:, :, :2]), "c_avg"),
    (lambda a: dict(k=a["k"][:, :, :3], v=a["v"][:, :, :3]), "as many keys"),
    (lambda a: dict(k=a["k"].repeat(1, 3, 1, 1)[:, :3], v=a["v"].repeat(1, 3, 1, 1)[:, :3]), "multiple"),
    (lambda a: dict(row_ptr=a["row_ptr"][:-1]), "row_ptr"),
    (lambda a: dict(col=a["col"].float()), "integer"),
])
def test_refuses_mismatch(bad, match):
    a = _args()
    with pytest.raises(ValueError, match=match):
        ssm.sparse_attention_mix(**_args(**bad(a)))


def test_mix_usable():
    assert ssm.mix_usable(torch.device("cpu")) == (ssm.triton is not None)   # conftest sets TRITON_INTERPRET=1


@pytest.mark.gpu
def test_gpu_real_size_matches_two_step():
    """B=1, H=16, T=16384, D=64, bf16, 64 distinct sorted random keys per row, causal c_avg; the whole sequence
    and a query block of the last 4096 rows against all keys."""
    dev = "cuda"
    Bg, Hg, T, Dg, nk = 1, 16, 16384, 64, 64
    gen = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(Bg, Hg, T, Dg, device=dev, generator=gen, dtype=torch.bfloat16)
    k = torch.randn(Bg, Hg, T, Dg, device=dev, generator=gen, dtype=torch.bfloat16)
    v = torch.randn(Bg, Hg, T, Dg, device=dev, generator=gen, dtype=torch.bfloat16)
    sp = torch.rand(Bg, Hg, T, 1, device=dev, generator=gen) * 2
    sm = torch.rand(Bg, Hg, T, 1, device=dev, generator=gen)
    ca = v.float().cumsum(2) / torch.arange(1, T + 1, device=dev)[:, None]   # [B, H, T, D]
    rows = Bg * Hg * T
    # distinct sorted keys: sorted draws from 0..T-nk-1 plus 0..nk-1 are strictly increasing and < T
    col = (torch.randint(0, T - nk, (rows, nk), device=dev, generator=gen).sort(-1).values
           + torch.arange(nk, device=dev)).int().reshape(-1)
    rp = torch.arange(rows + 1, device=dev, dtype=torch.int64) * nk
    scale = 1 / math.sqrt(Dg)
    out = ssm.sparse_attention_mix(q, k, v, rp, col, scale, sp, sm, ca)
    want = two_step(q, k, v, rp, col, scale, sp, sm, ca)
    c32, _ = ssa.sparse_attention_block(q.float(), k.float(), v.float(), rp, col, scale, backend="triton")
    want32 = torch.addcmul((1 - sm) * ca, sm * sp, c32).to(torch.bfloat16)
    torch.testing.assert_close(out.float(), want.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(out.float(), want32.float(), atol=1e-3, rtol=8e-3)
    # a query block: rows s .. T-1 against all T keys (the same lists, restricted to the block's rows)
    s = T - 4096
    sel = torch.arange(Bg * Hg, device=dev)[:, None] * T + torch.arange(s, T, device=dev)   # [B*H, Tb] row ids
    col_b = col.view(rows, nk)[sel.reshape(-1)].reshape(-1)
    rp_b = torch.arange(sel.numel() + 1, device=dev, dtype=torch.int64) * nk
    out_b = ssm.sparse_attention_mix(q[:, :, s:], k, v, rp_b, col_b, scale, sp[:, :, s:], sm[:, :, s:], ca[:, :, s:])
    torch.testing.assert_close(out_b, out[:, :, s:], atol=0, rtol=0)
    # timing (informational): fused vs row kernel + mix
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
    for _ in range(3):
        ssm.sparse_attention_mix(q, k, v, rp, col, scale, sp, sm, ca)
        two_step(q, k, v, rp, col, scale, sp, sm, ca)
    ev[0].record()
    for _ in range(10):
        ssm.sparse_attention_mix(q, k, v, rp, col, scale, sp, sm, ca)
    ev[1].record()
    for _ in range(10):
        two_step(q, k, v, rp, col, scale, sp, sm, ca)
    ev[2].record()
    torch.cuda.synchronize()
    print(f"fused {ev[0].elapsed_time(ev[1]) / 10:.3f} ms, two-step {ev[1].elapsed_time(ev[2]) / 10:.3f} ms")
