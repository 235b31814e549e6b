"""SEA's cuda_graph option (methods/sea/graphs.py): replayed inference calls give the eager forward's output for
new inputs of a captured shape, refuse what a graph cannot serve, and report the memory they keep."""
from __future__ import annotations

import pytest
import torch

from methods.base import MethodConfigError, Problem, get
from methods.sea.graphs import GraphCache


def build(causal, device, dtype="fp32", T=64, B=1, H=4, D=16, **opts):
    M = get("sea")
    cfg = M.resolve_config({key: str(val) for key, val in opts.items()})
    return M.build(cfg, Problem(B, H, H, T, D, dtype=dtype, causal=causal, device=device), seed=3).eval()


def qkv(shape, device, dtype, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return tuple(torch.randn(shape, generator=g).to(device, dtype) for _ in range(3))


def test_option_refuses_negative_lengths():
    M = get("sea")
    with pytest.raises(MethodConfigError, match="cuda_graph=-1"):
        M.resolve_config({"cuda_graph": "-1"})
    with pytest.raises(ValueError, match="cuda_graph=-2"):
        GraphCache(-2)


@pytest.mark.parametrize("causal", [True, False])
def test_cpu_calls_run_eagerly_and_say_so(causal):
    """On the CPU the option changes nothing but the impl string: the same output as without it, bit for bit."""
    on = build(causal, "cpu", cuda_graph=4096, k=3, K=8)
    off = build(causal, "cpu", k=3, K=8)
    q, k, v = qkv((1, 4, 64, 16), "cpu", torch.float32, 0)
    with torch.no_grad():
        a, b = on(q, k, v, causal=causal), off(q, k, v, causal=causal)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert on.impl.endswith("cuda_graph=eager (device cpu)]"), on.impl
    assert "cuda_graph" not in off.impl
    assert on.retained_memory_bytes() == 0


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")

FAST = dict(performer_dtype="bf16", estimator_precision="tf32", estimator_dtype="bf16", sparse_pieces=1)


def _same(a, b):
    """Replay vs eager: the same kernels on the same values; atomics may reorder float sums, so allow the
    output dtype's rounding on a few elements, no more."""
    diff = (a.float() - b.float()).abs()
    assert torch.isfinite(a).all()
    assert (diff > 0).float().mean().item() <= 0.01, f"{(diff > 0).float().mean().item():.3%} differ"
    assert diff.max().item() <= 2 ** -6 * b.float().abs().max().item()


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("compile_", ["none", "estimator"])
def test_replay_matches_eager_on_new_inputs(causal, compile_):
    T, shape = 2048, (2, 4, 2048, 64)
    lay = build(causal, "cuda", "bf16", T=T, B=2, H=4, D=64, cuda_graph=4096, compile=compile_, **FAST)
    ref = build(causal, "cuda", "bf16", T=T, B=2, H=4, D=64, compile=compile_, **FAST)
    ref.load_state_dict(lay.state_dict())
    seen = []
    outs = {}
    with torch.no_grad():
        for seed in range(4):
            q, k, v = qkv(shape, "cuda", torch.bfloat16, seed)
            outs[seed] = lay(q, k, v, causal=causal)
            seen.append(lay.graphs.last)
            _same(outs[seed], ref(q, k, v, causal=causal))
        assert seen == ["eager (first call of this shape)", "capture", "replay", "replay"], seen
        assert lay.impl.endswith("cuda_graph=replay]"), lay.impl
        # the returned outputs are copies: a later replay does not overwrite them
        q, k, v = qkv(shape, "cuda", torch.bfloat16, 1)
        _same(outs[1], ref(q, k, v, causal=causal))
        # what the graphs keep: at least the static inputs, and it is all reserved device memory
        kept = lay.retained_memory_bytes()
        assert kept >= 3 * q.numel() * q.element_size()
        assert kept <= torch.cuda.memory_reserved()
        # a second shape captures a graph of its own; the first one still replays
        q2, k2, v2 = qkv((2, 4, 1024, 64), "cuda", torch.bfloat16, 9)
        for _ in range(3):
            out2 = lay(q2, k2, v2, causal=causal)
        assert lay.graphs.last == "replay"
        _same(out2, ref(q2, k2, v2, causal=causal))
        assert lay.retained_memory_bytes() > kept
        lay(q, k, v, causal=causal)
        assert lay.graphs.last == "replay"


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("validate", [True, False])
def test_replay_inputs_copied_in_the_check_or_plainly(monkeypatch, validate):
    """A replay's q, k, v reach the graph's inputs through the finite check's one pass (COPY_IN_CHECK) or by three
    plain copies (the switch off, or validate_inputs off): the same output as eager for new inputs either way, and
    the graph's inputs hold the caller's values bit for bit after the call."""
    import methods.sea.graphs as graphs

    shape = (1, 4, 1024, 64)
    lay = build(False, "cuda", "bf16", T=1024, H=4, D=64, cuda_graph=1024, **FAST)
    ref = build(False, "cuda", "bf16", T=1024, H=4, D=64, **FAST)
    ref.load_state_dict(lay.state_dict())
    lay.validate_inputs = validate
    with torch.no_grad():
        for seed, copy_in_check in enumerate((True, False, True)):
            monkeypatch.setattr(graphs, "COPY_IN_CHECK", copy_in_check)
            q, k, v = qkv(shape, "cuda", torch.bfloat16, 20 + seed)
            for _ in range(3):
                out = lay(q, k, v, causal=False)
            assert lay.graphs.last == "replay"
            _same(out, ref(q, k, v, causal=False))
            entry = next(e for e in lay.graphs.entries.values() if not isinstance(e, str))
            for static, t in zip(entry.inputs[:3], (q, k, v)):
                assert torch.equal(static.view(torch.int16), t.view(torch.int16))

@gpu
@pytest.mark.gpu
def test_refusals_and_checks():
    lay = build(True, "cuda", "bf16", T=1024, H=4, D=64, cuda_graph=1024, **FAST)
    q, k, v = qkv((1, 4, 1024, 64), "cuda", torch.bfloat16, 0)
    with torch.no_grad():
        for _ in range(3):
            lay(q, k, v, causal=True)
        assert lay.graphs.last == "replay"
        bad = q.clone()
        bad[0, 1, 7, 3] = float("nan")
        with pytest.raises(ValueError, match="q contains non-finite"):
            lay(bad, k, v, causal=True)                  # the replayed call still checks its inputs
        qlong, klong, vlong = qkv((1, 4, 2048, 64), "cuda", torch.bfloat16, 1)
        lay(qlong, klong, vlong, causal=True)
        assert lay.graphs.last == "eager (T=2048 > cuda_graph=1024)"
        g = torch.cuda.CUDAGraph()                       # inside the caller's own capture: eager (capturable)
        lay.validate_inputs = False
        with torch.cuda.graph(g):
            lay(q, k, v, causal=True)
        assert lay.graphs.last == "eager (inside a capture)"
        lay.validate_inputs = True
    qg = q.detach().requires_grad_()
    out = lay(qg, k, v, causal=True)
    assert lay.graphs.last == "eager (gradient needed)"
    out.float().sum().backward()
    assert qg.grad is not None and torch.isfinite(qg.grad).all()
    lay.graphs.reset()
    assert lay.retained_memory_bytes() == 0


@gpu
@pytest.mark.gpu
def test_padding_mask_replays_or_says_why():
    """Padded calls: either the graph serves them (the same output as eager) or the capture's failure is named."""
    lay = build(False, "cuda", "bf16", T=1024, H=4, D=64, cuda_graph=1024, **FAST)
    ref = build(False, "cuda", "bf16", T=1024, H=4, D=64, **FAST)
    ref.load_state_dict(lay.state_dict())
    q, k, v = qkv((2, 4, 1024, 64), "cuda", torch.bfloat16, 0)
    mask = torch.ones(2, 1024, dtype=torch.bool, device="cuda")
    with torch.no_grad():
        for seed in range(3):
            mask[1, 700 + 50 * seed:] = False
            out = lay(q, k, v, causal=False, key_padding_mask=mask)
            _same(out, ref(q, k, v, causal=False, key_padding_mask=mask))
    assert lay.graphs.last == "replay" or lay.graphs.last.startswith("eager (capture failed: "), lay.graphs.last
    # a failed capture leaves the default generator in capture mode unless the cache gives it back
    assert torch.isfinite(torch.randn(8, device="cuda")).all()
