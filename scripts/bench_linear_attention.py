"""Benchmark + correctness check of the causal linear-attention kernels (kernels/linear_attention.py), CUDA only.

For each T, input dtype and mode (fwd, fwd+bwd) it checks every Triton variant against the PyTorch chunked
path (fp32, same rounded inputs; relative L2 error of num, den and - for fwd+bwd - dfq, dfk, dv, the worst one
printed) and times it with triton.testing.do_bench (median ms). Variants:
    torch        the PyTorch chunked fallback (backend="torch")
    sequential   the original Triton kernel (algo="sequential": one program walks all chunks)
    parallel     the chunk-parallel three-phase Triton kernels (algo="parallel", the default)
Input dtypes: bf16 / fp16 (all three inputs in that dtype: half tensor-core dots), fp32 (IEEE fp32 dots; this is
what performer/cosformer pass today: fp32 features and v.float()), fp32-tf32 (fp32 inputs, tf32=True).

    python scripts/bench_linear_attention.py                       # T = 4096, 16384, 65536; bf16, fp32, fp32-tf32
    python scripts/bench_linear_attention.py --T 4096 --dtypes bf16 --variants parallel,torch
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.linear_attention import causal_linear_attention  # noqa: E402

DTYPES = {"bf16": (torch.bfloat16, False), "fp16": (torch.float16, False), "fp32": (torch.float32, False),
          "fp32-tf32": (torch.float32, True)}


def make_inputs(B, H, Hkv, T, M, E, dtype, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    fq = torch.rand(B, H, T, M, device=device, generator=g)          # positive features, like the methods
    fk = torch.rand(B, Hkv, T, M, device=device, generator=g)
    v = torch.randn(B, Hkv, T, E, device=device, generator=g)
    return [x.to(dtype) for x in (fq, fk, v)]


def variant_kwargs(name, tf32, group):
    if name == "torch":
        return dict(backend="torch")
    if name == "sequential":
        return dict(backend="triton", algo="sequential", tf32=tf32)
    if name == "parallel":
        return dict(backend="triton", algo="parallel", tf32=tf32, group=group)
    raise SystemExit(f"unknown variant {name!r}")


def run_once(inputs, kw, mode, grads):
    """Forward (and backward with the fixed output grads). Returns the tensors to compare."""
    num, den = causal_linear_attention(*inputs, **kw)
    if mode == "fwd":
        return [num, den]
    d = torch.autograd.grad((num, den), inputs, grads)
    return [num, den, *d]


def rel_l2(a, r):
    a, r = a.double(), r.double()
    return ((a - r).norm() / r.norm().clamp_min(1e-300)).item()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", default="4096,16384,65536", help="comma-separated sequence lengths")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--H", type=int, default=16)
    ap.add_argument("--Hkv", type=int, default=0, help="kv heads (0 = H)")
    ap.add_argument("--M", type=int, default=266, help="feature dim (performer m = int(64 ln 64) = 266)")
    ap.add_argument("--E", type=int, default=64, help="value dim")
    ap.add_argument("--dtypes", default="bf16,fp32,fp32-tf32", help=f"comma-separated, of {sorted(DTYPES)}")
    ap.add_argument("--modes", default="fwd,fwdbwd")
    ap.add_argument("--variants", default="parallel,sequential,torch")
    ap.add_argument("--group", type=int, default=0, help="parallel: chunks per stored state (0 = auto)")
    ap.add_argument("--seq-max-T", type=int, default=65536, help="skip the sequential kernel above this T")
    ap.add_argument("--torch-max-T", type=int, default=65536, help="skip timing the torch path above this T")
    ap.add_argument("--rep", type=int, default=100, help="do_bench rep (ms)")
    ap.add_argument("--device", default="cuda",
                    help="cuda; 'cpu' only smoke-tests this script under TRITON_INTERPRET=1 (tiny --T, no timing)")
    args = ap.parse_args(argv)
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("needs CUDA")
    import triton.testing

    def bench(fn):
        if dev != "cuda":
            fn()
            return float("nan")
        return triton.testing.do_bench(fn, rep=args.rep, return_mode="median")

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    def peak_mib(fn):
        if dev != "cuda":
            return float("nan")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20

    Hkv = args.Hkv or args.H
    group = args.group or None
    variants = args.variants.split(",")
    print(f"# {torch.cuda.get_device_name() if dev == 'cuda' else dev}  torch {torch.__version__}  B={args.B} H={args.H} Hkv={Hkv} "
          f"M={args.M} E={args.E} chunk=64 group={'auto' if group is None else group}")
    print("# rel L2: worst over num, den (+ dfq, dfk, dv for fwdbwd) vs the torch path on the same rounded inputs")
    hdr = f"{'T':>6} {'dtype':>9} {'mode':>6} {'variant':>10} {'ms':>9} {'rel L2':>9} {'peak MiB':>9}"
    print(hdr)
    print("-" * len(hdr))
    for T in (int(t) for t in args.T.split(",")):
        for dname in args.dtypes.split(","):
            dtype, tf32 = DTYPES[dname]
            base = make_inputs(args.B, args.H, Hkv, T, args.M, args.E, dtype, dev)
            for mode in args.modes.split(","):
                g = torch.Generator(device=dev).manual_seed(1)
                grads = (torch.randn(args.B, args.H, T, args.E, device=dev, generator=g),
                         torch.randn(args.B, args.H, T, device=dev, generator=g))
                need = mode != "fwd"
                ref_in = [x.float().requires_grad_(need) for x in base]
                with torch.no_grad() if not need else torch.enable_grad():
                    ref = [r.detach() for r in run_once(ref_in, dict(backend="torch"), mode, grads)]
                del ref_in
                for name in variants:
                    if (name == "sequential" and T > args.seq_max_T) or (name == "torch" and T > args.torch_max_T):
                        continue
                    kw = variant_kwargs(name, tf32, group)
                    x = [t.clone().requires_grad_(need) for t in base]
                    if name == "torch":
                        x = [t.float().detach().requires_grad_(need) for t in base]
                    with torch.no_grad() if not need else torch.enable_grad():
                        out = run_once(x, kw, mode, grads)
                        err = max(rel_l2(a, r) for a, r in zip(out, ref))
                        bad = not all(torch.isfinite(a).all() for a in out)
                        del out
                        sync()
                        peak = peak_mib(lambda: run_once(x, kw, mode, grads))
                        ms = bench(lambda: run_once(x, kw, mode, grads))
                    flag = "  NONFINITE" if bad else ""
                    print(f"{T:>6} {dname:>9} {mode:>6} {name:>10} {ms:>9.3f} {err:>9.2e} {peak:>9.1f}{flag}",
                          flush=True)
                    del x
                del ref
                if dev == "cuda":
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
