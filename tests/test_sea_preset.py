"""sea preset=train / fast / lean: the named option sets expand into the same configuration as the options written out,
options given explicitly win, the per-direction autos resolve as documented, a checkpoint keeps its feature count,
the built layer computes what the written-out options compute, and the report labels a preset's variant by its
name. CPU; the layers run with compile=none (inductor on the CPU would only slow the test)."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from harness.report import _variant
from methods.base import MethodConfigError, Problem, get
from methods.sea import AUTO_BY_DIRECTION, FAST, PRESETS, resolved
from tests.helpers import gaussian_qkv

SEA = get("sea")
WRITTEN_OUT = dict(performer_dtype="bf16", estimator_precision="tf32", estimator_dtype="bf16", compile="estimator",
                   sparse_pieces="1", shared_keys="64", shared_span="auto", encoder_operands="auto",
                   identity_values="auto", nbf="8")


def _without_preset(cfg):
    return {k: v for k, v in cfg.items() if k != "preset"}


def test_presets_expand_to_the_written_out_options():
    fast = SEA.resolve_config({"preset": "fast"})
    assert fast["preset"] == "fast"
    assert _without_preset(fast) == _without_preset(SEA.resolve_config(WRITTEN_OUT))
    lean = SEA.resolve_config({"preset": "lean"})
    assert _without_preset(lean) == _without_preset(SEA.resolve_config({**WRITTEN_OUT, "query_blocks": "8"}))
    train = SEA.resolve_config({"preset": "train"})
    written = {k: v for k, v in WRITTEN_OUT.items() if k in ("performer_dtype", "estimator_precision",
                                                             "estimator_dtype", "compile", "sparse_pieces")}
    assert _without_preset(train) == _without_preset(SEA.resolve_config(written)) and train["shared_keys"] == 0
    assert SEA.resolve_config({}) == SEA.resolve_config({"preset": "none"})
    assert set(FAST) <= set(SEA.option_map()) and set(PRESETS) == {"none", "train", "fast", "lean"}


def test_explicit_options_win_and_a_checkpoint_keeps_its_features(tmp_path):
    cfg = SEA.resolve_config({"preset": "lean", "shared_keys": "0", "query_blocks": "4", "nbf": "2"})
    assert (cfg["shared_keys"], cfg["query_blocks"], cfg["nbf"], cfg["performer_dtype"]) == (0, 4, 2.0, "bf16")
    ckpt = tmp_path / "est.pt"
    assert SEA.resolve_config({"preset": "fast", "checkpoint": str(ckpt)})["nbf"] == 0.0     # the default
    with pytest.raises(MethodConfigError, match="preset"):
        SEA.resolve_config({"preset": "fastest"})


@pytest.mark.parametrize("causal", [True, False])
def test_autos_resolve_per_direction(causal):
    cfg = SEA.resolve_config({"preset": "fast"})
    r = resolved(cfg, causal)
    for key, (causal_value, bidir_value) in AUTO_BY_DIRECTION.items():
        assert cfg[key] == "auto" and r[key] == (causal_value if causal else bidir_value)
    assert (r["shared_span"], r["encoder_operands"], r["identity_values"]) == (
        ("blocks", "fp32", "concat") if causal else ("strided", "bf16", "kernel"))
    assert resolved(SEA.resolve_config({"preset": "fast", "shared_keys": "0"}), causal)["shared_span"] == "strided"
    problem = Problem(1, 2, 2, 128, 16, dtype="bf16", causal=causal, device="cpu")
    assert SEA.supports(problem, cfg) == []                               # no option refused in either direction
    flex = " ".join(SEA.supports(problem, SEA.resolve_config({"preset": "fast", "backend": "flex"})))
    assert ("shared_span=blocks only" in flex) == (not causal), flex     # auto is strided bidirectionally


@pytest.mark.parametrize("causal", [True, False])
def test_preset_layer_computes_the_written_out_layer(causal):
    """The same weights (seed) and the same output as the options written out, the preset's autos resolved."""
    problem = Problem(1, 2, 2, 128, 16, dtype="bf16", causal=causal, device="cpu")
    q, k, v = gaussian_qkv(1, 2, 2, 128, 16, seed=4, dtype=torch.bfloat16)
    r = "blocks" if causal else "strided"
    explicit = {**WRITTEN_OUT, "compile": "none", "shared_span": r,
                "encoder_operands": "fp32" if causal else "bf16", "identity_values": "concat" if causal else "kernel"}
    outs, impls = [], []
    for raw in ({"preset": "fast", "compile": "none"}, explicit):
        layer = SEA.build(SEA.resolve_config(raw), problem).eval()
        with torch.no_grad():
            outs.append(layer(q, k, v, causal=causal))
        impls.append(layer.impl)
    assert torch.equal(outs[0], outs[1]) and outs[0].isfinite().all()
    assert impls[0] == impls[1] and "shared_keys=64" in impls[0], impls


def test_report_labels_a_preset_variant_by_its_name():
    def label(raw):
        return _variant(pd.Series({"method": "sea", "config": SEA.resolve_config(raw)}))

    assert label({"preset": "fast"}) == "sea[preset=fast]"
    assert label({"preset": "fast", "query_blocks": "4"}) == "sea[preset=fast,query_blocks=4]"
    assert label({"shared_keys": "64"}) == "sea[shared_keys=64]"
