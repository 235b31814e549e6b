"""sea.query_chunk: causal inference in query blocks (estimate, select, attend and mix one block at a time, the
Performer state, the decoder's last rows and the running sum of v carried). Blocks must reproduce the
whole-sequence forward: stage by stage (Performer, estimator, top-k, lists) and end to end, for block sizes from 1
row to more than T. The decoder's LayerNorm affine is perturbed in these tests so the estimate has no exact ties
(the causal decoder repeats each column 4 times; torch.topk breaks exact ties in an unspecified order, which would
make two correct runs pick different, equally ranked cells)."""
from __future__ import annotations

import pytest
import torch

import methods.sea.estimator as est_mod
from methods.base import MethodConfigError, Problem, get
from methods.sea.estimator import Estimator
from methods.sea.favor import favor_attention, favor_causal_carry
from methods.sea.interp import mask_to_csr
from methods.sea.topk import select_topk, selection_caps
from tests.helpers import untie_sea_decoder as untie

B, H, Hkv, T, D = 2, 4, 2, 203, 16


def build(causal=True, **opts):
    M = get("sea")
    base = dict(k=3, K=16, backend="torch", max_len=512)
    cfg = M.resolve_config({key: str(val) for key, val in dict(base, **opts).items()})
    return M.build(cfg, Problem(B, H, Hkv, T, D, dtype="fp32", causal=causal, device="cpu"), seed=5)


def qkv(seed=0, kv_heads=Hkv):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, D, generator=g), torch.randn(B, kv_heads, T, D, generator=g),
            torch.randn(B, kv_heads, T, D, generator=g))


@pytest.mark.parametrize("operands", ["fp32", "bf16"])
def test_performer_blocks_match_whole_sequence(operands):
    g = torch.Generator().manual_seed(1)
    est = Estimator(d=D, H=H, K=16, causal=True, nbf=2.0, max_len=512, seed=1)
    q, k = torch.randn(B, H, T, D, generator=g), torch.randn(B, H, T, D, generator=g)
    vals = torch.randn(B, H, T, 2 * D, generator=g)                    # [B, H, T, 2d]
    whole = favor_attention(q, k, vals, est.proj, kernel="relu", causal=True, operands=operands)
    outs, state = [], None
    for s in range(0, T, 50):                                          # 50, 50, 50, 50, 3 rows
        o, state = favor_causal_carry(q[:, :, s:s + 50], k[:, :, s:s + 50], vals[:, :, s:s + 50], est.proj, state,
                                      operands=operands)
        outs.append(o)
    got = torch.cat(outs, dim=2)                                       # [B, H, T, 2d]
    assert got.shape == whole.shape
    torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-5)
    S, zs = state                                                      # the carried state is the full sums
    pk = torch.relu((k * D ** -0.25) @ est.proj.T) + 1e-3
    if operands == "bf16":
        pk, vals = pk.bfloat16().float(), vals.bfloat16().float()
    torch.testing.assert_close(S, pk.transpose(-1, -2) @ vals, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(zs, pk.sum(2), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("block", [1, 3, 64, 250])
def test_estimator_blocks_match_whole_sequence(block):
    est = untie(Estimator(d=D, H=H, K=16, causal=True, nbf=2.0, max_len=512, seed=2))
    assert est.decoder_halo == 4                                       # two dilation-2 causal 3x3 convs, one 1x1
    q, k, v = (x.repeat_interleave(H // Hkv, 1) if x.shape[1] != H else x for x in qkv(3))
    with torch.no_grad():
        want = est(q, k, v, valid=None, probs=True)                    # logits, A_hat, s_prob, s_mix
        got, carry = [], None
        for s in range(0, T, block):
            *out, carry = est.forward_block(q[:, :, s:s + block], k[:, :, s:s + block], v[:, :, s:s + block], row0=s,
                                            carry=carry, probs=True)
            got.append(out)
            # without probs: the same estimate, A_hat left out
            lg, sp, sm, _ = est.forward_block(q[:, :, s:s + block], k[:, :, s:s + block], v[:, :, s:s + block],
                                              row0=s, carry=None if s == 0 else prev)
            assert torch.equal(lg, out[0]) and torch.equal(sp, out[2]) and torch.equal(sm, out[3])
            prev = carry
    for a_hat, lg in ((g[1], g[0]) for g in got):
        torch.testing.assert_close(a_hat, torch.softmax(lg, dim=-1), rtol=0, atol=0)
    for i, w in enumerate(want):
        # float32 sums in another order (1-row blocks vs 64-row chunks) reach the logits through two LayerNorms
        torch.testing.assert_close(torch.cat([g[i] for g in got], dim=2), w, rtol=1e-4, atol=1e-4)


def test_estimator_block_form_refuses_bidirectional_and_overlong():
    est = Estimator(d=D, H=H, K=16, causal=False, nbf=2.0, max_len=512, seed=2)
    x = torch.randn(1, H, 8, D)
    with pytest.raises(ValueError, match="causal"):
        est.forward_block(x, x, x, row0=0, carry=None)
    est = Estimator(d=D, H=H, K=16, causal=True, nbf=2.0, max_len=64, seed=2)
    with pytest.raises(ValueError, match="max_len"):
        est.forward_block(x, x, x, row0=60, carry=None)


@pytest.mark.parametrize("mode", ["causal_per_batch", "per_query"])
def test_topk_and_lists_of_a_block_are_the_rows_of_the_whole(mode):
    g = torch.Generator().manual_seed(4)
    K, k, s, e = 16, 3, 70, 111
    probs = torch.rand(B, H, T, K, generator=g)                        # no ties
    whole = select_topk(probs, mode=mode, k=k, causal=True)
    part = select_topk(probs[:, :, s:e], mode=mode, k=k, causal=True, row0=s)
    assert torch.equal(part, whole[:, :, s:e])
    caps = selection_caps(mode, B=B, H=H, T=e - s, K=K, k=k, causal=True, row0=s)
    rp_w, col_w = mask_to_csr(whole, k=k, causal=True)
    rp_b, col_b = mask_to_csr(part, k=k, causal=True, caps=caps, row0=s)
    counts_w = (rp_w[1:] - rp_w[:-1]).view(B, H, T)[:, :, s:e]
    counts_b = (rp_b[1:] - rp_b[:-1]).view(B, H, e - s)
    assert torch.equal(counts_b, counts_w) and int(rp_b[-1]) <= col_b.numel()
    for bh in range(B * H):                                            # each row's key list, by position
        for t in range(s, e):
            r_w, r_b = bh * T + t, bh * (e - s) + (t - s)
            assert torch.equal(col_b[rp_b[r_b]:rp_b[r_b + 1]], col_w[rp_w[r_w]:rp_w[r_w + 1]])
    assert int(col_b[:int(rp_b[-1])].max()) <= e - 1                   # causal: no key after the block's last row


@pytest.mark.parametrize("block, forced", [(1, {}), (7, {}), (64, {}), (203, {}), (500, {}),
                                           (64, dict(s_prob=0.7, s_mix=0.4))])
def test_layer_blocks_match_whole_forward(block, forced):
    whole = untie(build(**forced))
    blocks = build(query_chunk=block, **forced)
    blocks.load_state_dict(whole.state_dict())
    q, k, v = qkv()
    with torch.no_grad():
        want = whole(q, k, v, causal=True)
        got = blocks(q, k, v, causal=True)
    assert got.dtype == q.dtype and got.shape == q.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    n = -(-T // block)
    assert f"query_blocks={n}x{block}" in blocks.impl and "query_blocks" not in whole.impl


def test_layer_blocks_triton_paths_match_whole_forward():
    """Top-k kernel, interpolation kernel and the row kernel over a query block (Triton interpreter on CPU)."""
    opts = dict(backend="triton", topk_backend="triton", interp_backend="triton")
    whole = untie(build(**opts))
    blocks = build(query_chunk=12, **opts)
    blocks.load_state_dict(whole.state_dict())
    q, k, v = (x[:, :, :40] for x in qkv(7))                           # 4 blocks (the interpreter is slow)
    with torch.no_grad():
        want = whole(q, k, v, causal=True)
        got = blocks(q, k, v, causal=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert "topk=triton" in blocks.impl and "sparse=triton" in blocks.impl


def test_blocks_with_compiled_estimator(monkeypatch):
    monkeypatch.setattr(est_mod, "COMPILE_BACKEND", "aot_eager")
    whole = untie(build())
    blocks = build(query_chunk=64, compile="estimator")
    blocks.load_state_dict(whole.state_dict())
    q, k, v = qkv(8)
    with torch.no_grad():
        want = whole(q, k, v, causal=True)
        got = blocks(q, k, v, causal=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_calls_blocks_cannot_serve_run_whole_and_say_why():
    q, k, v = qkv(9)
    # bidirectional calls run in blocks too (methods/sea/bidir_blocks.py, tested there); through the layer they
    # give the whole call's output, and a padding mask sends them whole
    whole_bi = build(causal=False)
    bidir = build(causal=False, query_chunk=64)
    bidir.load_state_dict(whole_bi.state_dict())
    with torch.no_grad():
        got = bidir(q, k, v, causal=False)
        want = whole_bi(q, k, v, causal=False)
    assert "query_blocks=4x64" in bidir.impl and "passes over the estimate" in bidir.impl, bidir.impl
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        bidir(q, k, v, causal=False, key_padding_mask=torch.ones(B, T, dtype=torch.bool))
    assert "query_blocks=whole (padding mask)" in bidir.impl
    padded = build(query_chunk=64)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 150:] = False
    with torch.no_grad():
        padded(q, k, v, causal=True, key_padding_mask=valid)
    assert "query_blocks=whole (padding mask)" in padded.impl
    graded = build(query_chunk=64)
    qg = q.clone().requires_grad_()
    out = graded(qg, k, v, causal=True)
    out.sum().backward()                                               # the whole path keeps autograd
    assert qg.grad is not None and "query_blocks=whole (gradient needed)" in graded.impl


def test_query_blocks_gives_the_number_of_blocks():
    whole = untie(build())
    blocks = build(query_blocks=4)                                     # ceil(203 / 4) = 51 rows each
    blocks.load_state_dict(whole.state_dict())
    q, k, v = qkv(10)
    with torch.no_grad():
        torch.testing.assert_close(blocks(q, k, v, causal=True), whole(q, k, v, causal=True), rtol=1e-5, atol=1e-5)
    assert "query_blocks=4x51" in blocks.impl


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_blocks_refuse_non_finite_inputs_like_the_whole_forward(which):
    mod = build(query_chunk=64)
    q, k, v = qkv(11)
    bad = dict(q=q, k=k, v=v)
    bad[which] = bad[which].clone()
    bad[which][1, 0, 150, 3] = float("nan")                            # in the third block only
    with torch.no_grad(), pytest.raises(ValueError, match=f"{which} contains non-finite"):
        mod(bad["q"], bad["k"], bad["v"], causal=True)
    whole = build()
    with torch.no_grad(), pytest.raises(ValueError, match=f"{which} contains non-finite"):
        whole(bad["q"], bad["k"], bad["v"], causal=True)


def test_query_chunk_option_validated():
    with pytest.raises(MethodConfigError, match="query_chunk"):
        build(query_chunk=-4)
    with pytest.raises(MethodConfigError, match="query_blocks"):
        build(query_blocks=-1)
    with pytest.raises(MethodConfigError, match="both set"):
        build(query_chunk=8, query_blocks=2)
