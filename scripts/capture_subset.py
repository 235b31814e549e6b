"""Write a smaller harness capture (the format `python -m harness fidelity --capture-out` writes) holding every
N-th layer, optionally cast to another dtype, so it fits a size limit (e.g. 64 MiB carried to a GPU machine) and
can be scored there with `python -m harness fidelity --capture-in`.

    python scripts/capture_subset.py /tmp/cap2048.safetensors .carry/cap/smollm2-2048-l3-bf16.safetensors \
        --every 3 --dtype bf16
"""
from __future__ import annotations

import argparse
import json

import torch
from safetensors import safe_open
from safetensors.torch import save_file

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "keep": None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--every", type=int, default=1, help="keep layers 0, N, 2N, ...")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="keep")
    a = ap.parse_args()
    if a.every < 1:
        ap.error("--every must be >= 1")
    with safe_open(a.src, framework="pt") as f:
        meta = dict(f.metadata() or {})
        if meta.get("format") != "harness-capture/1":
            ap.error(f"{a.src} is not a harness capture")
        keep = [info for info in json.loads(meta["layers"]) if info["i"] % a.every == 0]
        tensors = {}
        for info in keep:
            for n in ("q", "k", "v"):
                x = f.get_tensor(f"layer{info['i']}.{n}")
                x = x if DTYPES[a.dtype] is None else x.to(DTYPES[a.dtype])
                tensors[f"layer{info['i']}.{n}"] = x.contiguous()
    meta["layers"] = json.dumps(keep)
    meta["subset"] = f"layers {[info['i'] for info in keep]} of {a.src}, dtype {a.dtype}"
    save_file(tensors, a.dst, metadata=meta)
    print(f"{len(keep)} layers -> {a.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
