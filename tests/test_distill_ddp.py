"""`python -m harness distill` under torchrun (2 CPU processes, gloo, DistributedDataParallel) against the
single-process run: same parameters with the same global batch, a 2-process checkpoint resumed by 1 process,
one run directory written by rank 0 only.

The distilled method is a small smooth learned attention registered for this test through the
`harness.methods` entry-point group (a plugin written to a temporary folder): softmax attention on queries
mixed by a learned per-head [D, D] matrix and a learned per-head temperature. Methods with discrete choices
(SEA's top-k mask) or parameters whose true gradient is zero (Adam turns float noise of size 1e-9 into steps of
size lr) would make a 1e-5 comparison of two reduction orders meaningless, not the trainer wrong."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from harness.models import data  # noqa: E402
from tests.helpers import ROOT, save_tiny_llama  # noqa: E402

MINILM = data.shared_root() / "models" / "minilm-l6"
METHOD = "ddp-probe"
RTOL = 1e-5

PLUGIN = '''
import os
import torch
from torch import nn
from methods.base import AttentionModule, Method, repeat_kv


class ProbeAttention(AttentionModule):
    def __init__(self, heads, head_dim, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.mix = nn.Parameter(torch.eye(head_dim).repeat(heads, 1, 1)
                                + 0.1 * torch.randn(heads, head_dim, head_dim, generator=g))   # [H, D, D]
        self.temp = nn.Parameter(0.1 * torch.randn(heads, generator=g))                       # [H]
        self.impl = "probe"

    def forward(self, q, k, v, *, causal, key_padding_mask=None, scale=None):
        if torch.is_grad_enabled() and os.environ.get("DDP_PROBE_LOG"):     # training forwards: rows seen
            with open(os.environ["DDP_PROBE_LOG"], "a") as f:
                f.write(f"{os.environ.get('RANK', '-')} {q.shape[0]}\\n")
        H = q.shape[1]
        qm = torch.einsum("bhtd,hde->bhte", q.float(), self.mix) * self.temp.exp()[None, :, None, None]
        out = torch.nn.functional.scaled_dot_product_attention(
            qm, repeat_kv(k, H).float(), repeat_kv(v, H).float(), is_causal=causal, scale=scale)  # [B, H, T, D]
        return out.to(q.dtype)


class Probe(Method):
    name = "ddp-probe"
    summary = "test-only learned query mixing"
    bidirectional_ok = False
    padding_ok = False

    @classmethod
    def build(cls, cfg, problem, *, layer=0, seed=0):
        return ProbeAttention(problem.heads, problem.head_dim, 1000 * seed + layer)
'''


def _write_plugin(root, source: str = PLUGIN, method: str = METHOD, cls: str = "Probe"):
    """A plugin package in `root` registering `method` (class `cls` of `source`) as a harness.methods entry."""
    module = "harness_" + method.replace("-", "_")
    (root / f"{module}.py").write_text(source)
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[harness.methods]\n{method} = {module}:{cls}\n")
    (info / "RECORD").write_text("")


def _tiny_llama(root):
    """A 2-layer Llama (GQA 4/2 heads, tied embeddings) with the shared MiniLM tokenizer, saved to root/model."""
    if not MINILM.is_dir():
        pytest.skip("shared MiniLM tokenizer not found")
    return save_tiny_llama(root / "model", MINILM, max_positions=64, intermediate_size=48)


def _common(model, method: str = METHOD) -> list[str]:
    """distill arguments shared by every run of a comparison (global batch 3, the model's weights trained too)."""
    return ["--model", str(model), "--method", method, "--seq-len", "24", "--batch", "3",
            "--max-train-tokens", "400", "--eval-tokens", "48", "--device", "cpu", "--quiet", "--lr", "1e-3",
            "--lr-method", "1e-2", "--lr-rest", "1e-3", "--keep-checkpoints", "10", "--seed", "5"]


def _harness(args, *, procs: int, plugin, log=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("DDP_PROBE_LOG", None)
    if log is not None:
        env["DDP_PROBE_LOG"] = str(log)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(plugin)])
    env["OMP_NUM_THREADS"] = "1"
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)] if procs > 1 else []
    res = subprocess.run([sys.executable, *launch, "-m", "harness", "distill", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """ref: 1 process, 4 steps, a checkpoint every step. ddp: 2 processes, 3 steps (checkpoints 2, 3).
    resumed: a copy of ddp without its step-3 checkpoint, resumed by 1 process up to step 4."""
    root = tmp_path_factory.mktemp("distill-ddp")
    model = _tiny_llama(root)
    plugin = root / "plugin"
    plugin.mkdir()
    _write_plugin(plugin)
    common = _common(model)
    _harness([*common, "--steps", "4", "--save-every", "1", "--out", str(root / "ref")], procs=1, plugin=plugin)
    ddp = _harness([*common, "--steps", "3", "--save-every", "2", "--out", str(root / "ddp")], procs=2,
                   plugin=plugin, log=root / "rows-seen.txt")
    shutil.copytree(root / "ddp", root / "resumed")
    shutil.rmtree(root / "resumed" / "checkpoints" / "step-0000003")
    resumed = _harness([*common, "--steps", "4", "--resume", "--out", str(root / "resumed")], procs=1,
                       plugin=plugin)
    seen = [tuple(map(int, x.split())) for x in (root / "rows-seen.txt").read_text().splitlines()]
    return {"root": root, "ddp_stdout": ddp.stdout, "resumed_stdout": resumed.stdout, "seen": seen}


def _state(run, step: int) -> dict[str, torch.Tensor]:
    """Method state and the model's trained weights at a checkpoint."""
    ck = run / "checkpoints" / f"step-{step:07d}"
    out = {f"method:{k}": v for k, v in safetensors_torch.load_file(str(ck / "method_state.safetensors")).items()}
    out.update({f"rest:{k}": v for k, v in safetensors_torch.load_file(str(ck / "rest.safetensors")).items()})
    return out


def _assert_same(got: dict, want: dict):
    """Method parameters within RTOL of the tensor's largest entry. The model's own weights (trained too, at
    --lr-rest) get 10 x RTOL: a few of the 2M embedding entries have gradients near Adam's eps, where Adam's
    normalisation magnifies reduction-order noise (seen: 5e-6)."""
    assert got.keys() == want.keys()
    assert any(k.startswith("method:") for k in want)
    for k, w in want.items():
        tol = RTOL if k.startswith("method:") else 10 * RTOL
        torch.testing.assert_close(got[k], w, rtol=tol, atol=tol * float(w.abs().max()), msg=k)


def test_two_processes_match_one_with_the_same_global_batch(runs):
    """Global batch 3 over 2 ranks: uneven slices (2 + 1 rows), so the per-term weights matter too."""
    ref, ddp = runs["root"] / "ref", runs["root"] / "ddp"
    # each training forward of each layer (2) of each step (3) saw the rank's slice, not the global batch
    assert sorted(runs["seen"]) == sorted([(0, 2)] * 6 + [(1, 1)] * 6)
    moved = _state(ref, 2)
    first = _state(ref, 1)
    # training moves the method's parameters well beyond the tolerance (the comparison is not vacuous)
    assert max(float((moved[k] - first[k]).abs().max() / first[k].abs().max()) for k in first
               if k.startswith("method:")) > 100 * RTOL
    for step in (2, 3):
        _assert_same(_state(ddp, step), _state(ref, step))
    m_ref = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    m_ddp = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip([m for m in m_ref if m["kind"] == "train"], [m for m in m_ddp if m["kind"] == "train"]):
        assert a["step"] == b["step"]                               # global (not per-rank) loss values
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["out_mse"] == pytest.approx(a["out_mse"],
                                                                                               rel=1e-4)


def test_two_process_checkpoint_resumed_by_one_process(runs):
    resumed = runs["root"] / "resumed"
    assert "resumed from" in runs["resumed_stdout"] and "step-0000002" in runs["resumed_stdout"]
    _assert_same(_state(resumed, 4), _state(runs["root"] / "ref", 4))
    meta = json.loads((resumed / "meta.json").read_text())
    assert meta["resumed_from"].endswith("step-0000002")
    steps = [json.loads(x)["step"] for x in (resumed / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "train"]
    assert steps == [1, 2, 3, 4]                                   # step 3 of the 2-process run logged once


def test_rank_zero_alone_writes_the_run_directory(runs):
    ddp = runs["root"] / "ddp"
    assert sorted(p.name for p in ddp.iterdir()) == ["checkpoints", "meta.json", "method_state.safetensors",
                                                     "metrics.jsonl", "rows.jsonl"]
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["step-0000002", "step-0000003"]
    metrics = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m["kind"]) for m in metrics] == [(0, "eval"), (1, "train"), (2, "train"), (3, "train"),
                                                         (3, "eval")]
    rows = [json.loads(x) for x in (ddp / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["extra"]["world_size"] == 2
    assert rows[0]["batch"] == 3                                    # the global batch
    assert json.loads((ddp / "meta.json").read_text())["world_size"] == 2
    assert runs["ddp_stdout"].count("method state:") == 1           # only rank 0 reports


@pytest.mark.parametrize("arch", ["bert-classifier", "llama-padded"])
def test_term_weights_make_uneven_padded_slices_add_up_to_the_batch_loss(arch):
    """In process, no torch.distributed: what DDP computes (the count-weighted sum over ranks of each term on the
    rank's slice, harness.train.ddp.term_counts) equals each term on the whole batch, with right padding of
    different lengths and slices of 2 + 1 rows; checks term_counts against the normalisers in losses.py."""
    from harness.train import ddp
    from harness.train.loop import Distiller, TrainConfig
    from tests.test_distill import T, VOCAB, pick, tiny_bert_classifier, tiny_llama

    causal = arch == "llama-padded"
    ids = torch.randint(3, VOCAB, (3, T), generator=torch.Generator().manual_seed(4))   # [B, T]
    mask = torch.ones(3, T, dtype=torch.long)
    mask[0, T - 50:] = 0
    mask[2, T - 120:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if not causal:
        batch["labels"] = torch.tensor([2, 0, 1])
    d = Distiller(tiny_llama() if causal else tiny_bert_classifier(), pick(causal, trainable=True), {},
                  example=batch, cfg=TrainConfig(lr_rest=0.0))
    _, full = d.losses(batch)
    subs = [{k: v[ddp.rank_slice(3, r, 2)] for k, v in batch.items()} for r in range(2)]
    assert [s["input_ids"].shape[0] for s in subs] == [2, 1]
    counts = [ddp.term_counts(d.kind, s) for s in subs]
    values = [d.losses(s)[1] for s in subs]
    terms = set(full) - {"loss"}
    assert {"out_mse", "hidden", "logits_kl", "task"} <= terms
    for t in terms:
        total = sum(c[t] for c in counts)
        got = sum(c[t] / total * v[t] for c, v in zip(counts, values))
        assert got == pytest.approx(full[t], rel=1e-5), t
        plain = sum(v[t] for v in values) / 2                       # ranks weighted equally: not the same
        if t in ("out_mse", "hidden"):
            assert plain != pytest.approx(full[t], rel=1e-3), t
    d.close()
