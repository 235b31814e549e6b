#!/usr/bin/env python
"""Why the radix-select top-k (kernels/sea_topk_global.py) takes ~0.6 ms a pass on SEA's estimate but ~800 ms on
the GPU test's data (issue 7): time select_global per kernel (torch.profiler) on (a) the estimate A_hat of a
bidirectional SEA layer at --T (untrained, Gaussian q/k/v) and (b) the GPU test's softmax data with duplicated
column pairs, with and without the cell widths, and under a few digit layouts; print how many cells each pass
matches (computed with torch from the keys) beside the times.

    python scripts/probe_topk_global.py --T 65536
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.measure import time_cuda  # noqa: E402


def keys_u32(x: torch.Tensor) -> torch.Tensor:
    """The kernel's unsigned monotone keys of fp32 x, as int64 (for counting)."""
    x = torch.where(x == 0, torch.zeros_like(x), x).float()
    bits = x.view(torch.int32).long()
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (key ^ -2147483648) & 0xFFFFFFFF


def pass_matches(x: torch.Tensor, n: int, digits) -> list[int]:
    """Cells whose higher digits equal the threshold's, per pass (pass 1: all)."""
    u = keys_u32(x.reshape(-1))
    thr = torch.topk(u, n).values[-1]
    out, shift = [], 32
    for b in digits:
        out.append(int((u >> shift == thr >> shift).sum()) if shift < 32 else u.numel())
        shift -= b
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=65536)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("probe_topk_global.py needs a CUDA device", file=sys.stderr)
        return 2
    import kernels.sea_topk_global as sg
    from methods.sea.interp import cell_bounds, row_lengths
    from methods.sea.topk import budgets
    from scripts._sea_setup import build_sea, gaussian_qkv

    H, D, T = 16, 64, a.T
    mod = build_sea(dict(performer_dtype="bf16", estimator_precision="tf32"), T=T, causal=False)
    q, k, v, g = gaussian_qkv(T)
    K = mod.K
    with torch.no_grad():
        _, a_hat, _, _ = mod.stage_estimator(q, k, v, causal=False, valid=None, scale=D ** -0.5)
    a_hat = a_hat.float().contiguous()
    L1 = row_lengths(1, T, causal=False, valid=None, device="cuda")
    lo, hi = cell_bounds(L1, K)
    width = (hi - lo)[0, 0]
    n = budgets("per_batch", L1, k=mod.k, K=K, H=H)
    nn_ = int(n[0])
    logits = torch.randn(1, H, T, K // 2, device="cuda", generator=g) * 2.0
    test = torch.softmax(logits.repeat_interleave(2, dim=-1), dim=-1).contiguous()
    print(f"T={T} K={K} n={nn_}; SEA estimate: min {a_hat.min().item():.3e} max {a_hat.max().item():.3e}, "
          f"distinct values {a_hat.unique().numel()}")
    for name, x in (("sea", a_hat), ("test", test)):
        for digits in ((8, 12, 12), (8, 8, 8, 8), (11, 11, 10)):
            print(f"  {name} digits {digits}: cells matched per pass {pass_matches(x, nn_, digits)}")
    print("| data | width | digits | ms | kernels (ms per call) |\n|---|---|---|---|---|")
    for name, x in (("sea", a_hat), ("test", test)):
        for w in (width, None):
            for digits, hp in (((8, 12, 12), 1), ((8, 8, 8, 8), 1), ((8, 8, 8, 8), 4), ((11, 11, 10), 0)):
                sg.DIGITS_32, sg.HIST_PASSES = digits, hp
                fn = lambda: sg.select_global(x.reshape(1, -1), n, w)  # noqa: E731
                try:
                    fn()
                    ms = time_cuda(fn, rep_ms=200).median_ms
                    from torch.profiler import ProfilerActivity, profile
                    with profile(activities=[ProfilerActivity.CUDA]) as prof:
                        fn()
                        torch.cuda.synchronize()
                    ks = {}
                    for e in prof.events():
                        if e.device_type.name == "CUDA":
                            ks[e.name[:18]] = ks.get(e.name[:18], 0.0) + e.device_time / 1e3
                    top = ", ".join(f"{kk} {vv:.2f}" for kk, vv in sorted(ks.items(), key=lambda t: -t[1])[:4])
                    print(f"| {name} | {'yes' if w is not None else 'no'} | {digits} hist {hp} | {ms:.3f} | {top} |")
                except Exception as exc:  # noqa: BLE001
                    print(f"| {name} | {w is not None} | {digits} | error {type(exc).__name__}: {str(exc)[:100]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
