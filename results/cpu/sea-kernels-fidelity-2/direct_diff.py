"""Direct comparison on a fidelity run's captured q/k/v: per layer, SEA's tensor-op baseline (the first variant)
and each other variant are built with the same layer index and seed, run on the same inputs, and compared with
each other (not with exact attention): relative L2 of the outputs, and of the estimator's logits / scalers.
Usage: TRITON_INTERPRET=1 python direct_diff.py CAPTURE.safetensors BASE VARIANT [VARIANT ...] [--layers 0,1,..]"""
import json
import sys

import torch
from safetensors import safe_open

sys.path.insert(0, ".")
import methods  # noqa: E402
from harness.runner import resolve_methods  # noqa: E402
from methods.base import Problem  # noqa: E402


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def main(argv):
    layers_arg = None
    if "--layers" in argv:
        i = argv.index("--layers")
        layers_arg = [int(x) for x in argv[i + 1].split(",")]
        argv = argv[:i] + argv[i + 2:]
    path, entries = argv[0], argv[1:]
    variants = resolve_methods(entries, {})
    f = safe_open(path, "pt")
    info = json.loads(f.metadata()["layers"])
    for li in (layers_arg if layers_arg is not None else range(len(info))):
        meta = info[li]
        q, k, v = (f.get_tensor(f"layer{li}.{n}").float() for n in "qkv")   # [B, H(kv), T, D]
        B, H, T, D = q.shape
        outs = []
        for name, cfg in variants:
            problem = Problem(batch=B, heads=H, kv_heads=k.shape[1], seq_len=T, head_dim=D, dtype="fp32",
                              causal=meta["causal"], device="cpu")
            mod = methods.get(name).build(cfg, problem, layer=meta["index"], seed=0).eval()
            with torch.no_grad():
                out = mod(q, k, v, causal=meta["causal"], scale=meta["scale"])          # [B, H, T, D]
                kr, vr = methods.base.repeat_kv(k, H), methods.base.repeat_kv(v, H)     # [B, H, T, D]
                est = mod.estimator(q, kr, vr, valid=None)                               # logits, s_prob, s_mix
            outs.append((out, est, mod.impl))
        (o0, e0, _) = outs[0]
        for (name, cfg), (o, e, impl) in zip(variants[1:], outs[1:]):
            diff = {"out": rel(o, o0), "logits": rel(e[0], e0[0]), "s_prob": rel(e[1], e0[1]),
                    "s_mix": rel(e[2], e0[2]), "out_bitwise_equal": bool(torch.equal(o, o0))}
            print(json.dumps({"layer": li, "variant": {k_: cfg[k_] for k_ in cfg if cfg[k_] != variants[0][1][k_]},
                              **diff, "impl": impl}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
