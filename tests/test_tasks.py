"""Model-level tasks (perplexity, fidelity), model loading and corpora, on a tiny random Llama (GQA: 4 query heads,
2 key-value heads, head_dim 16) that uses the MiniLM WordPiece tokenizer, and on the real MiniLM encoder."""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from harness.cli import main  # noqa: E402
from harness.models import data, load, swap  # noqa: E402
from tests.helpers import read_rows, registered_refuser, run_cli, save_tiny_llama  # noqa: E402

SHARED = data.shared_root()
MINILM = SHARED / "models" / "minilm-l6"
WIKI = SHARED / "data" / "wikitext-2-raw" / "wiki.test.raw"
SMOLLM = SHARED / "models" / "smollm2-135m"
needs_shared = pytest.mark.skipif(not (MINILM.is_dir() and WIKI.is_file()), reason="shared models/data not found")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A saved tiny random Llama with the MiniLM tokenizer (no BOS)."""
    if not MINILM.is_dir():
        pytest.skip("shared MiniLM tokenizer not found")
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), MINILM, max_positions=256)


def own_perplexity(path: Path, n_tokens: int, context: int) -> tuple[float, int]:
    """Perplexity by the model's own eager attention, computed here independently of the task."""
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager").eval()
    ids = tok(WIKI.read_text()[:20000], add_special_tokens=False)["input_ids"][:n_tokens]
    total, count = 0.0, 0
    for s in range(0, len(ids), context):
        w = torch.tensor([ids[s:s + context]])                             # [1, <=context]
        if w.shape[1] < 2:
            continue
        with torch.no_grad():
            logits = model(input_ids=w, use_cache=False).logits[0, :-1]     # [T-1, V]
        total += torch.nn.functional.cross_entropy(logits, w[0, 1:], reduction="sum").item()
        count += w.shape[1] - 1
    return math.exp(total / count), count


# --- perplexity -------------------------------------------------------------------------------------------

@needs_shared
def test_perplexity_on_wikitext_matches_the_models_own_attention(tiny_dir, tmp_path, capsys):
    out = tmp_path / "ppl"
    rc = main(["perplexity", "--model", str(tiny_dir), "--methods", "exact,sdpa,performer", "--text",
               "wikitext-2-test", "--context", "64", "--max-tokens", "300", "--device", "cpu", "--out", str(out),
               "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| exact |" in printed and "no BOS" in printed
    rows = {r["method"]: r for r in read_rows(out)}
    assert set(rows) == {"exact", "sdpa", "performer"}
    ref_ppl, ref_count = own_perplexity(tiny_dir, 300, 64)
    assert ref_count == 300 - math.ceil(300 / 64)                          # first token of each window not predicted
    for name, r in rows.items():
        assert r["status"] == "ok", r["reason"]
        assert r["extra"]["n_tokens"] == ref_count
        assert r["extra"]["context"] == 64 and r["extra"]["model"] == str(tiny_dir)
        assert r["seq_len"] == 64 and r["heads"] == 4 and r["kv_heads"] == 2 and r["head_dim"] == 16
        assert math.isfinite(r["extra"]["perplexity"]) and r["extra"]["perplexity"] > 1
        assert r["impl"]
    for name in ("exact", "sdpa"):
        assert rows[name]["extra"]["perplexity"] == pytest.approx(ref_ppl, rel=1e-5)
    assert rows["performer"]["extra"]["perplexity"] != rows["exact"]["extra"]["perplexity"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["task"] == "perplexity" and "git" in meta and "versions" in meta
    # resume: nothing left to do, no new rows
    assert main(["perplexity", "--model", str(tiny_dir), "--methods", "exact", "--text", "wikitext-2-test",
                 "--context", "64", "--max-tokens", "300", "--device", "cpu", "--out", str(out), "--quiet",
                 "--resume"]) == 0
    assert len(read_rows(out)) == 3


def test_perplexity_refusal_is_an_unsupported_row(tiny_dir, tmp_path):
    with registered_refuser(lambda p: f"seq_len={p.seq_len} is not welcome") as name:
        text = tmp_path / "t.txt"
        text.write_text("the quick brown fox jumps over the lazy dog . " * 20)
        out = tmp_path / "ppl"
        assert main(["perplexity", "--model", str(tiny_dir), "--methods", f"{name},exact", "--text", str(text),
                     "--context", "32", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    rows = {r["method"]: r for r in read_rows(out)}
    assert rows["test-refuser"]["status"] == "unsupported"
    assert rows["test-refuser"]["reason"] == "seq_len=32 is not welcome"
    assert rows["exact"]["status"] == "ok"


def test_perplexity_usage_errors(tiny_dir, tmp_path, capsys):
    base = ["perplexity", "--model", str(tiny_dir), "--context", "32", "--device", "cpu", "--quiet"]
    assert main([*base, "--methods", "exactt", "--out", str(tmp_path / "a")]) == 2
    assert "did you mean 'exact'" in capsys.readouterr().err
    assert main([*base, "--methods", "exact", "--text", "no-such-corpus", "--out", str(tmp_path / "b")]) == 2
    assert "unknown corpus" in capsys.readouterr().err
    assert main([*base, "--methods", "exact", "--method-args", "exact.nope=1", "--out", str(tmp_path / "c")]) == 2
    assert "unknown option" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_windows_and_bos_policy():
    from harness.tasks.perplexity import make_windows

    ids = list(range(10, 20))
    assert make_windows(ids, 4, None) == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19]]
    assert make_windows(ids, 4, 1) == [[1, 10, 11, 12], [1, 13, 14, 15], [1, 16, 17, 18], [1, 19]]
    assert make_windows(list(range(9)), 4, None) == [[0, 1, 2, 3], [4, 5, 6, 7]]   # a lone last token predicts nothing


def run_cli_script(script: str, *args: str):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, str(root / script), *args], capture_output=True, text=True, timeout=120,
                          cwd=root)


# --- fidelity ---------------------------------------------------------------------------------------------

@needs_shared
def test_fidelity_capture_round_trip_into_run(tiny_dir, tmp_path, capsys):
    cap = tmp_path / "qkv.safetensors"
    out = tmp_path / "fid"
    T = 48
    assert main(["fidelity", "--model", str(tiny_dir), "--methods", "exact,performer", "--text", "wikitext-2-test",
                 "--seq-len", str(T), "--batch", "2", "--capture-out", str(cap), "--capture-layer", "0",
                 "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    from safetensors.torch import load_file

    t = load_file(str(cap))
    assert t["layer0.q"].shape == (2, 4, T, 16) and t["layer1.k"].shape == (2, 2, T, 16)
    assert torch.equal(t["q"], t["layer0.q"]) and torch.equal(t["v"], t["layer0.v"])

    # The captured q/k are the model's post-RoPE projections of layer 0, computed here by hand.
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_dir))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_dir)).eval()
    ids = torch.tensor(tok(WIKI.read_text()[:4000], add_special_tokens=False)["input_ids"][:2 * T]).view(2, T)
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    with torch.no_grad():
        h = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))      # [2, T, 64]
        attn = model.model.layers[0].self_attn
        q = attn.q_proj(h).view(2, T, 4, 16).transpose(1, 2)                          # [2, 4, T, 16]
        k = attn.k_proj(h).view(2, T, 2, 16).transpose(1, 2)                          # [2, 2, T, 16]
        cos, sin = model.model.rotary_emb(h, torch.arange(T)[None].expand(2, T))
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
    assert torch.allclose(t["layer0.q"], q, atol=1e-5) and torch.allclose(t["layer0.k"], k, atol=1e-5)

    rows = read_rows(out)
    exact = [r for r in rows if r["method"] == "exact"]
    assert sorted(str(r["extra"]["layer"]) for r in exact) == ["0", "1", "mean"]
    for r in exact:
        assert r["status"] == "ok" and r["err_rel_l2"] < 1e-6 and r["topk_recall"] == 1.0
    perf = {str(r["extra"]["layer"]): r for r in rows if r["method"] == "performer"}
    assert all(r["status"] == "ok" for r in perf.values())
    assert 0 < perf["mean"]["err_rel_l2"] == pytest.approx((perf["0"]["err_rel_l2"] + perf["1"]["err_rel_l2"]) / 2)

    # the same capture scored again without the model (--capture-in): the same errors per layer
    again = tmp_path / "fid-again"
    assert main(["fidelity", "--capture-in", str(cap), "--methods", "performer", "--device", "cpu",
                 "--out", str(again), "--quiet"]) == 0
    perf2 = {str(r["extra"]["layer"]): r for r in read_rows(again)}
    assert set(perf2) == {"0", "1", "mean"} and perf2["0"]["seq_len"] == T and perf2["0"]["batch"] == 2
    for key, r in perf.items():
        assert perf2[key]["status"] == "ok" and perf2[key]["err_rel_l2"] == pytest.approx(r["err_rel_l2"], rel=1e-6)
    sub = tmp_path / "sub.safetensors"                  # every 2nd layer in bf16: layer 0 only, same errors in bf16
    proc = run_cli_script("scripts/capture_subset.py", str(cap), str(sub), "--every", "2", "--dtype", "bf16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main(["fidelity", "--capture-in", str(sub), "--methods", "performer", "--dtype", "bf16", "--device",
                 "cpu", "--out", str(tmp_path / "fid-sub"), "--quiet"]) == 0
    sub_rows = {str(r["extra"]["layer"]): r for r in read_rows(tmp_path / "fid-sub")}
    assert set(sub_rows) == {"0", "mean"} and sub_rows["0"]["extra"]["layer_index"] == perf["0"]["extra"]["layer_index"]
    assert sub_rows["0"]["status"] == "ok" and sub_rows["0"]["err_rel_l2"] == pytest.approx(perf["0"]["err_rel_l2"],
                                                                                            rel=0.05)
    capsys.readouterr()
    assert main(["fidelity", "--model", str(tiny_dir), "--capture-in", str(cap), "--seq-len", "8", "--device",
                 "cpu", "--out", str(tmp_path / "both"), "--quiet"]) == 2
    assert "--capture-in" in capsys.readouterr().err
    assert main(["fidelity", "--capture-in", str(tmp_path / "missing.safetensors"), "--device", "cpu",
                 "--out", str(tmp_path / "none"), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err

    run_dir = tmp_path / "sweep"
    proc = run_cli("run", "--inputs", str(cap), "--methods", "exact", "--seq-lens", str(T), "--batch", "1",
                   "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--dtype", "fp32", "--causal",
                   "--device", "cpu", "--out", str(run_dir), "--quiet", "--cpu-budget", "0.05", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = read_rows(run_dir)
    assert row["status"] == "ok" and row["inputs"] == str(cap) and row["err_rel_l2"] < 1e-6


# --- loading ----------------------------------------------------------------------------------------------

@needs_shared
def test_minilm_loads_and_exact_swap_matches_its_own_attention():
    model, tok = load.load_model(MINILM, task="encoder", dtype="fp32")
    assert type(model).__name__ == "BertModel" and next(model.parameters()).dtype == torch.float32
    enc = tok(["a short one", "a somewhat longer sentence about attention and padding"], padding=True,
              return_tensors="pt")
    assert not enc["attention_mask"].all()                                  # the batch is padded
    with torch.no_grad():
        ref = model(**enc).last_hidden_state
        swap.attach(model, "exact")
        got = model(**enc).last_hidden_state
        swap.detach(model)
    real = enc["attention_mask"].bool()
    assert (got - ref)[real].abs().max().item() < 1e-5


def test_unreachable_hub_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(load.ModelLoadError, match="not in the local cache.*HF_HUB_OFFLINE"):
        load.load_model("harness-test-org/no-such-model-xyz", task="causal-lm")
    with pytest.raises(load.ModelLoadError, match="no such file"):
        load.load_model("./no/such/folder")


def _make_parts(folder: Path, payload: bytes, whole_hash: str | None = None) -> None:
    folder.mkdir(parents=True)
    name = "m.Q4.gguf"
    chunks = [payload[:7], payload[7:20], payload[20:]]
    sums = []
    for i, c in enumerate(chunks):
        (folder / f"{name}.part-{i:02d}").write_bytes(c)
        sums.append(f"{hashlib.sha256(c).hexdigest()}  {name}.part-{i:02d}")
    (folder / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    whole = whole_hash or hashlib.sha256(payload).hexdigest()
    (folder / "README.md").write_text(f"| part | `{sums[0].split()[0]}` {name}.part-00 |\n"
                                      f"| whole file `{name}` | 12 | `{whole}` |\n")


def test_assemble_parts_verifies_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    payload = bytes(range(256)) * 3
    _make_parts(tmp_path / "good", payload)
    out = load.assemble_parts(tmp_path / "good")
    assert out.read_bytes() == payload and out.parent == tmp_path / "cache" / "models" / "good"
    mtime = out.stat().st_mtime_ns
    assert load.assemble_parts(tmp_path / "good") == out and out.stat().st_mtime_ns == mtime    # reused
    assert load.resolve_source(tmp_path / "good") == (str(out.parent), out.name, "gguf")

    _make_parts(tmp_path / "badwhole", payload, whole_hash="0" * 64)
    with pytest.raises(load.ModelLoadError, match="sha256"):
        load.assemble_parts(tmp_path / "badwhole")
    assert not list((tmp_path / "cache" / "models" / "badwhole").iterdir())                   # nothing left

    _make_parts(tmp_path / "badpart", payload)
    (tmp_path / "badpart" / "m.Q4.gguf.part-01").write_bytes(b"x" * 13)
    with pytest.raises(load.ModelLoadError, match="corrupt part"):
        load.assemble_parts(tmp_path / "badpart")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("HARNESS_TEST_SMOLLM") != "1",
                    reason="loads the real SmolLM2 GGUF (~40 s on 2 cores); set HARNESS_TEST_SMOLLM=1")
def test_smollm2_gguf_parts_load_and_exact_swap(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    pytest.importorskip("gguf")
    try:
        model, tok = load.load_model(SMOLLM, task="causal-lm", dtype="fp32")
    except load.ModelLoadError as exc:
        if "install" in str(exc):
            pytest.skip(str(exc))          # e.g. transformers 5.2x also wants `accelerate` for GGUF
        raise
    assert model.config.num_key_value_heads == 3 and model.config.num_attention_heads == 9
    ids = torch.tensor([tok(WIKI.read_text()[:2000], add_special_tokens=False)["input_ids"][:96]])
    with torch.no_grad():
        ref = model(input_ids=ids, use_cache=False).logits
        swap.attach(model, "exact")
        got = model(input_ids=ids, use_cache=False).logits
        swap.detach(model)
    assert (got - ref).abs().max().item() < 1e-3


# --- corpora ----------------------------------------------------------------------------------------------

@needs_shared
def test_corpora_by_name_path_and_env(tmp_path, monkeypatch):
    wiki = data.load_text("wikitext-2-test")
    assert len(wiki.text.encode()) == 1_290_590 and wiki.source.endswith("wiki.test.raw")
    assert wiki.text.startswith(" \n = Robert Boulter = ")
    if (SHARED / "data" / "austen").is_dir():
        assert len(data.load_text("austen").text) == 4_025_028
    f = tmp_path / "mine.txt"
    f.write_text("hello")
    assert data.load_text(str(f)).text == "hello"
    fake = tmp_path / "shared" / "data" / "wikitext-2-raw"
    fake.mkdir(parents=True)
    (fake / "wiki.valid.raw").write_text("valid text")
    monkeypatch.setenv("HARNESS_SHARED", str(tmp_path / "shared"))
    assert data.load_text("wikitext-2-valid").text == "valid text"
    with pytest.raises(data.CorpusError, match="HARNESS_SHARED"):
        data.load_text("wikitext-2-test")
    with pytest.raises(data.CorpusError, match="unknown corpus"):
        data.load_text("wikitext-3")


def test_hub_dataset_without_datasets_points_to_the_local_copy(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(data.CorpusError, match="--text wikitext-2-test"):
        data.load_text("wikitext-2-raw-v1")
