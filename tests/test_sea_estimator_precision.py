"""sea.estimator_precision: the precision of the products inside the estimator's Triton kernels reaches the fused
front and the encoder kernel (the decoder kernel keeps its default: one-pass TF32 measured slower there), the impl
string names it, and tf32 changes the estimate by a little (under the interpreter only the fused front's bf16
feature operands are visible: its products are exact)."""
from __future__ import annotations

import pytest
import torch

import kernels.sea_decoder as dk
import kernels.sea_encoder as ek
import kernels.sea_favor_encoder as fe
from methods.base import Problem, get

B, H, T, D = 1, 2, 40, 16


def build(**opts):
    M = get("sea")
    base = dict(k=3, K=16, backend="torch", max_len=64, decoder_backend="triton", performer_dtype="bf16")
    cfg = M.resolve_config({key: str(val) for key, val in dict(base, **opts).items()})
    prob = Problem(B, H, H, T, D, dtype="fp32", causal=True, device="cpu")
    assert M.supports(prob, cfg) == []
    return M.build(cfg, prob, seed=3)


def spy(monkeypatch, module, name, seen):
    real = getattr(module, name)

    def wrapped(*args, **kw):
        seen.append((name, kw.get("precision")))
        return real(*args, **kw)
    monkeypatch.setattr(module, name, wrapped)


@pytest.mark.parametrize("front", ["fused", "torch"])
def test_precision_reaches_every_estimator_kernel(monkeypatch, front):
    seen = []
    spy(monkeypatch, fe, "favor_encoder_forward", seen)
    spy(monkeypatch, ek, "encoder_forward", seen)
    spy(monkeypatch, dk, "decoder_forward", seen)
    extra = {} if front == "fused" else dict(encoder_backend="triton")
    fast, exact = build(performer_backend=front, estimator_precision="tf32", **extra), \
        build(performer_backend=front, **extra)
    exact.load_state_dict(fast.state_dict())
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    with torch.no_grad():
        a = fast(q, k, v, causal=True)
        names = {n for n, _ in seen}
        assert dict(seen) == {**{n: "tf32" for n in names}, "decoder_forward": None}, seen
        seen.clear()
        b = exact(q, k, v, causal=True)
        assert {p for _, p in seen} == {None}, seen
    want = {"decoder_forward", "favor_encoder_forward" if front == "fused" else "encoder_forward"}
    assert names == want
    assert "estimator_precision=tf32" in fast.impl and "estimator_precision" not in exact.impl
    assert torch.isfinite(a).all()
    if front == "fused":     # bf16 feature operands: a visible, small change of the estimate (the output itself
        la, lb = fast.last_aux["logits"], exact.last_aux["logits"]   # moves more: near-tied cells swap in top-k)
        diff = ((la - lb).norm() / lb.norm()).item()
        assert 0 < diff < 1e-2, diff


def test_bad_precision_refused():
    M = get("sea")
    with pytest.raises(Exception, match="estimator_precision"):
        M.resolve_config({"estimator_precision": "fp16"})


def test_auto_front_is_split_on_cpu_and_fused_only_for_tf32(monkeypatch):
    """performer_backend=auto takes the fused front only for CUDA calls with estimator_precision=tf32: on the CPU
    (interpreter or not) the split path runs; the decision itself is checked with a CUDA-looking query."""
    mod = build(performer_backend="auto", estimator_precision="tf32")
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    with torch.no_grad():
        mod(q, k, v, causal=True)
    assert "performer=fused" not in mod.impl
    est = mod.estimator

    class CudaLike:                                  # only .is_cuda and .requires_grad are read
        is_cuda, requires_grad = True, False
    cq = CudaLike()
    with torch.no_grad():
        assert est.uses_fused_front(cq, cq, cq, None)
        assert not est.uses_fused_front(cq, cq, cq, torch.ones(B, T, dtype=torch.bool))   # padding mask
    assert not build(performer_backend="auto").estimator.uses_fused_front(cq, cq, cq, None)   # fp32 precision
    assert not build(performer_backend="triton", estimator_precision="tf32").estimator.uses_fused_front(
        cq, cq, cq, None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_auto_front_with_tf32_is_fused():
    M = get("sea")
    cfg = M.resolve_config(dict(performer_dtype="bf16", estimator_precision="tf32", max_len="2048"))
    mod = M.build(cfg, Problem(1, 4, 4, 2048, 64, dtype="bf16", causal=True, device="cuda"), seed=0)
    q, k, v = (torch.randn(1, 4, 2048, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with torch.no_grad():
        out = mod(q, k, v, causal=True)
    assert "performer=fused" in mod.impl and torch.isfinite(out).all(), mod.impl


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("compile_mode", ["none", "estimator"])
def test_gpu_decoder_head_in_the_front(monkeypatch, compile_mode):
    """SEA fast with estimator_dtype=bf16 on CUDA (eager, and compiled by inductor): the fused front computes the
    decoder's head and says so in impl; the estimate equals the one with the front writing z (FUSED_HEAD off) up
    to the head's bf16 rounding flips, and A_hat (from the estimator's graph) is the softmax of the logits."""
    import methods.sea.estimator as est_mod

    M = get("sea")
    cfg = M.resolve_config(dict(performer_dtype="bf16", estimator_precision="tf32", estimator_dtype="bf16",
                                compile=compile_mode, max_len="4096"))
    prob = Problem(1, 4, 4, 4096, 64, dtype="bf16", causal=True, device="cuda")
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 4, 4096, 64, generator=g).to(torch.bfloat16).cuda() for _ in range(3))
    got = {}
    for fused_head in (True, False):
        monkeypatch.setattr(est_mod, "FUSED_HEAD", fused_head)
        mod = M.build(cfg, prob, seed=0)
        with torch.no_grad():
            out = mod(q, k, v, causal=True)
            logits, a_hat, _, _ = mod.estimator(q, k, v, valid=None, probs=True)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(a_hat, torch.softmax(logits, dim=-1), rtol=1e-5, atol=1e-7)
        got[fused_head] = logits, mod.impl
    assert "decoder=head-fused" in got[True][1] and "head-fused" not in got[False][1], got[True][1]
    err = (got[True][0] - got[False][0]).abs()
    print(f"compile={compile_mode}: logits max abs diff {err.max().item():.3g}, mean {err.mean().item():.3g}")
    assert err.max().item() < 0.1 and err.mean().item() < 2e-3


def test_precision_reaches_the_bidirectional_performer_kernel(monkeypatch):
    """Bidirectional SEA with performer_backend=triton (kernels/favor_dense.py, interpreted here): tf32 reaches the
    kernel (the interpreter multiplies exactly, so only the plumbing is visible on the CPU)."""
    import kernels.favor_dense as fd

    seen = []
    spy(monkeypatch, fd, "favor_softmax_dense", seen)
    M = get("sea")
    cfg = M.resolve_config(dict(k="3", K="16", backend="torch", performer_backend="triton",
                                estimator_precision="tf32"))
    prob = Problem(B, H, H, T, D, dtype="fp32", causal=False, device="cpu")
    assert M.supports(prob, cfg) == []
    mod = M.build(cfg, prob, seed=3)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    with torch.no_grad():
        out = mod(q, k, v, causal=False)
    assert seen == [("favor_softmax_dense", "tf32")] and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="precision"):
        fd.favor_softmax_dense(q, k, v, mod.estimator.proj, precision="fp16")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bf16_performer_values_built_in_bf16(monkeypatch, backend):
    """Bidirectional SEA with performer_dtype=bf16 builds the Performer's values [identity ; v] in bf16
    (estimator.VALS_BF16): they reach the Performer in bf16; the torch path (which rounds them to bf16 for its
    products anyway) gives the same estimate bit for bit, the fused kernel (interpreted) within its feat_eps term's
    rounding."""
    import kernels.favor_dense as fd
    import methods.sea.estimator as est
    import methods.sea.favor as favor

    seen = []
    real = favor.favor_attention

    def spy_vals(q, k, v, *a, **kw):
        seen.append(v.dtype)
        return real(q, k, v, *a, **kw)

    monkeypatch.setattr(est, "favor_attention", spy_vals)
    monkeypatch.setattr(fd, "POISON_OUTPUTS", True)
    M = get("sea")
    cfg = M.resolve_config(dict(k="3", K="16", backend="torch", performer_backend=backend, performer_dtype="bf16"))
    prob = Problem(B, H, H, T, D, dtype="fp32", causal=False, device="cpu")
    mod = M.build(cfg, prob, seed=3)
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    got = {}
    for flag in (True, False):
        monkeypatch.setattr(est, "VALS_BF16", flag)
        with torch.no_grad():
            got[flag] = mod.estimator(q, k, v, valid=None)[0]
    assert seen == [torch.bfloat16, torch.float32]
    if backend == "torch":
        assert torch.equal(got[True], got[False])
    else:
        torch.testing.assert_close(got[True], got[False], atol=1e-4, rtol=1e-4)


def flag_state():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("precision,inside", [("tf32", (True, True)), ("fp32", (False, False))])
@pytest.mark.parametrize("compile_mode", ["none", "estimator"])
def test_torch_operations_take_tf32_only_under_tf32(monkeypatch, precision, inside, compile_mode):
    """The bidirectional decoder's row projection and convolutions (PyTorch) run with TF32 allowed under
    estimator_precision=tf32 and in the caller's setting (here: off, as the harness worker sets it) under fp32;
    the caller's flags are back after the call, also after an error. Checked from inside the decoder module, so
    a scope placed around the wrong call (or not restored) fails; compiled estimators included (aot_eager)."""
    import methods.sea.estimator as est_mod

    monkeypatch.setattr(est_mod, "COMPILE_BACKEND", "aot_eager")
    old = flag_state()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        check_flags(precision, inside, compile_mode, monkeypatch)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def check_flags(precision, inside, compile_mode, monkeypatch):
    M = get("sea")
    cfg = M.resolve_config(dict(k="3", K="16", backend="torch", max_len="64", estimator_precision=precision,
                                compile=compile_mode))
    prob = Problem(B, H, H, T, D, dtype="fp32", causal=False, device="cpu")
    mod = M.build(cfg, prob, seed=3)
    seen = []
    mod.estimator.dec.conv2.register_forward_pre_hook(lambda m, args: seen.append(flag_state()))
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    with torch.no_grad():
        mod(q, k, v, causal=False)
    if compile_mode == "none":                      # (a compiled module's hooks run at trace time only)
        assert seen == [inside]
    assert flag_state() == (False, False)
    if compile_mode != "none":
        return

    def boom(*args, **kwargs):
        assert flag_state() == inside
        raise RuntimeError("boom")
    monkeypatch.setattr(mod.estimator.dec, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad():
        mod(q, k, v, causal=False)
    assert flag_state() == (False, False)
