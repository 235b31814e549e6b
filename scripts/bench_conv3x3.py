"""Time kernels/sea_conv3x3.py against cuDNN at the bidirectional SEA decoder's three convolution shapes (GPU).

For each T: conv1 (stride 2, 4H -> 4H, bias, ReLU), conv2 (4H -> 4H, bias, ReLU), conv3 in its parity form (4H -> 2H,
no bias), all bf16 channels-last at K/2 columns, as SEA's decoder calls them: cuDNN with its per-call weight casts
(conv_relu / F.conv2d under the same casts) against the Triton kernel with its per-call packing, over the launch
configurations given. Each variant is captured as a CUDA graph of --calls calls (so cuDNN's memsets and the casts
count as they do inside SEA's replayed forward) and replayed --reps times; the table gives microseconds a call
(median of the replays), the largest difference from cuDNN's output in 16-bit steps of its largest value, and the
share of values not bit-equal to cuDNN's.

    python scripts/bench_conv3x3.py --T 8192 65536 --configs 2x4x3 4x8x3 1x4x2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def graph_time(fn, calls: int, reps: int) -> float:
    """Microseconds a call: fn captured `calls` times in one CUDA graph, the median over `reps` replays."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000.0 / calls)
    return statistics.median(times)


def steps(y: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(largest |y - ref| in 16-bit steps at the largest |ref|, the fraction of values not bit-equal)."""
    a, r = y.float(), ref.float()
    step = torch.finfo(ref.dtype).eps * float(r.abs().max().clamp_min(torch.finfo(ref.dtype).tiny))
    return float((a - r).abs().max()) / step, float((a != r).float().mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, nargs="+", default=[8192, 65536])
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--K", type=int, default=128)
    p.add_argument("--configs", nargs="+", default=["2x4x3"],
                   help="BLOCK_R x NUM_WARPS x NUM_STAGES of kernels/sea_conv3x3.py, e.g. 2x4x3")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--reps", type=int, default=10)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_conv3x3: needs a CUDA device", file=sys.stderr)
        return 2
    import kernels.sea_conv3x3 as kc
    from methods.sea.estimator import conv_relu

    torch.manual_seed(0)
    dev, dt, cl = "cuda", torch.bfloat16, torch.channels_last
    C, W = 4 * args.heads, args.K // 2
    w1, w2 = (torch.randn(C, C, 3, 3, device=dev) / 24 for _ in range(2))
    b1, b2 = (torch.randn(C, device=dev) * 0.1 for _ in range(2))
    w3 = torch.randn(2 * args.heads, C, 3, 3, device=dev) / 24
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print(f"{'T':>6} {'conv':>5} {'variant':>10} {'us/call':>8} {'steps':>6} {'differ':>7}")
    for T in args.T:
        x = torch.randn(1, C, T, W, device=dev).to(dt, memory_format=cl)
        h = F.relu(F.conv2d(x, w1.to(dt), b1.to(dt), stride=(2, 1), padding=1)).contiguous(memory_format=cl)
        cases = {
            "conv1": (x, w1, b1, 2, True),
            "conv2": (h, w2, b2, 1, True),
            "conv3": (h, w3, None, 1, False),
        }
        for name, (inp, w, b, s, relu) in cases.items():
            def cudnn(inp=inp, w=w, b=b, s=s, relu=relu):
                if relu:
                    return conv_relu(inp, w.to(dt, memory_format=cl), b.to(dt), [s, 1], [1, 1])
                return F.conv2d(inp, w.to(dt), None if b is None else b.to(dt), stride=(s, 1), padding=1)

            with torch.no_grad():
                ref = cudnn()
                print(f"{T:>6} {name:>5} {'cudnn':>10} {graph_time(cudnn, args.calls, args.reps):8.1f}")
                for cfg in args.configs:
                    r, nw, ns = (int(v) for v in cfg.split("x"))
                    kc.BLOCK_R, kc.NUM_WARPS, kc.NUM_STAGES = r, nw, ns

                    def triton(inp=inp, w=w, b=b, s=s, relu=relu):
                        bias = None if b is None else b.to(dt)
                        return kc.conv3x3(inp, kc.pack_weight(w, dt), bias, stride=s, relu=relu)

                    try:
                        y = triton()
                        err, share = steps(y, ref)
                        us = graph_time(triton, args.calls, args.reps)
                        print(f"{T:>6} {name:>5} {cfg:>10} {us:8.1f} {err:6.2f} {share:7.4f}")
                    except Exception as e:              # a configuration that does not compile or run: say so
                        print(f"{T:>6} {name:>5} {cfg:>10} failed: {type(e).__name__}: {str(e).splitlines()[0][:90]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
