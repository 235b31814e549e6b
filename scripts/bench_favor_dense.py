#!/usr/bin/env python
"""SEA's bidirectional Performer pass on CUDA: the torch matmul path vs the fused kernel (kernels/favor_dense.py).

For each T (B=1, H=16, d=64, m=266 features as SEA's bidirectional default, values = [identity half ; v], Dv=128)
this times favor_attention(kernel="softmax", causal=False) with backend torch and triton, for fp32 and bf16
operands, and a few tile settings of the fused kernel (--tiles), checks each against the torch fp32 output
(relative L2) and prints one line per variant; --json appends the rows.

    python scripts/bench_favor_dense.py --T 16384,65536,262144
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", default="16384,65536,262144")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--rep-ms", type=int, default=50)
    p.add_argument("--tiles", default="32x64,64x32,64x64",
                   help="comma-separated KEY_BLOCK_TxKEY_BLOCK_F settings of the key pass to try")
    p.add_argument("--precisions", default="ieee,tf32x3", help="FP32_PRECISION settings to try (fp32 operands)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    import triton.testing

    import kernels.favor_dense as fd
    from methods.sea.estimator import identity_values
    from methods.sea.favor import favor_attention, orthogonal_random_features

    d, H = a.head_dim, a.heads
    m = max(1, int(d * math.log(d) / 1.0))
    proj = orthogonal_random_features(m, d, torch.Generator().manual_seed(0)).cuda()
    rows = []
    defaults = fd.KEY_BLOCK_T, fd.KEY_BLOCK_F, fd.FP32_PRECISION
    for T in (int(x) for x in a.T.split(",")):
        g = torch.Generator(device="cpu").manual_seed(T)
        q, k, v = (torch.randn(1, H, T, d, generator=g).cuda().to(torch.bfloat16) for _ in range(3))
        vals = torch.cat([identity_values(None, 1, T, d, q.device)[:, None].expand(1, H, T, d), v.float()], -1)
        with torch.no_grad():
            ref = favor_attention(q, k, vals, proj, kernel="softmax", causal=False, backend="torch")
            variants = []
            for ops in ("fp32", "bf16"):
                variants.append((ops, "torch", None, None))
                precs = a.precisions.split(",") if ops == "fp32" else ["-"]
                for tile, prec in itertools.product(a.tiles.split(","), precs):
                    variants.append((ops, "triton", tile, prec))
            for ops, backend, tile, prec in variants:
                if tile:
                    fd.KEY_BLOCK_T, fd.KEY_BLOCK_F = (int(x) for x in tile.split("x"))
                    if prec != "-":
                        fd.FP32_PRECISION = prec
                fn = lambda: favor_attention(q, k, vals, proj, kernel="softmax", causal=False,  # noqa: E731
                                             backend=backend, operands=ops)
                try:
                    out = fn()
                    err = float((out.double() - ref.double()).norm() / ref.double().norm())
                    ms = triton.testing.do_bench(fn, rep=a.rep_ms)
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    fn()
                    peak = torch.cuda.max_memory_allocated() - base
                    status = "ok"
                except Exception as exc:                                   # recorded, the sweep goes on
                    err, ms, peak, status = float("nan"), float("nan"), 0, f"{type(exc).__name__}: {str(exc)[:160]}"
                row = dict(T=T, H=H, d=d, m=m, operands=ops, backend=backend, tile=tile, precision=prec, ms=ms,
                           rel_l2_vs_torch_fp32=err, peak_extra_bytes=peak, status=status,
                           device=torch.cuda.get_device_name())
                rows.append(row)
                print(f"T={T:>7} {ops:<5} {backend:<6} tile={tile or '-':<6} prec={prec or '-':<7} "
                      f"{ms:8.3f} ms  rel_l2={err:.2e}  extra={peak / 2**30:.2f} GiB  {status}", flush=True)
            fd.KEY_BLOCK_T, fd.KEY_BLOCK_F, fd.FP32_PRECISION = defaults
        del q, k, v, vals, ref
        torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
