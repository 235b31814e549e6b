"""Shared test helpers: run the CLI in a fresh process, with the test plugin installed on demand."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "tests" / "fixtures" / "fault_plugin"


def run_cli(*args: str, plugin: bool = False, timeout: float = 600, cwd: Path | None = None,
            env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    paths = [str(ROOT)] + ([str(PLUGIN_DIR)] if plugin else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT, env=env)


def read_rows(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "rows.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def gaussian_qkv(B: int, H: int, Hkv: int, T: int, D: int, *, seed: int = 0, dtype=None):
    """Seeded standard-normal q [B, H, T, D], k and v [B, Hkv, T, D], drawn in float64 then cast."""
    import torch

    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, Hkv, T, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, Hkv, T, D, generator=g, dtype=torch.float64)
    dtype = dtype or torch.float64
    return q.to(dtype), k.to(dtype), v.to(dtype)


def sea_case(B: int, H: int, Hkv: int, T: int, D: int, *, causal: bool = True, **opts):
    """(method class, resolved config, Problem) of a small fp32 CPU `sea` case: k=3, K=16 unless opts say
    otherwise (opts are sea options; values are stringified as on the command line)."""
    from methods.base import Problem, get

    M = get("sea")
    cfg = M.resolve_config({key: str(val) for key, val in dict(dict(k=3, K=16), **opts).items()})
    return M, cfg, Problem(B, H, Hkv, T, D, dtype="fp32", causal=causal, device="cpu")


def untie_sea_decoder(mod, seed: int = 11):
    """Random LayerNorm affine at a causal SEA decoder's output (`mod` an SEA layer or its estimator): no two of a
    row's K logits are equal, so torch.topk has no ties to break."""
    import torch

    g = torch.Generator().manual_seed(seed)
    norm = mod.estimator.dec.norm_out if hasattr(mod, "estimator") else mod.dec.norm_out
    with torch.no_grad():
        norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=g))
        norm.bias.copy_(torch.rand(norm.bias.shape, generator=g))
    return mod


def two_sided_padding(B: int, T: int):
    """bool [B, T] key padding mask (True = real): right padding in row 0, left padding in row 1."""
    import torch

    kpm = torch.ones(B, T, dtype=torch.bool)
    kpm[0, -5:] = False
    kpm[1, :3] = False
    return kpm


def tiny_llama_config(vocab: int, *, max_positions: int, intermediate_size: int = 80, **extra):
    """A tiny Llama: 2 layers, hidden 64, 4 query heads over 2 key/value heads (GQA), head dim 16."""
    import transformers

    return transformers.LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=intermediate_size,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    max_position_embeddings=max_positions, **extra)


def tiny_llama(vocab: int, *, max_positions: int):
    """That Llama with seeded random weights, eager attention, in eval mode."""
    import torch
    import transformers

    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(tiny_llama_config(vocab, max_positions=max_positions),
                                                         attn_implementation="eager").eval()


def save_tiny_llama(out, tokenizer_dir, *, max_positions: int, intermediate_size: int = 80):
    """Save a tiny random Llama (tiny_llama_config, tied embeddings) with the tokenizer of `tokenizer_dir` into
    `out`, for CLI tasks that take a model folder; returns `out`."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cfg = tiny_llama_config(tok.vocab_size, max_positions=max_positions, intermediate_size=intermediate_size,
                            tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@contextlib.contextmanager
def registered_refuser(reason):
    """A method 'test-refuser' registered for the block that refuses every problem with reason(problem)."""
    from methods.base import _REGISTRY, Method

    class Refuser(Method):
        name = "test-refuser"
        summary = "refuses everything (test only)"

        @classmethod
        def extra_reasons(cls, problem, cfg):
            return [reason(problem)]

    _REGISTRY[Refuser.name] = Refuser
    try:
        yield Refuser.name
    finally:
        del _REGISTRY[Refuser.name]
