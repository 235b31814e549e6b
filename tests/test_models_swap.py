"""Swapping attention inside tiny random-config Hugging Face models (harness/models/swap.py).

Sizes are distinct on purpose: B=2, H=4 query heads, 2 key-value heads (Llama), head_dim=16, T=13.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

transformers = pytest.importorskip("transformers")

import methods  # noqa: E402
from harness.models import swap  # noqa: E402
from tests import helpers  # noqa: E402

B, T, VOCAB = 2, 13, 97


def tiny_llama(max_pos: int = 64):
    return helpers.tiny_llama(VOCAB, max_positions=max_pos)


def tiny_opt():
    cfg = transformers.OPTConfig(vocab_size=VOCAB, hidden_size=64, ffn_dim=80, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64)
    torch.manual_seed(1)
    return transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()


def tiny_bert():
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                                  num_attention_heads=4, max_position_embeddings=64)
    torch.manual_seed(2)
    return transformers.AutoModel.from_config(cfg, attn_implementation="eager").eval()


def batch_with_padding(left: bool, pad_len: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (B, T), generator=gen)                   # [B, T]
    mask = torch.ones(B, T, dtype=torch.long)
    if left:
        mask[1, :pad_len] = 0
    else:
        mask[1, T - pad_len:] = 0
    return ids, mask


def output(model, ids, mask):
    out = model(input_ids=ids, attention_mask=mask)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state   # [B, T, *]


MODELS = {"llama-gqa": (tiny_llama, True), "opt": (tiny_opt, False), "bert": (tiny_bert, False)}


@pytest.mark.parametrize("precision", ["fp64", "native"])
@pytest.mark.parametrize("arch", sorted(MODELS))
def test_exact_through_swap_equals_eager(arch, precision):
    make, left = MODELS[arch]
    model = make()
    ids, mask = batch_with_padding(left)
    with torch.no_grad():
        ref = output(model, ids, mask)
        handle = swap.attach(model, "exact", {"precision": precision})
        got = output(model, ids, mask)
    assert handle.calls == 2                                                # both layers went through the method
    assert model.config._attn_implementation == handle.name
    real = mask.bool()
    err = (got - ref)[real].abs().max().item()
    assert err <= 1e-5, err
    handle.detach()
    assert model.config._attn_implementation == "eager"
    assert not any(swap.SUBMODULE in k for k in model.state_dict())
    with torch.no_grad():
        again = output(model, ids, mask)
    assert torch.equal(again, ref)


@pytest.mark.parametrize("arch", ["llama-gqa", "opt"])
@pytest.mark.parametrize("method", ["exact", "sdpa"])
def test_causal_mask_respected(arch, method):
    model = MODELS[arch][0]()
    ids, mask = batch_with_padding(left=True)
    later = ids.clone()
    later[:, 9:] = (later[:, 9:] + 5) % (VOCAB - 3) + 3                    # change tokens 9.. only
    swap.attach(model, method)
    with torch.no_grad():
        for m in (None, mask):                                             # no mask (flag only) and padded (bool mask)
            a = model(input_ids=ids, attention_mask=m).logits
            b = model(input_ids=later, attention_mask=m).logits
            assert torch.allclose(a[:, :9], b[:, :9], atol=1e-6, rtol=0)
            assert not torch.allclose(a[:, 9:], b[:, 9:], atol=1e-3)      # later positions do see the change
    swap.detach(model)


@pytest.mark.parametrize("method", ["exact", "sdpa"])
def test_bert_padding_respected(method):
    model = tiny_bert()
    gen = torch.Generator().manual_seed(3)
    real = torch.randint(3, VOCAB, (B, 9), generator=gen)                  # [B, 9] real tokens
    outs = []
    swap.attach(model, method)
    for pad in (2, 7):
        junk = torch.randint(3, VOCAB, (B, pad), generator=gen)            # padding ids are random, not 0
        ids = torch.cat([real, junk], dim=1)                               # [B, 9 + pad]
        mask = torch.cat([torch.ones(B, 9), torch.zeros(B, pad)], dim=1).long()
        mask[0, 9:] = 1                                                    # row 0: the "padding" is real here
        with torch.no_grad():
            outs.append(model(input_ids=ids, attention_mask=mask).last_hidden_state)
    swap.detach(model)
    assert torch.allclose(outs[0][1, :9], outs[1][1, :9], atol=1e-5, rtol=0)   # padded row: unchanged
    assert not torch.allclose(outs[0][0, :9], outs[1][0, :9], atol=1e-3)       # unpadded row sees its extra tokens


# --- mask conversion ------------------------------------------------------------------------------------

def test_mask_to_padding_forms():
    Tq = 6
    keys = torch.tensor([[True] * 6, [False, False, True, True, True, True]])           # [B, T]
    tri = torch.ones(Tq, Tq, dtype=torch.bool).tril()
    causal_mask = keys[:, None, None, :] & tri                                          # [B, 1, T, T]
    kpm, causal = swap.mask_to_padding(causal_mask, True, 2, Tq, Tq)
    assert causal and torch.equal(kpm, keys)
    # additive float form, layer flag wrong: the mask decides
    additive = torch.zeros(2, 1, Tq, Tq).masked_fill(~causal_mask, torch.finfo(torch.float32).min)
    kpm, causal = swap.mask_to_padding(additive, False, 2, Tq, Tq)
    assert causal and torch.equal(kpm, keys)
    # bidirectional with padding
    kpm, causal = swap.mask_to_padding(keys[:, None, None, :].expand(2, 1, Tq, Tq), False, 2, Tq, Tq)
    assert not causal and torch.equal(kpm, keys)
    # no padding at all -> None
    kpm, causal = swap.mask_to_padding(tri[None, None].expand(2, 1, Tq, Tq), True, 2, Tq, Tq)
    assert kpm is None and causal
    assert swap.mask_to_padding(None, True, 2, Tq, Tq) == (None, True)


def test_mask_to_padding_refuses_what_methods_cannot_take():
    Tq = 6
    idx = torch.arange(Tq)
    window = (idx[None, :] <= idx[:, None]) & (idx[None, :] > idx[:, None] - 3)          # sliding window of 3
    with pytest.raises(swap.SwapError, match="sliding window"):
        swap.mask_to_padding(window[None, None].expand(2, 1, Tq, Tq), True, 2, Tq, Tq)
    alibi = -0.5 * (idx[:, None] - idx[None, :]).abs().float()                           # additive bias
    with pytest.raises(swap.SwapError, match="additive biases"):
        swap.mask_to_padding(alibi[None, None].expand(2, 1, Tq, Tq), False, 2, Tq, Tq)


def test_registered_names_avoid_transformers_keywords():
    for name in ("flash", "sdpa", "flex_attention", "my-flash-sdpa"):
        reg = swap.registered_name(name)
        assert reg.startswith("harness:")
        assert "flash" not in reg and "sdpa" not in reg and "flex_attention" not in reg


# --- every registered method through a real model -------------------------------------------------------

ALL = sorted(methods.all_methods())
# CPU-time savers for CI (each method's own tests cover these paths): skip torch.compile and the Triton
# interpreter. Applied only where the method declares the option.
FAST_OPTIONS = {"flex": {"compile": "false"}, "sea": {"backend": "torch"}, "sea-oracle": {"backend": "torch"}}


def fast_options(name: str) -> dict:
    declared = methods.get(name).option_map()
    return {k: v for k, v in FAST_OPTIONS.get(name, {}).items() if k in declared}


@pytest.mark.parametrize("name", ALL)
def test_every_method_runs_in_tiny_llama_and_bert(name):
    cls = methods.get(name)
    why = cls.availability("cpu")
    if why:
        pytest.skip("; ".join(why))
    checked = 0
    skipped = []
    for make, padded in ((tiny_llama, False), (tiny_bert, True)):
        model = make()
        ids, mask = batch_with_padding(left=False) if padded else (batch_with_padding(False)[0], None)
        with torch.no_grad():
            ref = output(model, ids, mask)
            handle = swap.attach(model, name, fast_options(name), seed=0, seq_len=64)
            try:
                got = output(model, ids, mask)
            except swap.MethodRefused as exc:
                skipped.append(f"{make.__name__}: {'; '.join(exc.reasons)}")
                continue
            finally:
                handle.detach()
        real = mask.bool() if mask is not None else torch.ones(B, T, dtype=torch.bool)
        assert torch.isfinite(got[real]).all()
        assert handle.calls == 2
        if cls.exact:
            assert (got - ref)[real].abs().max().item() <= 1e-4
        checked += 1
    if not checked:
        pytest.skip(" | ".join(skipped))


def test_refusal_surfaces_with_the_methods_words():
    with helpers.registered_refuser(lambda p: f"head_dim={p.head_dim} is not welcome") as name:
        model = tiny_llama()
        swap.attach(model, name)
        with pytest.raises(swap.MethodRefused, match="head_dim=16 is not welcome") as info:
            model(input_ids=batch_with_padding(False)[0])
        assert info.value.reasons == ["head_dim=16 is not welcome"]
        swap.detach(model)


def test_unsupported_calls_raise_in_words():
    model = tiny_llama()
    swap.attach(model, "exact")
    with torch.no_grad(), pytest.raises(swap.SwapError, match="use_cache=False"):
        out = model(input_ids=batch_with_padding(False)[0], use_cache=True)
        model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values, use_cache=True)
    swap.detach(model)


# --- per-layer state ------------------------------------------------------------------------------------

def _stateful_method() -> str:
    """A registered approximate method whose per-layer modules hold seed-dependent tensors (via the registry)."""
    from methods.base import Problem

    problem = Problem(batch=B, heads=4, kv_heads=2, seq_len=64, head_dim=16)
    for name, cls in methods.all_methods().items():
        cfg = cls.resolve_config(fast_options(name))
        if cls.exact or cls.supports(problem, cfg):
            continue
        a, b = (cls.build(cfg, problem, layer=0, seed=s).state_dict() for s in (0, 1))
        if a and any(not torch.equal(a[k], b[k]) for k in a):
            return name
    pytest.skip("no registered method keeps seed-dependent per-layer tensors")


def test_state_is_part_of_the_model_and_round_trips(tmp_path):
    name = _stateful_method()
    opts = fast_options(name)
    ids = batch_with_padding(False)[0]
    model = tiny_llama()
    swap.attach(model, name, opts, seed=0, seq_len=64)
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    keys = [k for k in model.state_dict() if swap.SUBMODULE in k]
    assert keys and any(k.startswith("model.layers.0.self_attn.harness_attn.") for k in keys)
    assert any(k.startswith("model.layers.1.self_attn.harness_attn.") for k in keys)
    path = swap.save_method_state(model, tmp_path / "state.safetensors")

    # A fresh model with the same weights, the method attached with another seed: different until loaded.
    other = tiny_llama()
    swap.attach(other, name, opts, seed=123, seq_len=64)
    with torch.no_grad():
        before = other(input_ids=ids).logits
    assert not torch.allclose(before, ref, atol=1e-6)
    swap.load_method_state(other, path)
    with torch.no_grad():
        after = other(input_ids=ids).logits
    assert torch.equal(after, ref)

    # Layers not built yet are built from the stored problems, then loaded.
    third = tiny_llama()
    swap.attach(third, name, opts, seed=7, seq_len=64)
    swap.load_method_state(third, path)
    assert sorted(k for k in third.state_dict() if swap.SUBMODULE in k) == sorted(keys)
    with torch.no_grad():
        assert torch.equal(third(input_ids=ids).logits, ref)

    # A different method attached: refused in words.
    fourth = tiny_llama()
    swap.attach(fourth, "exact")
    with pytest.raises(swap.SwapError, match="holds state of method"):
        swap.load_method_state(fourth, path)


def test_two_models_two_configs_do_not_mix():
    a, b = tiny_llama(), tiny_llama()
    ids = batch_with_padding(False)[0]
    ha = swap.attach(a, "exact", {"precision": "fp64"})
    hb = swap.attach(b, "exact", {"precision": "native"})
    assert ha.name != hb.name
    with torch.no_grad():
        a(input_ids=ids)
        b(input_ids=ids)
    assert ha.impls() == ["eager[fp64]"] and hb.impls() == ["eager[native]"]
    ha.detach()
    hb.detach()
    from transformers import AttentionInterface

    assert ha.name not in AttentionInterface._global_mapping and hb.name not in AttentionInterface._global_mapping


def test_layers_without_layer_idx_are_numbered_in_walk_order():
    model = tiny_llama()
    for layer in model.model.layers:
        layer.self_attn.layer_idx = None
    handle = swap.attach(model, "exact")
    with torch.no_grad():
        model(input_ids=batch_with_padding(False)[0], use_cache=False)
    assert sorted(i.index for i in handle.layers.values()) == [0, 1]
    assert {i.name for i in handle.layers.values()} == {"model.layers.0.self_attn", "model.layers.1.self_attn"}
    handle.detach()


def test_sea_loads_one_layer_of_a_distilled_method_state(tmp_path):
    """`sea.checkpoint=<method_state.safetensors>` (what distill writes) with `sea.checkpoint_layer=N` gives a
    standalone SEA module the estimator of layer N of the model: a sweep can time / measure the trained SEA."""
    from methods.base import Problem, get

    model = tiny_llama()
    ids, mask = batch_with_padding(left=True)
    opts = {"backend": "torch", "k": "4", "K": "8", "max_len": "64"}
    handle = swap.attach(model, "sea", dict(opts), seed=3)
    with torch.no_grad():
        output(model, ids, mask)                                            # builds both layers' modules
    mods = {info.index: dict(model.named_modules())[info.name]._modules[swap.SUBMODULE]
            for info in handle.layers.values()}
    with torch.no_grad():
        for p in mods[1].estimator.parameters():                            # layer 1 differs from any fresh build
            p.add_(0.5)
    path = swap.save_method_state(model, tmp_path / "method_state.safetensors")
    info = next(i for i in handle.layers.values() if i.index == 1)
    cls = get("sea")
    cfg = cls.resolve_config({**opts, "checkpoint": str(path), "checkpoint_layer": "1"})
    mod = cls.build(cfg, Problem(**{**dataclasses.asdict(info.problem), "device": "cpu"}))
    for (name, a), (_, b) in zip(mod.estimator.state_dict().items(), mods[1].estimator.state_dict().items()):
        assert torch.equal(a, b), name
    assert "estimator=trained" in mod.impl
    with pytest.raises(ValueError, match="no attention layer 7"):
        cls.build(cls.resolve_config({**opts, "checkpoint": str(path), "checkpoint_layer": "7"}), info.problem)
