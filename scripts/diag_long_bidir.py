#!/usr/bin/env python
"""Run SEA once at a long bidirectional T with CUDA_LAUNCH_BLOCKING=1 and name the operation that fails (a device
diagnosis of the fit probe's crash at 4M in results/nvidia-h200/sea-rows/call3/).

    CUDA_LAUNCH_BLOCKING=1 python scripts/diag_long_bidir.py --T 4194304 --opts nbf=8,shared_keys=64,query_blocks=8
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from scripts._sea_setup import build_sea, gaussian_qkv, parse_opts  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, required=True)
    ap.add_argument("--opts", default="")
    a = ap.parse_args(argv)
    mod = build_sea(parse_opts(a.opts), T=a.T, causal=False)
    q, k, v, _ = gaussian_qkv(a.T)
    try:
        with torch.no_grad():
            out = mod(q, k, v, causal=False)
        torch.cuda.synchronize()
        print(f"T={a.T} ran: {mod.impl}")
        for name in ("block_scores", "s_prob", "s_mix"):                 # the estimator's outputs, then the output
            x = mod.last_aux.get(name)
            if x is not None:
                print(f"{name} {tuple(x.shape)} finite {bool(torch.isfinite(x).all())}")
        bad = ~torch.isfinite(out).all(-1)                               # [B, H, T] rows with a NaN / Inf
        rows = bad.any(1)[0].nonzero().flatten()
        print(f"output finite {not bool(bad.any())}; non-finite rows {rows.numel()}, first "
              f"{rows[:4].tolist()}, last {rows[-4:].tolist()}; heads {bad.any(2)[0].nonzero().flatten().tolist()}")
    except Exception:                                                # noqa: BLE001 - the diagnosis prints it
        traceback.print_exc(limit=12)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
