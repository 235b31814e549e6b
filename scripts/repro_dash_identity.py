#!/usr/bin/env python
"""Isolate the illegal memory access that SEA's bidirectional estimator hit at T=65536 on an H200 with
performer_dash=fp16, identity_values=kernel and encoder_operands=bf16 together (each alone ran;
results/nvidia-h200/sea-bf16-encoder/call7/): kernels/favor_dense.py's favor_softmax_dense alone, at SEA's widths
(B=1, H=16, d=64, 266 features, bf16 q/k/v, TF32 precision), for every combination of the three (fp16 dash in both
passes, identity_cols=64, bf16 output), each in its own process (an illegal access spoils the process's CUDA
context), at each --T. Prints one line per case: ok (with the output's max |difference| from the case without the
three, as a sanity check) or the error's last line.

    python scripts/repro_dash_identity.py --T 8192,65536
    compute-sanitizer --tool memcheck python scripts/repro_dash_identity.py --one 65536,1,1,1   # one case in-process
"""
from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_one(T: int, dash: bool, ident: bool, out_bf16: bool, device: str = "cuda") -> str:
    import torch

    from kernels import favor_dense as fd
    from methods.sea.estimator import identity_values
    from methods.sea.favor import orthogonal_random_features

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 16, T, 64, generator=g).to(device).bfloat16() for _ in range(3))
    proj = orthogonal_random_features(266, 64, g).to(device)
    vals = torch.cat([identity_values(None, 1, T, 64, device)[:, None].expand(1, 16, T, 64).bfloat16(), v], -1)
    kw = dict(operands="bf16", precision="tf32")
    with torch.no_grad():
        ref = fd.favor_softmax_dense(q, k, vals, proj, **kw)
        got = fd.favor_softmax_dense(q, k, v if ident else vals, proj, identity_cols=64 if ident else 0,
                                     out_dtype=torch.bfloat16 if out_bf16 else torch.float32,
                                     key_dash="fp16" if dash else None, query_dash="fp16" if dash else None, **kw)
        if got.is_cuda:
            torch.cuda.synchronize()
    return f"ok, max |diff| from the plain case {(got.float() - ref).abs().max().item():.3e}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", default="8192,65536", help="comma-separated sequence lengths")
    ap.add_argument("--one", default="", metavar="T,DASH,IDENT,OUTBF16",
                    help="run one case in this process (0/1 flags), e.g. under compute-sanitizer")
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--device", default="cuda", help="cuda, or cpu with TRITON_INTERPRET=1 (small T only)")
    a = ap.parse_args(argv)
    if a.one:
        T, dash, ident, out_bf16 = (int(x) for x in a.one.split(","))
        print(run_one(T, bool(dash), bool(ident), bool(out_bf16), a.device), flush=True)
        return 0
    for T in (int(x) for x in a.T.split(",")):
        for dash, ident, out_bf16 in itertools.product((0, 1), repeat=3):
            case = f"{T},{dash},{ident},{out_bf16}"
            try:
                p = subprocess.run([sys.executable, __file__, "--one", case, "--device", a.device], capture_output=True,
                                   text=True, timeout=a.timeout)
                lines = (p.stdout + p.stderr).strip().splitlines()
                ok = p.returncode == 0
                msg = lines[-1] if ok else next((ln for ln in reversed(lines) if "Error" in ln),
                                                lines[-1] if lines else "")
                msg = msg if ok else f"rc {p.returncode}: {msg}"
            except subprocess.TimeoutExpired:
                msg = f"timeout after {a.timeout} s"
            print(f"T={T:>6} dash={'fp16' if dash else 'auto'} identity={'kernel' if ident else 'concat'} "
                  f"out={'bf16' if out_bf16 else 'fp32'}: {msg[:160]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
