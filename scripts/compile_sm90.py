"""Compile the Triton kernels of favor_softmax_dense for an H100/H200 (sm_90a) on a machine without a GPU, and report
each kernel's registers, spills and shared memory from ptxas, and its SASS instruction counts; nothing is run.

Why: the device's time is short, and a kernel's register count (which sets how many programs an SM holds) and its
instructions can be read from the compiler alone. The Triton kernels are launched as SEA's estimator launches them
(CPU tensors of the same shapes and dtypes stand for the GPU's; a launch only compiles, so the torch steps between
launches compute nothing that matters) with a stand-in driver that reports an sm_90 target. The Triton installed
here may differ from the device's (triton 3.6 there): PYTHONPATH can put another version first, e.g.
    pip install --no-deps --target /tmp/t36 triton==3.6.0
    PYTHONPATH=/tmp/t36 python scripts/compile_sm90.py --T 8192 --set kernels.favor_dense.KEY_VSUM_BLOCK=last
Registers read here are the compiler's; only a GPU run says what they cost in time.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _Sm90Driver:
    """The few calls Triton's JIT makes of its driver before a launch: an sm_90 target, device 0, stream 0."""

    def __init__(self):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", 90, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")


def _nvidia_bin(name: str) -> str:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(path) if path.exists() else name


def resource_usage(cubin: bytes) -> dict:
    """registers, spill stores/loads and shared bytes of a cubin (cuobjdump --dump-resource-usage)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_nvidia_bin("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True,
                             text=True, check=True).stdout
    got = {}
    for key, pat in (("registers", r"REG:(\d+)"), ("shared", r"SHARED:(\d+)"), ("stack", r"STACK:(\d+)"),
                     ("local", r"LOCAL:(\d+)")):
        m = re.search(pat, out)
        got[key] = int(m.group(1)) if m else None
    return got


def sass_counts(sass: str) -> collections.Counter:
    """SASS opcodes (without modifiers) and how often each appears in the listing (static counts)."""
    ops = collections.Counter()
    for line in sass.splitlines():              # "control\t[@predicate ]OPCODE[.modifiers] operands;"
        m = re.match(r"[^\t]*\t(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if m:
            ops[m.group(1)] += 1
    return ops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--identity-cols", type=int, default=64, help="SEA's identity_values=kernel (0: concatenated)")
    ap.add_argument("--out-bf16", action="store_true", help="bf16 output (SEA's encoder_operands=bf16)")
    ap.add_argument("--what", choices=("favor", "head"), default="favor",
                    help="favor_softmax_dense's kernels, or the bidirectional encoder head (bf16 operands, K=128)")
    ap.add_argument("--kernel", default="", help="regex of the kernels to report (default: every one compiled)")
    ap.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE")
    ap.add_argument("--dump-dir", default="", help="also write each reported kernel's TTGIR, PTX and SASS here")
    a = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("compile_sm90.py compiles for the GPU: unset TRITON_INTERPRET", file=sys.stderr)
        return 2
    import triton
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    from scripts._sea_setup import set_constants

    set_constants(a.set)
    from kernels import favor_dense as fd
    from methods.sea.estimator import identity_values
    from methods.sea.favor import orthogonal_random_features

    compiled = []
    run, active = JITFunction.run, driver._active

    def compile_only(self, *args, grid, warmup, **kwargs):
        if "EMU" in kwargs:
            kwargs["EMU"] = False                    # the GPU's code path (CPU tensors would pick the interpreter's)
        kern = run(self, *args, grid=grid, warmup=True, **kwargs)
        compiled.append((self.fn.__name__, grid, kern))
        return kern

    driver.set_active(_Sm90Driver())
    JITFunction.run = compile_only
    try:
        _launch(a, fd, identity_values, orthogonal_random_features)
    finally:                                     # the process's JIT and driver as they were
        JITFunction.run = run
        driver._active = active
    print(f"triton {triton.__version__}, sm_90a, T={a.T}, H={a.heads}, {a.what}, sets {a.set}")
    for name, grid, kern in compiled:
        if not re.search(a.kernel, name):
            continue
        use = resource_usage(kern.asm["cubin"])
        sass = kern.asm["sass"]
        ops = sass_counts(sass)
        md = kern.metadata
        print(f"{name} grid {tuple(grid)}: {use['registers']} registers, local {use['local']} B (spills), "
              f"stack {use['stack']}, {md.shared} B shared, {md.num_warps} warps, {md.num_stages} stages; "
              f"{sum(ops.values())} SASS instructions")
        print("   " + ", ".join(f"{op} {n}" for op, n in ops.most_common(24)))
        if a.dump_dir:
            os.makedirs(a.dump_dir, exist_ok=True)
            for form in ("ttgir", "ptx", "sass"):
                with open(os.path.join(a.dump_dir, f"{name}.{form}"), "w") as f:
                    f.write(kern.asm[form])
    return 0


def _launch(a, fd, identity_values, orthogonal_random_features) -> None:
    """The launches to compile: favor_softmax_dense's or the head's, at SEA's widths."""
    import torch

    g = torch.Generator().manual_seed(0)
    T, H = a.T, a.heads
    q, k, v = (torch.randn(1, H, T, 64, generator=g).bfloat16() for _ in range(3))
    if a.what == "favor":
        proj = orthogonal_random_features(266, 64, g)
        if a.identity_cols:
            vals = v
        else:
            ident = identity_values(None, 1, T, 64, "cpu")[:, None].expand(1, H, T, 64).bfloat16()
            vals = torch.cat([ident, v], -1)
        fd.COMBINE = "triton"
        with torch.no_grad():
            fd.favor_softmax_dense(q, k, vals, proj, operands="bf16", precision="tf32",
                                   identity_cols=a.identity_cols,
                                   out_dtype=torch.bfloat16 if a.out_bf16 else torch.float32)
    else:                       # SEA's bidirectional head at d = 64, K = 128, encoder_operands=bf16
        from kernels import sea_bidir_head as hd

        hd.head_usable = lambda device: True
        c = torch.randn(1, H, T, 128, generator=g).bfloat16()
        w = [torch.randn(*shape, generator=g) for shape in ((128, 192), (128,), (128,), (128,), (2, 128), (2,),
                                                           (256, 128), (256,))]
        with torch.no_grad():
            hd.encoder_head(c, v, *w[:4], 1e-5, *w[4:], K=128, precision="bf16")


if __name__ == "__main__":
    sys.exit(main())
