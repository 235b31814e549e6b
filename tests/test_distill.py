"""Distillation trainer (harness/train) and `python -m harness distill` on tiny random-config models: Llama with GQA
(4 query heads, 2 key-value heads, head_dim 16) and a BERT sequence classifier (bidirectional, key padding).

The trainable method is picked from the registry (the one whose built module has the fewest parameters > 0),
the refused one likewise (a method whose module has none)."""
from __future__ import annotations

import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

import methods  # noqa: E402
from harness.models import data  # noqa: E402
from harness.train.loop import (DistillError, Distiller, TrainConfig, batch_at, latest_checkpoint,  # noqa: E402
                                list_checkpoints)
from methods.base import Problem  # noqa: E402
from tests import helpers  # noqa: E402
from tests.helpers import save_tiny_llama  # noqa: E402

B, T, VOCAB = 2, 200, 97
MINILM = data.shared_root() / "models" / "minilm-l6"


def pick(causal: bool, *, trainable: bool) -> str:
    """A method that runs this test's problem on CPU with backward, with (fewest) or without parameters."""
    p = Problem(batch=B, heads=4, kv_heads=2 if causal else 4, seq_len=T, head_dim=16, causal=causal,
                backward=True, padding=not causal)
    found = []
    for name, cls in methods.all_methods().items():
        cfg = cls.resolve_config({})
        if cls.supports(p, cfg):
            continue
        n = sum(x.numel() for x in cls.build(cfg, p).parameters())
        if (n > 0) == trainable:
            found.append((n, name))
    assert found, f"no registered method {'with' if trainable else 'without'} parameters"
    return min(found)[1]


def tiny_llama():
    return helpers.tiny_llama(VOCAB, max_positions=256)


def tiny_bert_classifier():
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                                  num_attention_heads=4, max_position_embeddings=256, num_labels=3)
    torch.manual_seed(2)
    return transformers.AutoModelForSequenceClassification.from_config(cfg, attn_implementation="eager").eval()


def llama_batch(seed=1):
    return {"input_ids": torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))}


def bert_batch():
    ids = torch.randint(3, VOCAB, (B, T), generator=torch.Generator().manual_seed(3))   # [B, T]
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, T - 71:] = 0                                                     # right padding on row 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([2, 0])}


def distill_part(values: dict, weights: dict) -> float:
    """The weighted loss without the task term (constant while the model's weights are frozen)."""
    return sum(weights[k] * v for k, v in values.items() if k in weights and k != "task")


@pytest.mark.parametrize("arch", ["llama-gqa", "bert-classifier"])
def test_distillation_lowers_the_loss_on_a_fixed_batch(arch):
    causal = arch == "llama-gqa"
    model, batch = (tiny_llama(), llama_batch()) if causal else (tiny_bert_classifier(), bert_batch())
    name = pick(causal, trainable=True)
    d = Distiller(model, name, {}, example=batch, cfg=TrainConfig(lr=1e-3, lr_method=1e-1, lr_rest=0.0), seed=0)
    assert d.kind == ("causal" if causal else "classification")
    assert d.n_method_params() > 0
    frozen = {n: p.detach().clone() for n, p in d.rest_named}
    teacher_before = {n: p.detach().clone() for n, p in d.teacher.named_parameters()}
    _, before = d.losses(batch)
    assert {"out_mse", "hidden", "logits_kl", "task"} <= set(before)
    for _ in range(8):
        d.train_step(batch)
    _, after = d.losses(batch)
    assert d.step == 8
    assert distill_part(after, d.weights) < 0.99 * distill_part(before, d.weights), (before, after)
    for n, p in d.rest_named:                                                # lr_rest=0: the model is frozen
        assert torch.equal(p, frozen[n]), n
    for n, p in d.teacher.named_parameters():                                # the teacher never moves
        assert torch.equal(p, teacher_before[n]), n
    d.close()


def test_sea_distillation_gets_every_recipe_term():
    d = Distiller(tiny_llama(), "sea", {"backend": "torch"}, example=llama_batch(), cfg=TrainConfig(lr_rest=1e-4))
    values = d.train_step(llama_batch())
    assert {"est_kl", "est_mse", "attn_kl", "attn_mse", "out_mse", "hidden", "logits_kl", "task"} <= set(values)
    assert not any("attention terms skipped" in n for n in d.notes())
    d.close()


def test_terms_beyond_max_attn_tokens_are_dropped_and_said():
    model, batch = tiny_llama(), llama_batch()
    d = Distiller(model, pick(True, trainable=True), {}, example=batch, cfg=TrainConfig(max_attn_tokens=T - 1))
    _, values = d.losses(batch)
    assert "out_mse" in values and not {"attn_kl", "attn_mse", "est_kl", "est_mse"} & set(values)
    assert any(f"T={T} > max_attn_tokens={T - 1}" in n for n in d.notes())


def test_teacher_layer_target_differs_from_self_beyond_the_first_layer():
    batch = llama_batch()
    name = pick(True, trainable=True)
    own = Distiller(tiny_llama(), name, {}, example=batch, cfg=TrainConfig(lr_rest=0.0)).losses(batch)[1]
    d = Distiller(tiny_llama(), name, {}, example=batch, cfg=TrainConfig(layer_target="teacher", lr_rest=0.0))
    teach = d.losses(batch)[1]
    # layer 0 sees the same q/k/v either way; layer 1's student q/k/v already differ from the teacher's
    assert teach["out_mse"] != own["out_mse"]
    assert teach["hidden"] == pytest.approx(own["hidden"], rel=1e-6)      # model-level terms do not depend on it
    d.train_step(batch)
    assert torch.isfinite(torch.tensor(d.losses(batch)[1]["loss"]))


def test_checkpoint_and_resume_continue_at_the_right_step(tmp_path):
    windows = torch.randint(0, VOCAB, (5, T), generator=torch.Generator().manual_seed(7))   # [N, T]

    def batch(step):
        return {"input_ids": batch_at(windows, step, B, seed=3)}

    name = pick(True, trainable=True)
    cfg = TrainConfig(lr=1e-3, lr_method=1e-2, lr_rest=1e-3)                # the model's weights train too
    straight = Distiller(tiny_llama(), name, {}, example=batch(0), cfg=cfg)
    for s in range(4):
        straight.train_step(batch(s))

    first = Distiller(tiny_llama(), name, {}, example=batch(0), cfg=cfg)
    for s in range(2):
        first.train_step(batch(s))
    first.save(tmp_path / "ckpt", keep=1)
    first.train_step(batch(2))                                              # a step after the checkpoint is lost
    first.save(tmp_path / "ckpt-later", keep=1)
    assert [p.name for p in list_checkpoints(tmp_path / "ckpt")] == ["step-0000002"]

    resumed = Distiller(tiny_llama(), name, {}, example=batch(0), cfg=cfg)
    resumed.load(latest_checkpoint(tmp_path / "ckpt"))
    assert resumed.step == 2
    while resumed.step < 4:
        resumed.train_step(batch(resumed.step))
    sd_a, sd_b = straight.student.state_dict(), resumed.student.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), k
    oa, ob = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys() and len(oa["state"]) > 0
    for i in oa["state"]:
        for key, val in oa["state"][i].items():
            assert torch.equal(val, ob["state"][i][key]), (i, key)


def test_batches_depend_only_on_seed_and_step():
    w = torch.arange(7)[:, None]                                            # [N, 1]
    seen = torch.cat([batch_at(w, s, 3, seed=1)[:, 0] for s in range(7)])   # 21 = 3 epochs
    assert sorted(seen[:7].tolist()) == list(range(7))                     # epoch 0 is a permutation
    assert sorted(seen.tolist()) == sorted(list(range(7)) * 3)
    assert torch.equal(batch_at(w, 4, 3, seed=1), batch_at(w, 4, 3, seed=1))
    assert not torch.equal(torch.cat([batch_at(w, s, 3, seed=2) for s in range(3)]),
                           torch.cat([batch_at(w, s, 3, seed=1) for s in range(3)]))


def test_method_without_parameters_trains_the_model_and_is_refused_when_it_is_frozen():
    name = pick(True, trainable=False)
    with pytest.raises(DistillError, match=f"method '{name}' has no trainable parameters .* frozen"):
        Distiller(tiny_llama(), name, {}, example=llama_batch(), cfg=TrainConfig(lr_rest=0.0))
    model, batch = tiny_llama(), llama_batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    d = Distiller(model, name, {}, example=batch, cfg=TrainConfig(lr_rest=1e-3))
    d.train_step(batch)
    moved = [n for n, p in d.student.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert moved and all(torch.equal(p, before[n]) for n, p in d.teacher.named_parameters())


def test_bf16_autocast_keeps_method_parameters_fp32():
    model, batch = tiny_llama(), llama_batch()
    d = Distiller(model, pick(True, trainable=True), {}, example=batch, cfg=TrainConfig(amp="bf16", lr_rest=0.0))
    values = d.train_step(batch)
    assert all(p.dtype == torch.float32 for p in d.method_params)
    assert torch.isfinite(torch.tensor(values["loss"]))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    if not MINILM.is_dir():
        pytest.skip("shared MiniLM tokenizer not found")
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), MINILM, max_positions=128)


def test_cli_distill_writes_metrics_checkpoints_and_resumes(tiny_dir, tmp_path, capsys):
    from harness.cli import main

    name = pick(True, trainable=True)
    out = tmp_path / "run"
    common = ["distill", "--model", str(tiny_dir), "--method", name, "--seq-len", "32", "--batch", "2",
              "--max-train-tokens", "600", "--eval-tokens", "200", "--device", "cpu", "--out", str(out), "--quiet"]
    assert main([*common, "--steps", "3", "--save-every", "2", "--eval-every", "2"]) == 0
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if m["kind"] == "train"]
    evals = [m for m in metrics if m["kind"] == "eval"]
    assert [m["step"] for m in train] == [1, 2, 3]
    assert [m["step"] for m in evals] == [0, 2, 3] and all(m["eval_ppl"] > 1 for m in evals)
    assert all("out_mse" in m and "loss" in m for m in train)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-0000002", "step-0000003"]
    assert (out / "method_state.safetensors").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["setting"]["data"]["eval"]["spec"] == "wikitext-2-test"
    assert set(meta["setting"]["data"]) == {"austen", "wikitext-2-valid", "eval"}

    with open(out / "metrics.jsonl", "a") as f:                             # as if killed after step 4
        f.write(json.dumps({"step": 4, "kind": "train", "loss": 1.0}) + "\n")
    assert main([*common, "--steps", "5", "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == [1, 2, 3, 4, 5]   # step 4 logged once, anew
    assert next(m for m in metrics if m["step"] == 4)["loss"] != 1.0
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["extra"]["final"]["step"] for r in rows] == [3, 5]
    assert rows[-1]["extra"]["resumed_from"].endswith("step-0000003") and rows[-1]["status"] == "ok"

    refused = pick(True, trainable=False)
    assert main([*common[:4], refused, *common[5:-3], "--out", str(tmp_path / "no"), "--quiet", "--steps", "2",
                 "--lr-rest", "0"]) == 2
    assert "nothing to train" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_cli_distill_time_limit_stops_early_and_resume_finishes(tiny_dir, tmp_path):
    """A method without parameters trains the model's own weights; --time-limit 0 stops after one step with a
    row of its own, and --resume then goes on to --steps."""
    from harness.cli import main

    name = pick(True, trainable=False)
    out = tmp_path / "run"
    common = ["distill", "--model", str(tiny_dir), "--method", name, "--seq-len", "32", "--batch", "2",
              "--max-train-tokens", "600", "--eval-tokens", "200", "--device", "cpu", "--out", str(out), "--quiet",
              "--steps", "3"]
    assert main([*common, "--time-limit", "0", "--eval-every", "1"]) == 0     # step 1 evaluated, then stop
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert [(r["extra"]["steps_done"], r["extra"]["time_limited"]) for r in rows] == [(1, True)]
    assert rows[0]["cell_id"].endswith("@step1") and "stopped by --time-limit" in rows[0]["extra"]["notes"][-1]
    assert json.loads((out / "meta.json").read_text())["finished"] is False
    assert main([*common, "--resume"]) == 0
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert [(r["extra"]["steps_done"], r["extra"]["time_limited"]) for r in rows] == [(1, True), (3, False)]
    train = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in train if m["kind"] == "train"] == [1, 2, 3]
    assert [m["step"] for m in train if m["kind"] == "eval"] == [0, 1, 3]      # each evaluated step once

    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0       # the training report
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Training (distillation)" in md and (tmp_path / "rep" / "training_curves.png").is_file()
    line = next(x for x in md.splitlines() if x.startswith(f"| {name} |"))
    assert line.split(" | ")[1] == "3"                                        # steps done of the latest row


def test_hidden_norm_divides_each_layer_by_the_teachers_mean_square():
    from harness.train import losses as L

    g = torch.Generator().manual_seed(0)
    hs = [torch.randn(2, 5, 4, generator=g) for _ in range(3)]              # [B, T, C] per layer
    ht = [torch.randn(2, 5, 4, generator=g) * (10 ** i) for i in range(3)]  # layers of very different scale
    raw = L.hidden_mse(hs, ht, None)
    scale = torch.tensor([1.0, 100.0, 10000.0])
    per_layer = [((a - b) ** 2).mean() for a, b in zip(hs, ht)]
    torch.testing.assert_close(raw, sum(per_layer) / 3)
    torch.testing.assert_close(L.hidden_mse(hs, ht, None, scale=scale), sum(p / s for p, s in zip(per_layer, scale)) / 3)

    model, batch = tiny_llama(), llama_batch()
    d = Distiller(model, pick(True, trainable=True), {}, example=batch, cfg=TrainConfig(hidden_norm=True, lr_rest=0.0))
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], output_hidden_states=True).hidden_states
    want = torch.stack([(h.float() ** 2).mean() for h in hidden])
    torch.testing.assert_close(d.hidden_scale, want)
    _, values = d.losses(batch)
    assert math.isfinite(values["hidden"])
    d.close()


def test_cli_distill_out_of_memory_is_a_row_with_what_to_change(tiny_dir, tmp_path, capsys, monkeypatch):
    """Running out of memory mid-run: exit 1, an `oom` row naming the step and the options that would help (the
    attention terms first when they are on), the checkpoints written so far kept, and --resume goes on."""
    from harness.cli import main
    from harness.train.loop import Distiller

    name = pick(True, trainable=True)
    out = tmp_path / "run"
    common = ["distill", "--model", str(tiny_dir), "--method", name, "--seq-len", "32", "--batch", "2",
              "--max-train-tokens", "600", "--eval-tokens", "200", "--device", "cpu", "--out", str(out), "--quiet",
              "--steps", "3", "--save-every", "1"]
    real = Distiller.train_step

    def step_then_oom(self, batch):
        if self.step >= 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.12 GiB (simulated)")
        return real(self, batch)

    monkeypatch.setattr(Distiller, "train_step", step_then_oom)
    assert main(common) == 1
    err = capsys.readouterr().err
    assert "out of memory in step 2" in err and "--attn-rows 256" in err
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "oom" and rows[0]["extra"]["steps_done"] == 1
    assert rows[0]["cell_id"].endswith("@oom-step2") and "Tried to allocate 1.12 GiB" in rows[0]["reason"]
    assert rows[0]["reason"].index("--attn-rows") < rows[0]["reason"].index("smaller --batch")
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-0000001"]
    assert json.loads((out / "meta.json").read_text())["finished"] is False
    monkeypatch.setattr(Distiller, "train_step", real)
    assert main([*common, "--resume"]) == 0                                   # memory freed: goes on
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["oom", "ok"] and rows[-1]["extra"]["steps_done"] == 3


def test_oom_hints_name_only_what_applies():
    import argparse

    from harness.tasks.distill import oom_hints

    a = argparse.Namespace(attn_rows=0, seq_len=2048, batch=8, fsdp=False)
    assert [h.split()[0] for h in oom_hints(a, True)] == ["--attn-rows", "a", "--fsdp"]
    assert [h.split()[0] for h in oom_hints(a, False)] == ["a", "--fsdp"]          # no attention terms in use
    a.attn_rows, a.fsdp = 256, True
    assert oom_hints(a, True) == ["a smaller --batch (now 8) or --seq-len (now 2048)"]
