"""sea.performer_backend=fused: the causal estimator's Performer pass and encoder + scaler head as one kernel
(kernels/sea_favor_encoder.py) inside SEA. The estimator's outputs must be those of the split path (the relu
FAVOR+ prefix sums, then the encoder modules) for a whole sequence and for query blocks (the Performer state
carried through the kernel), and the SEA layer must run it, name it and refuse what it cannot serve. The kernel
runs under TRITON_INTERPRET=1 on CPU (tests/conftest.py)."""
from __future__ import annotations

import pytest
import torch

import kernels.sea_favor_encoder as fe_mod
from methods.base import Problem, get
from methods.sea.estimator import Estimator

B, H, T, D = 2, 3, 45, 16


@pytest.fixture(autouse=True)
def _small_tiles(monkeypatch):
    monkeypatch.setattr(fe_mod, "POISON_OUTPUTS", True)
    monkeypatch.setattr(fe_mod, "CHUNK", 16)          # 3 chunks, the last partial
    monkeypatch.setattr(fe_mod, "GROUP", 2)           # 2 groups: a scanned state and an intra-group chunk


def _pair(operands="fp32"):
    split = Estimator(d=D, H=H, K=16, causal=True, nbf=2.0, max_len=128, seed=3, performer_backend="torch",
                      encoder_backend="torch", performer_dtype=operands)
    fused = Estimator(d=D, H=H, K=16, causal=True, nbf=2.0, max_len=128, seed=3, performer_backend="fused",
                      performer_dtype=operands)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():                              # encoder LayerNorm affine away from its 1 / 0 init
        split.enc[1].weight.copy_(0.5 + torch.rand(2 * D, generator=g))
        split.enc[1].bias.copy_(0.4 * torch.rand(2 * D, generator=g) - 0.2)
    fused.load_state_dict(split.state_dict())
    return split, fused


def _qkv(seed=0, n=T):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, n, D, generator=g) for _ in range(3))


def test_estimator_matches_split_path():
    split, fused = _pair()
    q, k, v = _qkv(1)
    with torch.no_grad():
        want = split(q, k, v, valid=None)              # (logits, s_prob, s_mix)
        got = fused(q, k, v, valid=None)
    assert fused.last_performer == "fused" and split.last_performer == "torch"
    for a, b in zip(got, want):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bf16_operands_are_as_close_to_fp32_as_the_split_path():
    """bf16 operands round at other points in the kernel (fp32 scanned states, bf16 intra-group scores) than in the
    torch prefix sums, so the two bf16 results differ by bf16 rounding; each is compared with the fp32 estimate."""
    split32, _ = _pair("fp32")
    split16, fused16 = _pair("bf16")
    q, k, v = _qkv(1)
    with torch.no_grad():
        ref = split32(q, k, v, valid=None)
        a = split16(q, k, v, valid=None)
        b = fused16(q, k, v, valid=None)
    for r, x, y in zip(ref, a, b):
        err_split = ((x - r).norm() / r.norm()).item()
        err_fused = ((y - r).norm() / r.norm()).item()
        assert 0 < err_split < 2e-2 and 0 < err_fused < 2e-2
        assert err_fused <= 2 * err_split + 1e-4, (err_fused, err_split)


def test_estimator_blocks_carry_the_state_through_the_kernel():
    split, fused = _pair()
    q, k, v = _qkv(2)
    with torch.no_grad():
        whole = fused(q, k, v, valid=None)
        parts, carry = [], None
        for s in range(0, T, 20):                      # blocks of 20, 20, 5 rows
            lg, sp, sm, carry = fused.forward_block(q[:, :, s:s + 20], k[:, :, s:s + 20], v[:, :, s:s + 20],
                                                    row0=s, carry=carry)
            parts.append((lg, sp, sm))
        split_block = split.forward_block(q[:, :, 20:40], k[:, :, 20:40], v[:, :, 20:40], row0=20,
                                          carry=split.forward_block(q[:, :, :20], k[:, :, :20], v[:, :, :20],
                                                                    row0=0, carry=None)[3])
    for i in range(3):
        torch.testing.assert_close(torch.cat([p[i] for p in parts], dim=2), whole[i], rtol=1e-4, atol=1e-5)
    for a, b in zip(parts[1], split_block[:3]):        # the fused block form equals the split block form
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dec_dtype", ["bf16", "fp16"])
def test_decoder_head_in_the_front_matches_the_modules(monkeypatch, dec_dtype):
    """estimator_dtype bf16 / fp16: the fused front computes the decoder's head (row projection, norm_in) in its
    epilogue and the decoder runs its body only (last_decoder "head-fused"). The logits equal those of the same
    front writing z and the whole decoder under autocast, up to the 16-bit rounding of the head's output (a flip
    where the two summation orders straddle a rounding boundary), for a whole sequence and for query blocks
    (the carried tail then holds head rows); the scalers are the same tensors' values."""
    import methods.sea.estimator as est_mod

    _, fused = _pair("bf16")
    fused.dec_dtype = dec_dtype
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():                              # norm_in's affine away from its 1 / 0 init
        fused.dec.norm_in.weight.copy_(0.5 + torch.rand(fused.dec.norm_in.weight.shape, generator=g))
        fused.dec.norm_in.bias.copy_(0.3 * torch.randn(fused.dec.norm_in.bias.shape, generator=g))
    q, k, v = _qkv(4)

    def run(fused_head):
        monkeypatch.setattr(est_mod, "FUSED_HEAD", fused_head)
        with torch.no_grad():
            whole = fused(q, k, v, valid=None)
            assert fused.last_decoder == ("head-fused" if fused_head else "torch")
            blocks, carry = [], None
            for s in range(0, T, 20):
                lg, _, _, carry = fused.forward_block(q[:, :, s:s + 20], k[:, :, s:s + 20], v[:, :, s:s + 20],
                                                      row0=s, carry=carry)
                blocks.append(lg)
        return whole, torch.cat(blocks, dim=2)

    (headed, headed_blocks), (plain, plain_blocks) = run(True), run(False)
    for a, b in zip(headed[1:], plain[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the decoder's output is LayerNorm'd over K (|logits| ~ 1): a flipped 16-bit head value moves it by ~1e-2.
    # (Blocks against the whole call differ more, ~0.2, with either path: the bf16 operands round the front's
    # intra-chunk scores on other chunks when the rows are split.)
    for lg, want in ((headed[0], plain[0]), (headed_blocks, plain_blocks)):
        assert lg.shape == want.shape and torch.isfinite(lg).all() and want.std() > 0.1
        err = (lg - want).abs()
        assert err.max().item() < 0.1 and err.mean().item() < 2e-3, (err.max().item(), err.mean().item())


def test_stage_profile_times_the_one_kernel():
    _, fused = _pair()
    q, k, v = _qkv(3)
    calls = []

    def timer(fn):
        calls.append(fn())
        return 1.0
    parts = fused.stage_profile(q, k, v, timer=timer)
    assert parts == dict(inputs=0.0, performer=1.0, encoder=0.0, decoder=1.0, scaler=0.0)
    assert len(calls) == 2


def build(causal=True, **opts):
    M = get("sea")
    cfg = M.resolve_config({key: str(val) for key, val in dict(dict(k=3, K=16, max_len=128), **opts).items()})
    prob = Problem(B, H, H, T, D, dtype="fp32", causal=causal, device="cpu")
    return M, cfg, prob


def test_layer_runs_it_and_says_so():
    M, cfg, prob = build(performer_backend="fused", backend="torch")
    assert M.supports(prob, cfg) == []
    fused = M.build(cfg, prob, seed=4)
    M2, cfg2, _ = build(performer_backend="torch", encoder_backend="torch", backend="torch")
    split = M2.build(cfg2, prob, seed=4)
    split.load_state_dict(fused.state_dict())
    q, k, v = _qkv(5)
    with torch.no_grad():
        got = fused(q, k, v, causal=True)
        want = split(q, k, v, causal=True)
    assert "performer=fused" in fused.impl
    assert torch.isfinite(got).all()
    # same estimate up to fp32 rounding; the selections may differ only at exact near-ties, so compare the estimates
    # (above) and require the layer outputs to agree closely on this seed
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_refusals():
    M, cfg, prob = build(causal=False, performer_backend="fused")
    assert any("causal Performer + encoder kernel" in r for r in M.supports(prob, cfg))
    M, cfg, _ = build(performer_backend="fused")
    back = Problem(B, H, H, T, D, dtype="fp32", causal=True, device="cpu", backward=True)
    assert any("forward-only" in r for r in M.supports(back, cfg))
    padded = Problem(B, H, H, T, D, dtype="fp32", causal=True, device="cpu", padding=True)
    assert any("no padding mask" in r for r in M.supports(padded, cfg))
    with pytest.raises(ValueError, match="bidirectional"):
        Estimator(d=D, H=H, K=16, causal=False, nbf=1.0, max_len=64, seed=0, performer_backend="fused")
    _, fused = _pair()
    q, k, v = _qkv(6)
    q.requires_grad_(True)
    with pytest.raises(RuntimeError, match="forward-only"):
        fused(q, k, v, valid=None)
    with torch.no_grad(), pytest.raises(RuntimeError, match="padding"):
        fused(q, k, v, valid=torch.ones(B, T, dtype=torch.bool))


def test_compiled_estimator_blocks_do_not_recompile_per_block(monkeypatch):
    """compile=estimator with query blocks: every block of one shape reuses one compiled graph (the block's first row
    must not reach the compiled function as a Python int, which dynamo specialises on: 64 blocks hit the recompile
    limit on an H200 before this was fixed). The limit is lowered so that a per-block recompile fails here."""
    import torch._dynamo

    import methods.sea.estimator as est_mod

    monkeypatch.setattr(est_mod, "COMPILE_BACKEND", "aot_eager")
    monkeypatch.setattr(est_mod, "RECOMPILE_LIMIT", 4)
    torch._dynamo.reset()
    M, cfg, prob = build(performer_backend="fused", backend="torch", compile="estimator", query_chunk=8)
    blocks = M.build(cfg, prob, seed=4)
    g = torch.Generator().manual_seed(11)
    norm = blocks.estimator.dec.norm_out            # untie the decoder's repeated columns (torch.topk ties)
    with torch.no_grad():
        norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=g))
        norm.bias.copy_(torch.rand(norm.bias.shape, generator=g))
    M2, cfg2, _ = build(performer_backend="fused", backend="torch")
    whole = M2.build(cfg2, prob, seed=4)
    whole.load_state_dict(blocks.state_dict())
    q, k, v = _qkv(9)                                  # T = 45: 6 blocks of 8 rows and one of 5
    with torch.no_grad(), torch._dynamo.config.patch(recompile_limit=4):
        got = blocks(q, k, v, causal=True)
    with torch.no_grad():
        want = whole(q, k, v, causal=True)
    assert "query_blocks=6x8" in blocks.impl and "performer=fused" in blocks.impl and "compile=estimator" in blocks.impl
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
