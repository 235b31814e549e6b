"""`distill --attn-rows N`: the student-attention terms (attn_kl, attn_mse) on N sampled query rows per layer and
step (harness/train/losses.py sample_rows / exact_probs(rows=) / layer_terms(rows=), threaded by loop.py).

The method under test is SEA (torch backend): its per-layer module exposes an estimate (est_kl, est_mse) and
attention_probs with a gradient, so every per-layer term is present. Sizes B=2, H=4, Hkv=2, T=37, D=16."""
from __future__ import annotations

import gc
import json
import math
import weakref

import pytest
import torch

import methods
from harness.train import losses as L
from methods.base import Problem
from tests.helpers import gaussian_qkv, two_sided_padding

B, H, HKV, T, D = 2, 4, 2, 37, 16
N = 8


def sea_call(causal: bool, kpm):
    """A recorded call of a SEA module on seeded q, k, v (float32), as the trainer's hook would record it."""
    cls = methods.all_methods()["sea"]
    cfg = cls.resolve_config({"backend": "torch"})
    p = Problem(batch=B, heads=H, kv_heads=HKV, seq_len=T, head_dim=D, causal=causal, backward=True,
                padding=kpm is not None)
    assert not cls.supports(p, cfg)
    mod = cls.build(cfg, p, seed=0)
    q, k, v = gaussian_qkv(B, H, HKV, T, D, seed=3, dtype=torch.float32)   # q [B, H, T, D], k/v [B, Hkv, T, D]
    out = mod(q, k, v, causal=causal, key_padding_mask=kpm)                 # [B, H, T, D]
    return L.LayerCall(module=mod, q=q, k=k, v=v, causal=causal, key_padding_mask=kpm, scale=None, out=out,
                       aux=dict(mod.last_aux))


def trained_params(mod):
    return [p for p in mod.parameters() if p.requires_grad]


# --- (1) exact P on sampled rows ----------------------------------------------------------------------------

@pytest.mark.parametrize("causal,padded", [(True, False), (True, True), (False, True)])
def test_exact_probs_on_rows_are_the_rows_of_the_full_exact_probs(causal, padded):
    q, k, _ = gaussian_qkv(B, H, HKV, T, D, seed=1, dtype=torch.float32)
    kpm = two_sided_padding(B, T) if padded else None
    rows = torch.tensor([0, 2, 3, 17, 30, 33, 36])                          # [R]: includes padded rows (0, 2, 33+)
    full = L.exact_probs(q, k, causal=causal, kpm=kpm, scale=0.3)           # [B, H, T, T]
    part = L.exact_probs(q, k, causal=causal, kpm=kpm, scale=0.3, rows=rows)   # [B, H, R, T]
    assert part.shape == (B, H, len(rows), T)
    torch.testing.assert_close(part, full[:, :, rows], rtol=1e-6, atol=1e-7)
    if causal:                                                              # nothing beyond the row itself
        later = torch.arange(T)[None, :] > rows[:, None]                    # [R, T]
        assert not part[:, :, later].any()
    if padded:
        assert not part.masked_select(~kpm[:, None, None, :]).any()         # no mass on padded keys
    # the mask with rows is the rows of the full mask
    vis = L.visible_mask(T, causal, kpm, "cpu")                             # [B or 1, 1, T, T]
    vis_r = L.visible_mask(T, causal, kpm, "cpu", rows=rows)                # [B or 1, 1, R, T]
    assert torch.equal(vis_r.expand(B, 1, len(rows), T), vis.expand(B, 1, T, T)[:, :, rows])


# --- (2) layer_terms ---------------------------------------------------------------------------------------

def today_terms(call):
    """The per-layer terms as they were before --attn-rows (every row), restated from the building blocks."""
    q, k, v = (t.detach() for t in (call.q, call.k, call.v))
    kpm = call.key_padding_mask
    w = L.row_weights(B, T, kpm, q.device)                                  # [B, 1, T, 1]
    out = {"out_mse": L.masked_mse(call.out, L.exact_output(q, k, v, causal=call.causal, kpm=kpm, scale=None), w)}
    P = L.exact_probs(q, k, causal=call.causal, kpm=kpm, scale=None)        # [B, H, T, T]
    a_hat, log_a = L.estimate_of(call.aux)                                  # [B, H, T, K]
    Pc = call.module.compress_probs(P, causal=call.causal, valid=kpm)       # [B, H, T, K]
    out["est_kl"] = L.masked_kl(Pc, log_a, w)
    out["est_mse"] = L.masked_mse(a_hat, Pc, w)
    probs = call.module.attention_probs(call.q, call.k, call.v, causal=call.causal, rows=torch.arange(T),
                                        key_padding_mask=kpm).float()       # [B, H, T, T]
    out["attn_kl"] = L.masked_kl(P, torch.log(probs.clamp_min(L.EPS)), w)
    out["attn_mse"] = L.masked_mse(probs, P, w)
    return out


@pytest.mark.parametrize("causal,padded", [(True, True), (False, True), (True, False)])
def test_all_rows_give_todays_terms_and_sampled_rows_the_restriction(causal, padded):
    kpm = two_sided_padding(B, T) if padded else None
    call = sea_call(causal, kpm)
    # N = 0 and N >= T: no sample, the terms of every row, bit for bit
    assert L.sample_rows(T, 0, seed=0, step=0, layer=0) is None
    assert L.sample_rows(T, T, seed=0, step=0, layer=0) is None
    assert L.sample_rows(T, T + 5, seed=0, step=0, layer=0) is None
    want = today_terms(call)
    got = L.layer_terms(call, attn_ok=True, use_probs=True, state={}, rows=None)
    assert set(got) == set(want) == {"out_mse", "est_kl", "est_mse", "attn_kl", "attn_mse"}
    for name in want:
        assert torch.equal(got[name], want[name]), name

    # N < T: attn terms over the sampled real rows, by hand in float64 from the full [B, H, T, T] tensors
    rows = L.sample_rows(T, N, seed=11, step=4, layer=1)                    # [N]
    sampled = L.layer_terms(call, attn_ok=True, use_probs=True, state={}, rows=rows)
    for name in ("out_mse", "est_kl", "est_mse"):                          # every row, as before
        assert torch.equal(sampled[name], want[name]), name
    P = L.exact_probs(call.q.detach(), call.k.detach(), causal=causal, kpm=kpm, scale=None).double()   # [B, H, T, T]
    probs = call.module.attention_probs(call.q, call.k, call.v, causal=causal, rows=torch.arange(T),
                                        key_padding_mask=kpm).double()     # [B, H, T, T]
    Pr, pr = P[:, :, rows], probs[:, :, rows]                               # [B, H, N, T]
    real = torch.ones(B, T, dtype=torch.bool) if kpm is None else kpm
    real = real[:, rows].double()                                           # [B, N]: 1 for real query rows
    n_real = real.sum() * H
    kl_rows = (Pr * (torch.log(Pr.clamp_min(L.EPS)) - torch.log(pr.clamp_min(L.EPS)))).sum(-1)   # [B, H, N]
    kl = (kl_rows * real[:, None, :]).sum() / n_real
    mse = (((pr - Pr) ** 2).sum(-1) * real[:, None, :]).sum() / (n_real * T)
    torch.testing.assert_close(sampled["attn_kl"].double(), kl, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sampled["attn_mse"].double(), mse, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(sampled["attn_kl"], want["attn_kl"])         # a sample is not all rows
    # and the same gradients for the module's parameters
    params = trained_params(call.module)
    g_got = torch.autograd.grad(0.1 * sampled["attn_kl"] + sampled["attn_mse"], params, allow_unused=True,
                                retain_graph=True)
    g_want = torch.autograd.grad(0.1 * kl + mse, params, allow_unused=True)
    assert any(g is not None for g in g_got)
    for a, b in zip(g_got, g_want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-8)


def test_sampled_rows_do_not_keep_the_full_exact_probs(monkeypatch):
    """With rows, the full P (for the estimate) is freed once compressed; the attn terms keep only [B, H, N, T]."""
    call = sea_call(True, two_sided_padding(B, T))
    made = []
    real = L.exact_probs

    def spy(*a, **kw):
        P = real(*a, **kw)
        made.append((tuple(P.shape), weakref.ref(P)))
        return P
    monkeypatch.setattr(L, "exact_probs", spy)
    terms = L.layer_terms(call, attn_ok=True, use_probs=True, state={},
                          rows=L.sample_rows(T, N, seed=0, step=0, layer=0))
    gc.collect()
    assert [s for s, _ in made] == [(B, H, T, T), (B, H, N, T)]
    assert made[0][1]() is None                                             # full P: gone while the terms live
    assert made[1][1]() is not None                                         # the rows' P: kept for the backward
    assert {"attn_kl", "attn_mse", "est_kl"} <= set(terms)


# --- (3) the draw --------------------------------------------------------------------------------------------

def test_rows_depend_only_on_seed_step_and_layer():
    r = L.sample_rows(T, N, seed=3, step=5, layer=2)
    assert r.dtype == torch.long and r.shape == (N,)
    assert torch.equal(r, r.sort().values) and len(set(r.tolist())) == N and 0 <= int(r.min()) <= int(r.max()) < T
    assert torch.equal(r, L.sample_rows(T, N, seed=3, step=5, layer=2))
    assert not torch.equal(r, L.sample_rows(T, N, seed=3, step=6, layer=2))    # another step
    assert not torch.equal(r, L.sample_rows(T, N, seed=3, step=5, layer=1))    # another layer
    assert not torch.equal(r, L.sample_rows(T, N, seed=4, step=5, layer=2))    # another seed
    torch.manual_seed(123)                                                   # the global generator plays no part
    assert torch.equal(r, L.sample_rows(T, N, seed=3, step=5, layer=2))
    counts = torch.zeros(T)
    for s in range(400):                                                    # uniform over positions (loosely)
        counts[L.sample_rows(T, N, seed=0, step=s, layer=0)] += 1
    assert counts.min() > 0 and counts.max() < 3 * 400 * N / T
    with pytest.raises(ValueError, match="attn_rows must be >= 0"):
        L.sample_rows(T, -1, seed=0, step=0, layer=0)


def test_trainer_draws_rows_from_seed_step_and_layer(monkeypatch):
    from harness.train.loop import DistillError, Distiller, TrainConfig
    from tests.helpers import tiny_llama

    seen = []
    real = L.layer_terms

    def spy(call, **kw):
        seen.append(kw.get("rows"))
        return real(call, **kw)
    monkeypatch.setattr(L, "layer_terms", spy)
    t = 24
    batch = {"input_ids": torch.randint(0, 97, (2, t), generator=torch.Generator().manual_seed(1))}   # [B, t]
    with pytest.raises(DistillError, match="attn_rows must be >= 0"):
        Distiller(None, "sea", {}, example=batch, cfg=TrainConfig(attn_rows=-2))
    d = Distiller(tiny_llama(97, max_positions=64), "sea", {"backend": "torch"}, example=batch, seed=7,
                  cfg=TrainConfig(lr_rest=0.0, attn_rows=5))
    values = d.train_step(batch)                                            # step 0, then d.step == 1
    d.losses(batch)                                                         # step 1 (a resumed run: load sets it)
    assert d.step == 1 and len(seen) == 4                                   # 2 layers x 2 steps
    for i, rows in enumerate(seen):
        step, layer = divmod(i, 2)
        assert torch.equal(rows, L.sample_rows(t, 5, seed=7, step=step, layer=layer)), (step, layer)
    assert not torch.equal(seen[0], seen[2]) and not torch.equal(seen[0], seen[1])
    assert math.isfinite(values["attn_kl"]) and math.isfinite(values["attn_mse"])
    assert any("attn_kl, attn_mse on 5 of T=24 query rows" in n for n in d.notes())

    for n in (0, t):                                                        # all rows: no draw
        seen.clear()
        d.cfg.attn_rows = n
        _, values = d.losses(batch)
        assert seen == [None, None] and math.isfinite(values["attn_kl"])
    d.close()


# --- (4), (5) the CLI ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from harness.models import data
    from tests.helpers import save_tiny_llama

    minilm = data.shared_root() / "models" / "minilm-l6"
    if not minilm.is_dir():
        pytest.skip("shared MiniLM tokenizer not found")
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), minilm, max_positions=128)


def test_cli_distill_with_attn_rows_records_it_and_trains(tiny_dir, tmp_path):
    from harness.cli import main

    out = tmp_path / "run"
    assert main(["distill", "--model", str(tiny_dir), "--method", "sea", "--method-args", "sea.backend=torch",
                 "--seq-len", "32", "--batch", "2", "--max-train-tokens", "200", "--eval-tokens", "64",
                 "--device", "cpu", "--out", str(out), "--quiet", "--steps", "2", "--attn-rows", "8"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["setting"]["train"]["attn_rows"] == 8
    assert any("on 8 of T=32 query rows" in n for n in meta["notes"])
    train = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in train if m["kind"] == "train"]
    assert [m["step"] for m in train] == [1, 2]
    assert all(math.isfinite(m["attn_kl"]) and math.isfinite(m["attn_mse"]) for m in train)
    (row,) = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert row["status"] == "ok" and row["extra"]["train"]["attn_rows"] == 8


def test_cli_distill_refuses_negative_attn_rows(tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "run"
    assert main(["distill", "--model", str(tmp_path / "no-model"), "--method", "sea", "--steps", "1",
                 "--device", "cpu", "--out", str(out), "--quiet", "--attn-rows", "-3"]) == 2
    err = capsys.readouterr().err
    assert "--attn-rows -3" in err and ">= 0" in err
    assert not out.exists()
