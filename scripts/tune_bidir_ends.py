#!/usr/bin/env python
"""Time the bidirectional SEA estimator's fused head and tail kernels under alternative launch constants, against what
they replace, and the decoder's convolutions under cuDNN's options, in one process (issue 7).

Head (kernels/sea_bidir_head.py) against the encoder kernel writing bf16 z + the row projection under bf16 autocast +
the permuting copy into channels-last memory (BidirectionalDecoder.head); tail (kernels/sea_bidir_tail.py) against
PyTorch's softmax and block sums on the interleaved, width-resized logits (torch.compile'd, as in the estimator).
Synthetic inputs at SEA's widths (B=1, H=16, d=64, K=128; Gaussian), timed by the harness's timer (median, L2
flushed); every variant's output checked against the first variant's (max abs difference). Prints one table per
kernel and a last line `BEST --set ...` naming the fastest variant of each.

--only convs: conv1 (3x3, stride 2 over time) and conv2 (3x3) followed by ReLU, and the parity-form conv3 (3x3 to 2H =
32 channels, methods/sea/estimator.py: BidirectionalDecoder.parity_weight), bf16 channels-last, each as F.conv2d then
F.relu (eager), torch.compile'd, and torch.cudnn_convolution_relu (cuDNN's fused convolution + bias + ReLU), each
with torch.backends.cudnn.benchmark off (cuDNN's heuristic algorithm) and on (timed once, the fastest kept).

    python scripts/tune_bidir_ends.py --T 8192 [--only head,tail,convs]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from harness.measure import time_cuda  # noqa: E402
from scripts.tune_sea_kernels import constants  # noqa: E402

HEAD = [{}, {"BLOCK_T": 2}, {"BLOCK_T": 8}, {"NUM_WARPS": 4}, {"BLOCK_T": 2, "NUM_WARPS": 4},
        {"BLOCK_T": 8, "NUM_WARPS": 16}, {"NUM_STAGES": 1}, {"NUM_STAGES": 3}, {"BLOCK_K": 64}]
TAIL = [{}, {"HEAD_GROUPS": 2}, {"HEAD_GROUPS": 4}, {"CHUNK": 2}, {"CHUNK": 8}, {"NUM_WARPS": 8},
        {"CHUNK": 8, "NUM_WARPS": 8}, {"HEAD_GROUPS": 2, "CHUNK": 8}, {"HEAD_GROUPS": 4, "CHUNK": 8},
        {"HEAD_GROUPS": 4, "NUM_WARPS": 2}, {"HEAD_GROUPS": 2, "CHUNK": 2, "NUM_WARPS": 2}]


def table(title, rows):
    print(f"\n{title}")
    print("| variant | ms | vs first | max abs diff |")
    print("|---|---|---|---|")
    for name, ms, base, diff in rows:
        print(f"| {name} | {ms:.4f} | {ms / base:.3f} | {diff:.3g} |")


def convs(T: int, rep_ms: float) -> None:
    torch.manual_seed(0)
    T, C, W, H = T, 64, 64, 16
    cl = torch.channels_last
    x0 = torch.randn(1, C, T, W, device="cuda").to(torch.bfloat16).contiguous(memory_format=cl)
    x1 = torch.randn(1, C, T // 2, W, device="cuda").to(torch.bfloat16).contiguous(memory_format=cl)

    def weights(cout):
        w = (torch.randn(cout, C, 3, 3, device="cuda") / 24).to(torch.bfloat16).contiguous(memory_format=cl)
        return w, (0.1 * torch.randn(cout, device="cuda")).to(torch.bfloat16)

    convs = [("conv1 (stride 2) + relu", x0, *weights(C), (2, 1), True),
             ("conv2 + relu", x1, *weights(C), (1, 1), True),
             ("conv3 parity form (32 out)", x1, *weights(2 * H), (1, 1), False)]
    print("| convolution | variant | ms | vs first | max abs diff |")
    print("|---|---|---|---|---|")
    for name, x, w, b, stride, relu in convs:
        def plain():
            y = F.conv2d(x, w, b, stride=stride, padding=1)
            return F.relu(y) if relu else y

        def fused():
            return torch.cudnn_convolution_relu(x, w, b, stride, (1, 1), (1, 1), 1)

        compiled = torch.compile(plain)
        variants = [("conv2d + relu, heuristic", plain, False), ("conv2d + relu, benchmark", plain, True),
                    ("torch.compile, heuristic", compiled, False), ("torch.compile, benchmark", compiled, True)]
        if relu:
            variants += [("cudnn_convolution_relu, heuristic", fused, False),
                         ("cudnn_convolution_relu, benchmark", fused, True)]
        base = want = None
        for vname, fn, bench in variants:
            torch.backends.cudnn.benchmark = bench
            try:
                with torch.no_grad():
                    got = fn()
                    ms = time_cuda(fn, rep_ms=rep_ms).median_ms
            except Exception as e:                                       # an unsupported fused form: say so
                print(f"| {name} | {vname} | error: {type(e).__name__}: {str(e)[:80]} | | |")
                continue
            if base is None:
                base, want = ms, got
            diff = (got.float() - want.float()).abs().max().item()
            print(f"| {name} | {vname} | {ms:.4f} | {ms / base:.3f} | {diff:.3g} |")
        torch.backends.cudnn.benchmark = False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=8192)
    ap.add_argument("--rep-ms", type=float, default=50)
    ap.add_argument("--only", default="head,tail", help="comma-separated: head, tail, convs")
    a = ap.parse_args(argv)
    only = set(a.only.split(","))
    if not torch.cuda.is_available():
        print("tune_bidir_ends.py needs a CUDA device", file=sys.stderr)
        return 2
    if "convs" in only:
        convs(a.T, a.rep_ms)
    from kernels import sea_bidir_head as bh
    from kernels import sea_bidir_tail as bt
    from kernels.sea_encoder import encoder_forward
    from methods.sea.estimator import BidirectionalDecoder

    torch.manual_seed(0)
    B, H, T, d, K = 1, 16, a.T, 64, 128
    dev = "cuda"
    c = torch.randn(B, H, T, 2 * d, device=dev)
    v = torch.randn(B, H, T, d, device=dev).to(torch.bfloat16)
    enc = torch.nn.Sequential(torch.nn.Linear(3 * d, 2 * d), torch.nn.LayerNorm(2 * d), torch.nn.GELU()).to(dev)
    scaler = torch.nn.Linear(2 * d, 2).to(dev)
    dec = BidirectionalDecoder(d, H, K).to(dev)
    ew = (enc[0].weight, enc[0].bias, enc[1].weight, enc[1].bias, enc[1].eps, scaler.weight, scaler.bias)

    def composed():
        z, s = encoder_forward(c, v, *ew, precision="tf32", z_dtype=torch.bfloat16)
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            return dec.head(z).contiguous(memory_format=torch.channels_last), s

    def fused():
        return bh.encoder_head(c, v, *ew, dec.row.weight, dec.row.bias, K=K, precision="tf32")

    rows = []
    best_head = best_tail = {}
    with torch.no_grad():
        if "head" in only:
            want = composed()[0]
            t = time_cuda(composed, rep_ms=a.rep_ms).median_ms
            rows.append(("encoder kernel + row GEMM + permute (replaced)", t, t, 0.0))
            best = None
            for var in HEAD:
                with constants(bh, var):
                    got = fused()[0]
                    ms = time_cuda(fused, rep_ms=a.rep_ms).median_ms
                name = "head " + (", ".join(f"{k}={val}" for k, val in var.items()) or "defaults")
                rows.append((name, ms, rows[0][1], (got.float() - want.float()).abs().max().item()))
                if best is None or ms < best[1]:
                    best = (var, ms)
            table(f"T={T}: head (kernels/sea_bidir_head.py)", rows)
            best_head = best[0]

        if "tail" in only:
            y = torch.randn(B, 2 * H, T // 2, K // 2, device=dev).mul(3).to(torch.bfloat16)
            y = y.contiguous(memory_format=torch.channels_last)

            def torch_tail(y):
                logits = y.float().view(B, 2, H, T // 2, K // 2).permute(0, 2, 3, 1, 4).reshape(B, H, T, K // 2)
                probs = torch.softmax(logits.repeat_interleave(2, dim=3), dim=-1)
                return probs.reshape(B, H, T // 64, 64, K).sum(3, dtype=torch.float32)

            compiled_tail = torch.compile(torch_tail)
            want = compiled_tail(y)
            t = time_cuda(lambda: compiled_tail(y), rep_ms=a.rep_ms).median_ms
            rows = [("softmax + block sums, torch.compile (replaced)", t, t, 0.0)]
            best = None
            for var in TAIL:
                with constants(bt, var):
                    got = bt.pooled_scores(y, heads=H, rows=64)
                    ms = time_cuda(lambda: bt.pooled_scores(y, heads=H, rows=64), rep_ms=a.rep_ms).median_ms
                name = "tail " + (", ".join(f"{k}={val}" for k, val in var.items()) or "defaults")
                rows.append((name, ms, rows[0][1], (got - want).abs().max().item()))
                if best is None or ms < best[1]:
                    best = (var, ms)
            table(f"T={T}: tail (kernels/sea_bidir_tail.py)", rows)
            best_tail = best[0]
    sets = [f"--set kernels.sea_bidir_head.{k}={val}" for k, val in best_head.items()]
    sets += [f"--set kernels.sea_bidir_tail.{k}={val}" for k, val in best_tail.items()]
    print("\nBEST " + " ".join(sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
