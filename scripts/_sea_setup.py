"""What the SEA GPU scripts (profile_sea.py, tune_sea_kernels.py, probe_topk_global.py) share: `sea` options from
their command-line form, one SEA layer for a problem, and seeded Gaussian q, k, v."""
from __future__ import annotations

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_opts(text: str) -> dict[str, str]:
    """'key=value,key=value' (the --opts form) -> {key: value}; an entry without '=' is an error."""
    opts = {}
    for item in filter(None, text.split(",")):
        if "=" not in item:
            raise SystemExit(f"--opts entry {item!r} is not key=value")
        key, val = item.split("=", 1)
        opts[key] = val
    return opts


def build_sea(opts: dict[str, str], *, T: int, causal: bool, heads: int = 16, head_dim: int = 64,
              dtype: str = "bf16", device: str = "cuda", seed: int = 0, backward: bool = False):
    """An SEA layer (B=1, H=heads, untrained estimator, `seed`) for the problem (forward+backward when `backward`),
    max_len = T unless given; exits with the method's reasons when it refuses the problem."""
    from methods.base import Problem, get

    M = get("sea")
    cfg = M.resolve_config({"max_len": str(T), **opts})
    prob = Problem(1, heads, heads, T, head_dim, dtype=dtype, causal=causal, device=device,
                   backward=backward)
    reasons = M.supports(prob, cfg)
    if reasons:
        raise SystemExit("sea does not run this problem: " + "; ".join(reasons))
    return M.build(cfg, prob, seed=seed)


def gaussian_qkv(T: int, *, heads: int = 16, head_dim: int = 64, dtype: str = "bf16", device: str = "cuda",
                 seed: int = 0):
    """Seeded standard-normal q, k, v [1, heads, T, head_dim] in `dtype`, and the generator (for more draws)."""
    g = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(1, heads, T, head_dim, device=device, dtype=DTYPES[dtype], generator=g) for _ in range(3))
    return q, k, v, g


def set_constants(items: list[str]) -> None:
    """Set module constants given as 'package.module.NAME=VALUE' (VALUE a Python literal, else the plain string);
    an unknown module or name is an error in words."""
    import ast
    import importlib

    for item in items:
        target, sep, text = item.partition("=")
        mod_name, _, name = target.rpartition(".")
        if not sep or not mod_name:
            raise SystemExit(f"--set {item!r}: expected package.module.NAME=VALUE")
        mod = importlib.import_module(mod_name)
        if not hasattr(mod, name):
            raise SystemExit(f"--set {item!r}: {mod_name} has no {name}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        setattr(mod, name, value)
        print(f"set {mod_name}.{name} = {value!r}")
