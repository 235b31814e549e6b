"""SEA as a registered method: exactness of the oracle limit, causality, mixing, options, dtypes, checkpoints."""
import math

import pytest
import torch

from kernels.sea_sparse_attention_ref import sparse_attention_ref
from methods.base import MethodConfigError, Problem, get
from methods.exact import softmax_attention_probs

B, H, HKV, T, D = 2, 4, 2, 37, 16


def qkv(seed=0, dtype=torch.float32, T=T, grad=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g).to(dtype)
    k = torch.randn(B, HKV, T, D, generator=g).to(dtype)
    v = torch.randn(B, HKV, T, D, generator=g).to(dtype)
    if grad:
        for t in (q, k, v):
            t.requires_grad_()
    return q, k, v


def build(name="sea", causal=True, seed=0, T=T, dtype="fp32", **opts):
    M = get(name)
    return M.build(M.resolve_config(opts), Problem(B, H, HKV, T, D, dtype=dtype, causal=causal), seed=seed)


def padding():
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 29:] = False
    return valid


def exact_out(q, k, v, causal, valid=None):
    p = softmax_attention_probs(q.double(), k.double(), causal=causal, key_padding_mask=valid)   # [B, H, T, T]
    return p @ v.double().repeat_interleave(H // HKV, 1)


@pytest.mark.parametrize("causal", [True, False])
def test_oracle_with_every_key_selected_equals_exact(causal):
    valid = None if causal else padding()
    m = build("sea-oracle", causal=causal, k=T, s_prob=1.0, s_mix=1.0, backend="triton")
    q, k, v = qkv(1)
    out = m(q, k, v, causal=causal, key_padding_mask=valid)
    want = exact_out(q, k, v, causal, valid)
    if valid is not None:
        want = want * valid[:, None, :, None]
    assert "estimator=oracle" in m.impl and "sparse=triton" in m.impl
    torch.testing.assert_close(out.double(), want, atol=2e-5, rtol=1e-5)


def test_oracle_topk_follows_true_attention():
    # with a small budget the oracle keeps the keys of highest true attention mass: its attention KL to
    # the exact distribution must beat the untrained estimator's on the same inputs
    q, k, v = qkv(2)
    q = q * 3
    rows = torch.arange(T)
    kl = {}
    for name in ("sea-oracle", "sea"):
        m = build(name, causal=True, k=2, K=16, s_prob=1.0, s_mix=1.0, backend="torch")
        p = m.attention_probs(q, k, v, causal=True, rows=rows).double()
        e = softmax_attention_probs(q.double(), k.double(), causal=True)
        kl[name] = (e * (e.clamp_min(1e-30).log() - p.clamp_min(1e-30).log())).sum(-1).mean().item()
    assert kl["sea-oracle"] < kl["sea"]


def test_causality_canary():
    m = build("sea", causal=True, k=4, K=16, backend="triton")
    q, k, v = qkv(3)
    out = m(q, k, v, causal=True)
    t0 = 20
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t0 + 1:] = torch.randn_like(x[:, :, t0 + 1:]) * 4
    out2 = m(q2, k2, v2, causal=True)
    assert torch.equal(out[:, :, :t0 + 1], out2[:, :, :t0 + 1])
    assert not torch.equal(out[:, :, t0 + 1:], out2[:, :, t0 + 1:])


@pytest.mark.parametrize("causal", [True, False])
def test_output_is_mix_of_sparse_and_average_context(causal):
    valid = None if causal else padding()
    m = build("sea", causal=causal, k=3, K=16, backend="torch")
    q, k, v = qkv(4)
    out = m(q, k, v, causal=causal, key_padding_mask=valid)
    a = m.last_aux
    c = sparse_attention_ref(q, k, v, a["row_ptr"], a["col"], 1 / math.sqrt(D))      # float64 [B, H, T, D]
    vr = v.double().repeat_interleave(H // HKV, 1)
    if causal:
        c_avg = torch.stack([vr[:, :, :t + 1].mean(2) for t in range(T)], 2)        # cumulative mean
    else:
        c_avg = torch.zeros(B, H, 1, D, dtype=torch.float64)
        K = 16
        for b in range(B):
            pos = [i for i in range(T) if valid[b, i]]
            L = len(pos)
            col = a["a_hat"][b].double()[:, pos].mean(1)                            # [H, K] over valid rows
            for c_ in range(K):
                lo, hi = math.floor(c_ * L / K + 0.5), math.floor((c_ + 1) * L / K + 0.5)
                for j in pos[lo:hi]:
                    c_avg[b, :, 0] += (col[:, c_] / (hi - lo))[:, None] * vr[b, :, j]
    sp, sm = a["s_prob"].double(), a["s_mix"].double()
    want = sm * sp * c + (1 - sm) * c_avg
    if valid is not None:
        want = want * valid[:, None, :, None]
    torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=1e-5)
    for key in ("logits", "mask", "c_sea", "s_prob", "s_mix"):
        assert key in a
    assert a["logits"].shape == (B, H, T, 16) and a["mask"].dtype == torch.bool


@pytest.mark.parametrize("causal", [True, False])
def test_attention_probs_reproduce_forward(causal):
    m = build("sea", causal=causal, k=3, K=16, backend="torch")
    q, k, v = qkv(5)
    out = m(q, k, v, causal=causal)
    rows = torch.tensor([0, 7, 36])
    p = m.attention_probs(q, k, v, causal=causal, rows=rows)                   # [B, H, 3, T]
    assert p.shape == (B, H, 3, T)
    got = p.double() @ v.double().repeat_interleave(H // HKV, 1)
    torch.testing.assert_close(got, out[:, :, rows].double(), atol=1e-5, rtol=1e-5)


def test_backward_reaches_inputs_and_estimator():
    m = build("sea", causal=False, k=3, K=16, backend="triton")
    q, k, v = qkv(6, grad=True)
    out = m(q, k, v, causal=False, key_padding_mask=padding())
    out.square().sum().backward()
    for x in (q, k, v):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert m.estimator.scaler.weight.grad.abs().sum() > 0
    assert m.estimator.dec.row.weight.grad.abs().sum() > 0                # via C_avg (bidirectional)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    m = build("sea", causal=True, k=3, K=16, backend="torch")
    q, k, v = qkv(7, dtype=dtype)
    out = m(q, k, v, causal=True)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert m.last_aux["logits"].dtype == torch.float32                   # estimator in fp32
    ref = m(q.float(), k.float(), v.float(), causal=True)
    assert (out.float() - ref).abs().max() < 0.05


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_inputs_rejected(bad):
    m = build("sea", causal=True, k=3, K=16)
    q, k, v = qkv(8)
    v[1, 0, 5, 2] = bad
    with pytest.raises(ValueError, match="non-finite"):
        m(q, k, v, causal=True)


def test_non_finite_check_is_resolved_after_the_work_is_queued(monkeypatch):
    """The whole-sequence forward resolves its finite check at the end (PendingFiniteCheck: on CUDA the host then
    waits only for the check's own event): a bad call raises and leaves no aux behind, the next good call runs;
    when a later stage fails on bad inputs, the non-finite error is the one raised."""
    from methods.sea import layer as sea_layer

    m = build("sea", causal=True, k=3, K=16)
    q, k, v = qkv(8)
    m(q, k, v, causal=True)
    assert m.last_aux and m._pending_check is None
    bad = q.clone()
    bad[0, 1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="q contains non-finite"):
        m(bad, k, v, causal=True)
    assert m.last_aux == {} and m._pending_check is None
    assert torch.isfinite(m(q, k, v, causal=True)).all()

    def broken(*args, **kwargs):
        raise RuntimeError("a later stage failed")

    monkeypatch.setattr(sea_layer.SEAAttention, "stage_topk", broken)
    with pytest.raises(ValueError, match="q contains non-finite"):
        m(bad, k, v, causal=True)
    with pytest.raises(RuntimeError, match="a later stage failed"):
        m(q, k, v, causal=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_non_finite_check_resolves_at_the_end():
    """On CUDA the pending check (pinned flags behind an event) raises for a NaN key and the next call runs."""
    M = get("sea")
    T2 = 2048
    mod = M.build(M.resolve_config({}), Problem(1, 4, 4, T2, 64, dtype="bf16", causal=True, device="cuda"), seed=0)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 4, T2, 64, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    bad = k.clone()
    bad[0, 2, 100, 5] = float("nan")
    with torch.no_grad():
        want = mod(q, k, v, causal=True)
        with pytest.raises(ValueError, match="k contains non-finite"):
            mod(q, bad, v, causal=True)
        torch.testing.assert_close(mod(q, k, v, causal=True), want, rtol=0, atol=0)
    assert torch.isfinite(want).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_finite_flags_match_isfinite(dtype):
    from methods.sea.layer import finite_flags

    g = torch.Generator().manual_seed(3)
    x = (torch.randn(3, 5, 7, generator=g) * 100).to(dtype)
    assert finite_flags(x, x[:, :0], x.transpose(0, 2)).tolist() == [True] * 3   # empty; non-contiguous
    for bad in (float("nan"), float("inf"), float("-inf")):
        for where in ((0, 0, 0), (2, 4, 6), (1, 2, 3)):
            y = x.clone()
            y[where] = bad
            assert finite_flags(x, y, y.transpose(0, 2)).tolist() == [True, False, False]
            assert torch.isfinite(y).all().item() is False


def test_options_defaults_and_refusals():
    M = get("sea")
    m = build("sea", causal=True)
    assert (m.k, m.K, m.mode) == (64, 64, "causal_per_batch") and m.estimator.nb_features == int(D * math.log(D) / 8)
    m = build("sea", causal=False)
    assert (m.k, m.K, m.mode) == (13, 128, "per_batch") and m.estimator.nb_features == int(D * math.log(D))
    assert "estimator=untrained" in m.impl
    with pytest.raises(MethodConfigError):
        M.resolve_config({"K": "6"})
    with pytest.raises(MethodConfigError):
        M.resolve_config({"mode": "per_row"})
    with pytest.raises(MethodConfigError):
        M.resolve_config({"bogus": "1"})
    cfg = M.resolve_config({"mode": "per_batch"})
    reasons = M.supports(Problem(B, H, HKV, T, D, causal=True), cfg)
    assert any("per_batch" in r for r in reasons)
    assert M.supports(Problem(B, H, HKV, T, D, causal=False), cfg) == []
    long = Problem(1, H, HKV, 40000, D, causal=True)
    assert any("max_len" in r for r in M.supports(long, M.resolve_config({})))
    assert any("oracle" in r for r in get("sea-oracle").supports(long, M.resolve_config({"max_len": "65536"})))
    assert any("fp64" in r for r in M.supports(Problem(B, H, HKV, T, D, dtype="fp64"), M.resolve_config({})))
    layer = build("sea", causal=True, k=3, K=16)
    with pytest.raises(ValueError, match="causal"):
        layer(*qkv(9), causal=False)


def test_checkpoint_roundtrip_and_seed(tmp_path):
    a = build("sea", causal=True, k=3, K=16, backend="torch", seed=1)
    b = build("sea", causal=True, k=3, K=16, backend="torch", seed=1)
    c = build("sea", causal=True, k=3, K=16, backend="torch", seed=2)
    q, k, v = qkv(10)
    assert torch.equal(a(q, k, v, causal=True), b(q, k, v, causal=True))
    assert not torch.equal(a(q, k, v, causal=True), c(q, k, v, causal=True))
    path = tmp_path / "est.pt"
    torch.save({"layers": {0: {"estimator." + n: t for n, t in a.estimator.state_dict().items()}}}, path)
    d = build("sea", causal=True, k=3, K=16, backend="torch", seed=2, checkpoint=str(path))
    assert "estimator=trained" in d.impl
    assert torch.equal(d(q, k, v, causal=True), a(q, k, v, causal=True))
    # dynamic k: a larger inference budget than the checkpoint was trained with selects more keys
    e = build("sea", causal=True, k=8, K=16, backend="torch", seed=2, checkpoint=str(path))
    e(q, k, v, causal=True)
    assert e.last_aux["count"].sum() > a.last_aux["count"].sum()


def test_oracle_defaults_to_unit_scalers_without_checkpoint():
    m = build("sea-oracle", causal=True, k=3, K=16, backend="torch")
    q, k, v = qkv(11)
    out = m(q, k, v, causal=True)
    a = m.last_aux
    assert torch.all(a["s_prob"] == 1) and torch.all(a["s_mix"] == 1)
    assert "scalers=forced(s_prob=1, s_mix=1)" in m.impl
    c = sparse_attention_ref(q, k, v, a["row_ptr"], a["col"], 1 / math.sqrt(D))
    torch.testing.assert_close(out.double(), c, atol=1e-5, rtol=1e-5)
    assert "scalers=estimated" in build("sea", causal=True, k=3, K=16).impl


def test_distillation_protocol_compress_and_note_trained():
    """The contract's distillation hooks: compress_probs pools exact attention to the K cells (rows keep their
    mass) and note_trained marks the estimator trained in impl and in the saved state."""
    cls = get("sea")
    p = Problem(batch=1, heads=2, kv_heads=2, seq_len=64, head_dim=16, causal=True)
    mod = cls.build(cls.resolve_config({"k": "4", "K": "8", "backend": "torch"}), p)
    probs = torch.softmax(torch.randn(1, 2, 64, 64).masked_fill(torch.ones(64, 64).triu(1).bool(), float("-inf")), -1)
    pooled = mod.compress_probs(probs, causal=True, valid=None)
    assert pooled.shape == (1, 2, 64, 8)
    assert torch.allclose(pooled.sum(-1), torch.ones(1, 2, 64))
    q = torch.randn(1, 2, 64, 16)
    mod(q, q, q, causal=True)
    assert "estimator=untrained" in mod.impl
    mod.note_trained(3)
    assert "estimator=trained" in mod.impl
    fresh = cls.build(cls.resolve_config({"k": "4", "K": "8", "backend": "torch"}), p)
    fresh.load_state_dict(mod.state_dict())
    fresh(q, q, q, causal=True)
    assert "estimator=trained" in fresh.impl


@pytest.mark.parametrize("causal", [True, False])
def test_attention_probs_is_differentiable_for_distillation(causal):
    """attention_probs gives a distribution per row whose gradient reaches q, k and the estimator's scalers
    (the selection itself is discrete), so distillation can match SEA's attention to the teacher's."""
    cls = get("sea")
    p = Problem(batch=1, heads=2, kv_heads=1, seq_len=48, head_dim=16, causal=causal)
    mod = cls.build(cls.resolve_config({"k": "4", "K": "8", "backend": "torch"}), p)
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 2, 48, 16, generator=g, requires_grad=True)
    k = torch.randn(1, 1, 48, 16, generator=g, requires_grad=True)
    v = torch.randn(1, 1, 48, 16, generator=g)
    rows = torch.arange(48)
    probs = mod.attention_probs(q, k, v, causal=causal, rows=rows)         # [B, H, R, T]
    assert probs.shape == (1, 2, 48, 48) and probs.requires_grad
    # s_mix s_prob (sparse softmax) + (1 - s_mix) average: mass s_mix s_prob + 1 - s_mix <= 1 per row
    assert probs.min() >= 0 and probs.sum(-1).max() <= 1 + 1e-5
    target = torch.softmax(torch.randn(1, 2, 48, 48, generator=g), -1)
    (probs * target).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0
    scalers = [prm for name, prm in mod.named_parameters() if prm.grad is not None and prm.grad.abs().sum() > 0]
    assert scalers, "no estimator parameter got a gradient through s_prob / s_mix"
    with torch.no_grad():
        again = mod.attention_probs(q, k, v, causal=causal, rows=rows)
    assert torch.equal(again, probs.detach())                             # the same selection both ways


def test_triton_options_are_refused_in_words_where_triton_cannot_run(monkeypatch):
    cls = get("sea")
    p = Problem(batch=1, heads=2, kv_heads=2, seq_len=64, head_dim=16, causal=True)
    cfg = cls.resolve_config({"topk_backend": "triton", "interp_backend": "triton"})
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reasons = cls.supports(p, cfg)
    assert any("topk_backend=triton, interp_backend=triton needs a CUDA device" in r for r in reasons), reasons
    assert not cls.supports(p, cls.resolve_config({}))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not cls.supports(p, cfg)


def test_attention_probs_right_after_forward_reuses_the_selection(monkeypatch):
    """In distillation attention_probs follows the forward on the same tensors: it reuses the forward's estimate,
    selection and scalers (no second estimator pass) and gives what a fresh computation gives."""
    cls = get("sea")
    p = Problem(batch=1, heads=2, kv_heads=1, seq_len=48, head_dim=16, causal=True)
    mod = cls.build(cls.resolve_config({"k": "4", "K": "8", "backend": "torch"}), p)
    g = torch.Generator().manual_seed(7)
    q, k, v = torch.randn(1, 2, 48, 16, generator=g), torch.randn(1, 1, 48, 16, generator=g), \
        torch.randn(1, 1, 48, 16, generator=g)
    rows = torch.arange(48)
    fresh = mod.attention_probs(q.clone(), k.clone(), v.clone(), causal=True, rows=rows)
    mod(q, k, v, causal=True)
    calls = []
    real = mod.stage_estimator
    monkeypatch.setattr(mod, "stage_estimator", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    reused = mod.attention_probs(q, k, v, causal=True, rows=rows)
    assert calls == [] and torch.allclose(reused, fresh, atol=1e-6)
    mod.attention_probs(q.clone(), k, v, causal=True, rows=rows)          # other tensors: computed again
    assert calls == [1]
    with torch.no_grad():
        mod(q, k, v, causal=True)
    calls.clear()
    probs = mod.attention_probs(q, k, v, causal=True, rows=rows)          # graph needed, none kept: again
    assert calls == [1] and probs.requires_grad


def test_fused_bidirectional_performer_matches_the_torch_path_inside_sea(monkeypatch):
    """performer_backend=triton (kernels/favor_dense.py) gives SEA's bidirectional estimate and output as the torch
    matmuls do (same seed, so the same estimator), with and without a padding mask; refused in words for
    forward+backward cells (the kernel is forward-only) and where Triton cannot run."""
    import kernels.favor_dense as fd

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(fd, "POISON_OUTPUTS", True)
    cls = get("sea")
    p = Problem(batch=2, heads=2, kv_heads=1, seq_len=40, head_dim=16, causal=False)
    base = {"k": "4", "K": "8", "backend": "torch"}
    want_mod = cls.build(cls.resolve_config(dict(base, performer_backend="torch")), p)
    got_mod = cls.build(cls.resolve_config(dict(base, performer_backend="triton")), p)
    g = torch.Generator().manual_seed(11)
    q, k, v = torch.randn(2, 2, 40, 16, generator=g), torch.randn(2, 1, 40, 16, generator=g), \
        torch.randn(2, 1, 40, 16, generator=g)
    valid = torch.ones(2, 40, dtype=torch.bool)
    valid[1, 31:] = False
    with torch.no_grad():
        for kpm in (None, valid):
            want = want_mod(q, k, v, causal=False, key_padding_mask=kpm)
            got = got_mod(q, k, v, causal=False, key_padding_mask=kpm)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
            assert torch.equal(got_mod.last_aux["mask"], want_mod.last_aux["mask"])     # the same selection
    assert "performer=triton-dense" in got_mod.impl and "performer=dense" in want_mod.impl
    cfg = cls.resolve_config({"performer_backend": "triton"})
    back = Problem(batch=1, heads=2, kv_heads=2, seq_len=64, head_dim=16, causal=False, backward=True)
    assert any("forward-only" in r for r in cls.supports(back, cfg))
    assert not cls.supports(Problem(batch=1, heads=2, kv_heads=2, seq_len=64, head_dim=16, causal=False), cfg)
    monkeypatch.delenv("TRITON_INTERPRET")
    assert any("performer_backend=triton needs a CUDA device" in r
               for r in cls.supports(Problem(batch=1, heads=2, kv_heads=2, seq_len=64, head_dim=16, causal=False),
                                     cfg))


def test_performer_backend_auto_takes_the_fused_kernel_only_for_cuda_inference():
    """Bidirectional auto: the fused forward-only kernel for CUDA tensors when no gradient is needed, the matmuls
    otherwise (CPU, or a gradient through q / k / v); causal auto: the prefix-sum kernel on CUDA."""
    import types

    from methods.sea.favor import needs_grad, performer_backend

    cuda, cpu = types.SimpleNamespace(is_cuda=True), types.SimpleNamespace(is_cuda=False)
    assert performer_backend(cuda, False) == "triton-dense"
    assert performer_backend(cuda, False, needs_grad=True) == "dense"
    assert performer_backend(cuda, False, padded=True) == "dense"                  # not measured with padding
    assert performer_backend(cuda, False, "triton", padded=True) == "triton-dense"
    assert performer_backend(cpu, False) == "dense"
    assert performer_backend(cuda, False, "torch") == "dense"
    assert performer_backend(cpu, False, "triton") == "triton-dense"
    assert performer_backend(cuda, True) == "triton" and performer_backend(cpu, True) == "torch"
    with pytest.raises(ValueError, match="expected auto, triton or torch"):
        performer_backend(cuda, False, "fused")
    x = torch.zeros(2, requires_grad=True)
    assert needs_grad(torch.zeros(2), x) and not needs_grad(torch.zeros(2))
    with torch.no_grad():
        assert not needs_grad(x)


@pytest.mark.parametrize("causal", [True, False])
def test_fused_encoder_inside_sea_matches_the_modules(monkeypatch, causal):
    """encoder_backend=triton (kernels/sea_encoder.py, forward only) gives SEA's output and estimate as the
    estimator's own modules do (same seed); refused in words for forward+backward cells and raises when a
    gradient is needed."""
    import kernels.sea_encoder as se

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(se, "POISON_OUTPUTS", True)
    monkeypatch.setattr(se, "PRECISION", "ieee")
    cls = get("sea")
    p = Problem(batch=2, heads=2, kv_heads=1, seq_len=40, head_dim=16, causal=causal)
    base = {"k": "4", "K": "8", "backend": "torch"}
    want_mod = cls.build(cls.resolve_config(base), p)
    got_mod = cls.build(cls.resolve_config(dict(base, encoder_backend="triton")), p)
    g = torch.Generator().manual_seed(12)
    q, k, v = torch.randn(2, 2, 40, 16, generator=g), torch.randn(2, 1, 40, 16, generator=g), \
        torch.randn(2, 1, 40, 16, generator=g)
    with torch.no_grad():
        want = want_mod(q, k, v, causal=causal)
        got = got_mod(q, k, v, causal=causal)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_mod.last_aux["a_hat"], want_mod.last_aux["a_hat"], rtol=1e-4, atol=1e-6)
    assert "encoder=triton" in got_mod.impl and "encoder=" not in want_mod.impl
    cfg = cls.resolve_config({"encoder_backend": "triton"})
    back = Problem(batch=1, heads=2, kv_heads=2, seq_len=64, head_dim=16, causal=causal, backward=True)
    assert any("forward-only encoder" in r for r in cls.supports(back, cfg))
    with pytest.raises(RuntimeError, match="forward-only"):
        got_mod(q.requires_grad_(), k, v, causal=causal)


def test_backward_stage_profile_times_each_differentiable_stage(tmp_path):
    """stage_profile_backward: the estimator, sparse attention and mix backwards, each alone on one recorded graph
    (finite, non-zero gradients; the module's .grad untouched); the harness records them for fwd+bwd cells."""
    cls = get("sea")
    p = Problem(batch=1, heads=2, kv_heads=1, seq_len=48, head_dim=16, causal=True, backward=True)
    mod = cls.build(cls.resolve_config({"k": "4", "K": "8", "backend": "torch"}), p)
    g = torch.Generator().manual_seed(9)
    q, k, v = torch.randn(1, 2, 48, 16, generator=g), torch.randn(1, 1, 48, 16, generator=g), \
        torch.randn(1, 1, 48, 16, generator=g)
    results = []

    def timer(fn):
        results.append(fn())
        return 1.0

    ms = mod.stage_profile_backward(q, k, v, causal=True, timer=timer)
    assert list(ms) == ["estimator", "sparse_attention", "mix"] and len(results) == 3
    for grads in results:
        assert grads and all(x is None or torch.isfinite(x).all() for x in grads)
        assert any(x is not None and x.abs().sum() > 0 for x in grads)
    est_grads = results[0]
    assert len(est_grads) == 3 + sum(1 for p_ in mod.parameters() if p_.requires_grad)   # q, k, v + parameters
    assert all(p_.grad is None for p_ in mod.parameters())
    assert get("exact").build(get("exact").resolve_config({}), p).stage_profile_backward(
        q, k, v, causal=True, timer=timer) is None                                         # optional in the contract
    from tests.helpers import read_rows, run_cli

    res = run_cli("run", "--methods", "sea,exact", "--method-args", "sea.k=4", "sea.K=8", "--device", "cpu",
                  "--seq-lens", "64", "--batch", "1", "--heads", "2", "--head-dim", "16", "--dtype", "fp32",
                  "--causal", "--mode", "fwd+bwd", "--cpu-budget", "0.05", "--out", str(tmp_path / "run"), "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["method"]: r for r in read_rows(tmp_path / "run")}
    assert rows["sea"]["status"] == "ok" and rows["exact"]["status"] == "ok"
    bwd = rows["sea"]["extra"]["stages_bwd_ms"]                                             # recorded by the harness
    assert set(bwd) == {"estimator", "sparse_attention", "mix"} and all(t > 0 for t in bwd.values())
    assert "stages_bwd_ms" not in (rows["exact"].get("extra") or {})
