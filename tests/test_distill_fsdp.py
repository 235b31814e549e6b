"""`python -m harness distill --fsdp` under torchrun (2 CPU processes, gloo, FSDP2 fully_shard) against the
single-process run: same parameters and losses with the same global batch, the student really sharded, full
(unsharded) checkpoints that one process resumes and that a sharded run resumes in turn; --fsdp without torchrun
refused in words.

The method is test_distill_ddp's learned probe plus an `attention_probs` with a gradient to its parameters, so
the trainer's attention terms (computed after the forward, outside the sharded module's forward) are part of
the comparison. `note_trained` logs the local shape of a parameter after each step (sharded over 2 ranks:
half of the 4 heads each)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.test_distill_ddp import (PLUGIN, RTOL, _assert_same, _common, _harness, _state, _tiny_llama,
                                    _write_plugin)

METHOD = "fsdp-probe"

FSDP_PLUGIN = PLUGIN + '''

class ProbeWithProbs(ProbeAttention):
    def attention_probs(self, q, k, v, *, causal, rows, key_padding_mask=None, scale=None):
        H, D = q.shape[1], q.shape[-1]
        qm = torch.einsum("bhtd,hde->bhte", q.float(), self.mix) * self.temp.exp()[None, :, None, None]
        s = qm[:, :, rows] @ repeat_kv(k, H).float().transpose(-1, -2) * (scale or D ** -0.5)   # [B, H, R, T]
        if causal:
            s = s.masked_fill(torch.arange(k.shape[2])[None, :] > rows[:, None], float("-inf"))
        return s.softmax(-1)

    def note_trained(self, steps):
        if os.environ.get("DDP_PROBE_LOG"):
            from torch.distributed.tensor import DTensor
            local = self.mix.to_local() if isinstance(self.mix, DTensor) else self.mix
            with open(os.environ["DDP_PROBE_LOG"], "a") as f:
                f.write(f"note {os.environ.get('RANK', '-')} {type(self.mix).__name__} {list(local.shape)}\\n")


class ProbeP(Probe):
    name = "fsdp-probe"

    @classmethod
    def build(cls, cfg, problem, *, layer=0, seed=0):
        return ProbeWithProbs(problem.heads, problem.head_dim, 1000 * seed + layer)
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Evaluations every 2 steps. ref: 1 process, 5 steps, a checkpoint every step. fsdp: 2 processes --fsdp with
    the teacher sharded too (--fsdp-teacher shard), 3 steps (checkpoints 2, 3).
    resumed: fsdp without its step-3 checkpoint, resumed by 1 process up to step 4. back: resumed (its step-4
    checkpoint written by 1 process) resumed by 2 processes --fsdp up to step 5."""
    root = tmp_path_factory.mktemp("distill-fsdp")
    model = _tiny_llama(root)
    plugin = root / "plugin"
    plugin.mkdir()
    _write_plugin(plugin, FSDP_PLUGIN, METHOD, "ProbeP")
    common = [*_common(model, METHOD), "--eval-every", "2"]     # an evaluation between training steps too
    _harness([*common, "--steps", "5", "--save-every", "1", "--out", str(root / "ref")], procs=1, plugin=plugin)
    fsdp = _harness([*common, "--fsdp", "--fsdp-teacher", "shard", "--steps", "3", "--save-every", "2", "--out",
                     str(root / "fsdp")], procs=2, plugin=plugin, log=root / "seen.txt")
    shutil.copytree(root / "fsdp", root / "resumed")
    shutil.rmtree(root / "resumed" / "checkpoints" / "step-0000003")
    resumed = _harness([*common, "--steps", "4", "--resume", "--out", str(root / "resumed")], procs=1, plugin=plugin)
    shutil.copytree(root / "resumed", root / "back")
    back = _harness([*common, "--fsdp", "--steps", "5", "--resume", "--out", str(root / "back")], procs=2,
                    plugin=plugin)
    seen = (root / "seen.txt").read_text().splitlines()
    return {"root": root, "fsdp_stdout": fsdp.stdout, "resumed_stdout": resumed.stdout, "back_stdout": back.stdout,
            "seen": seen}


def _train_metrics(run) -> list[dict]:
    return [m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if m["kind"] == "train"]


def _optimizer(run, step: int) -> dict:
    return torch.load(run / "checkpoints" / f"step-{step:07d}" / "trainer.pt", weights_only=False)["optimizer"]


def _kl_tolerance(kl: float) -> float:
    """How far two runs' KL terms may differ when their logits agree to within DELTA = 1e-5: the KL's derivative
    in the logits is a difference of the two softmaxes, whose total variation is at most sqrt(KL / 2) (Pinsker), so
    |dKL| <= 2 * DELTA * sqrt(KL / 2). A relative 1e-4 is the tighter of the two for KLs above ~2e-2 only; near
    zero the KL is a small difference of large log-probabilities and its relative error grows like 1 / sqrt(KL).
    The student's own weights are trained here (--lr-rest), and Adam magnifies reduction-order noise in entries
    whose gradient is near its eps (see `_assert_same`): on the CI's processors a logits KL of 2.9e-4 came out
    1.7e-4 apart relatively (|dKL| 4.9e-8, against this bound's 2.4e-7). The loss, which holds the KLs, is still
    compared at 1e-5 relative."""
    return max(1e-4 * kl, 2 * 1e-5 * (kl / 2) ** 0.5)


def test_fsdp_two_processes_match_one_with_the_same_global_batch(runs):
    """Global batch 3 over 2 ranks (2 + 1 rows): parameters, AdamW moments and logged losses as 1 process."""
    root = runs["root"]
    ref, fsdp = root / "ref", root / "fsdp"
    rows = sorted(tuple(map(int, x.split())) for x in runs["seen"] if not x.startswith("note"))
    assert rows == sorted([(0, 2)] * 6 + [(1, 1)] * 6)          # each rank trained on its slice (2 layers x 3 steps)
    notes = sorted(x for x in runs["seen"] if x.startswith("note"))
    # after each step each rank holds half of every method module's [H=4, D, D] parameter: sharded, not replicated
    assert notes == sorted([f"note {r} DTensor [2, 16, 16]" for r in (0, 1)] * 6)
    first, moved = _state(ref, 1), _state(ref, 2)
    assert max(float((moved[k] - first[k]).abs().max() / first[k].abs().max()) for k in first
               if k.startswith("method:")) > 100 * RTOL                    # the comparison is not vacuous
    for step in (2, 3):
        _assert_same(_state(fsdp, step), _state(ref, step))
    got, want = _optimizer(fsdp, 3), _optimizer(ref, 3)             # full (gathered) AdamW state, same indices
    assert [g["name"] for g in got["param_groups"]] == [g["name"] for g in want["param_groups"]] == ["method", "rest"]
    assert [g["params"] for g in got["param_groups"]] == [g["params"] for g in want["param_groups"]]
    assert got["state"].keys() == want["state"].keys()
    for i in list(want["state"])[:4]:                                # the method parameters' moments
        for key in ("exp_avg", "exp_avg_sq"):
            w = want["state"][i][key]
            torch.testing.assert_close(got["state"][i][key], w, rtol=1e-4, atol=1e-4 * float(w.abs().max()))
    m_ref, m_fsdp = _train_metrics(ref), _train_metrics(fsdp)
    assert [m["step"] for m in m_fsdp] == [1, 2, 3]
    for a, b in zip(m_ref, m_fsdp):
        assert a["step"] == b["step"] and b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        for term in ("out_mse", "attn_mse", "hidden", "task"):                           # attention terms used
            assert b[term] == pytest.approx(a[term], rel=1e-4), term
        for term in ("attn_kl", "logits_kl"):
            assert abs(b[term] - a[term]) <= _kl_tolerance(a[term]), (term, a[term], b[term])
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)


def test_fsdp_checkpoint_resumed_by_one_process_and_back(runs):
    root = runs["root"]
    resumed, back = root / "resumed", root / "back"
    assert "resumed from" in runs["resumed_stdout"] and "step-0000002" in runs["resumed_stdout"]
    _assert_same(_state(resumed, 4), _state(root / "ref", 4))
    assert "step-0000004" in runs["back_stdout"]
    _assert_same(_state(back, 5), _state(root / "ref", 5))
    assert [m["step"] for m in _train_metrics(back)] == [1, 2, 3, 4, 5]
    m_ref = _train_metrics(root / "ref")
    assert _train_metrics(back)[-1]["loss"] == pytest.approx(m_ref[-1]["loss"], rel=1e-5)
    meta = json.loads((back / "meta.json").read_text())
    assert meta["resumed_from"].endswith("step-0000004") and meta["fsdp"] is True and meta["world_size"] == 2
    assert meta["fsdp_teacher"].startswith("replicated (auto: teacher weights")   # tiny teacher: replicated


def test_fsdp_rank_zero_alone_writes_the_run_directory(runs):
    fsdp = runs["root"] / "fsdp"
    assert sorted(p.name for p in fsdp.iterdir()) == ["checkpoints", "meta.json", "method_state.safetensors",
                                                      "metrics.jsonl", "rows.jsonl"]
    assert sorted(p.name for p in (fsdp / "checkpoints").iterdir()) == ["step-0000002", "step-0000003"]
    metrics = [json.loads(x) for x in (fsdp / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m["kind"]) for m in metrics] == [(0, "eval"), (1, "train"), (2, "train"), (2, "eval"),
                                                         (3, "train"), (3, "eval")]
    ref_eval = {m["step"]: m["eval_ppl"] for m in map(json.loads, (runs["root"] / "ref" / "metrics.jsonl")
                                                      .read_text().splitlines()) if m["kind"] == "eval"}
    for m in metrics:                                               # evaluated by the sharded student
        if m["kind"] == "eval" and m["step"] in ref_eval:
            assert m["eval_ppl"] == pytest.approx(ref_eval[m["step"]], rel=1e-5), m["step"]
    rows = [json.loads(x) for x in (fsdp / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["extra"]["fsdp"] is True
    # the teacher was sharded too (every rank took part in its evaluation and its forwards): same teacher
    # perplexity and, above, the same training as one process with a whole teacher
    meta, ref_meta = (json.loads((r / "meta.json").read_text()) for r in (fsdp, runs["root"] / "ref"))
    assert meta["fsdp_teacher"] == "sharded (shard: asked for)" == rows[0]["extra"]["fsdp_teacher"]
    assert meta["teacher_eval"]["eval_ppl"] == pytest.approx(ref_meta["teacher_eval"]["eval_ppl"], rel=1e-5)
    assert runs["fsdp_stdout"].count("method state:") == 1


def test_fsdp_without_torchrun_is_refused_in_words(capsys, monkeypatch):
    from harness.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["distill", "--model", "unused", "--method", "unused", "--steps", "1", "--fsdp"]) == 2
    err = capsys.readouterr().err
    assert "--fsdp" in err and "torchrun" in err and "single process" in err


@pytest.mark.parametrize("arch", ["llama", "bert-classifier"])
def test_fsdp_units_are_the_transformer_layers(arch):
    """In process: the unit of each method module is its layer (the outermost ModuleList element on its path)."""
    from harness.train.fsdp import layer_units
    from harness.train.loop import Distiller, TrainConfig, method_modules
    from tests.test_distill import bert_batch, llama_batch, pick, tiny_bert_classifier, tiny_llama

    causal = arch == "llama"
    d = Distiller(tiny_llama() if causal else tiny_bert_classifier(), pick(causal, trainable=True), {},
                  example=llama_batch() if causal else bert_batch(), cfg=TrainConfig(lr_rest=0.0))
    names = [n for n, _ in method_modules(d.student)]
    modules = {id(m): n for n, m in d.student.named_modules()}
    got = [modules[id(u)] for u in layer_units(d.student, names)]
    stack = "model.layers" if causal else "bert.encoder.layer"
    assert got == [f"{stack}.{i}" for i in range(len(names))] and len(names) >= 2
    with pytest.raises(ValueError, match="no transformer layer"):
        layer_units(d.student, ["lm_head" if causal else "classifier"])
    d.close()


def test_fsdp_teacher_without_fsdp_is_refused_in_words(capsys, monkeypatch):
    from harness.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["distill", "--model", "unused", "--method", "unused", "--steps", "1", "--fsdp-teacher", "shard"]) == 2
    assert "--fsdp-teacher shard applies with --fsdp only" in capsys.readouterr().err


def test_teacher_policy_shards_by_size_and_finds_the_layers(monkeypatch):
    """auto shards the teacher above a quarter of one rank's device memory; shard / replicate are obeyed; the
    teacher's units are its transformer layers (the shallowest ModuleList)."""
    from harness.train import fsdp as F
    from tests.test_distill import tiny_llama

    model = tiny_llama()
    need = F.teacher_bytes(model)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())           # tied weights once
    assert weights > 0 and weights <= need <= weights + 4096                            # + small buffers (rotary)
    cpu = torch.device("cpu")
    monkeypatch.setattr(F, "device_bytes", lambda device: 4 * need - 1)
    assert F.teacher_policy("auto", model, cpu)[0] == "shard"
    monkeypatch.setattr(F, "device_bytes", lambda device: 4 * need)
    choice, why = F.teacher_policy("auto", model, cpu)
    assert choice == "replicate" and "per rank" in why
    assert F.teacher_policy("shard", model, cpu) == ("shard", "asked for")
    assert F.teacher_policy("replicate", model, cpu) == ("replicate", "asked for")
    with pytest.raises(ValueError, match="expected auto, shard or replicate"):
        F.teacher_policy("half", model, cpu)
    names = {id(m): n for n, m in model.named_modules()}
    assert [names[id(u)] for u in F.block_units(model)] == [f"model.layers.{i}" for i in
                                                            range(model.config.num_hidden_layers)]
    with pytest.raises(ValueError, match="no nn.ModuleList"):
        F.block_units(torch.nn.Linear(2, 2))
