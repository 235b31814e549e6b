#!/usr/bin/env python
"""Issue 7's sparse-kernel goal (speedup over dense cuDNN >= 0.8 / rho at mask density rho) against the card's
memory floor, measured in one run.

Any attention kernel reads q, k and v at least once and writes o once (with SEA's key blocks every key block is some
query block's own block, so every key and value is read). Timed here for each T (causal, B=1, H=16, D=64, bf16):
  * floor: one compiled pointwise kernel o = q + k + v (three reads and one write of the attention's shape): the
    least traffic of any attention kernel at any density, streamed at the bandwidth such a kernel reaches here (not
    the card's nominal peak), so cuDNN / floor bounds what a sparse kernel moving its bytes at that rate can gain, and
    the goal 0.8 / rho is beyond it for rho < 0.8 * floor / cuDNN;
  * cuDNN dense causal SDPA;
  * FlexAttention on SEA's key blocks (SEA fast, shared_keys=64, shared_span=blocks, untrained estimator, Gaussian
    q, k, v: the BlockMask the layer builds), checked against the rows kernel on the per-row lists of the same keys;
  * FlexAttention on causal sliding-window block masks (each query block: its own block and the w - 1 blocks before
    it), for densities from 1/2 down to SEA's.
rho = attended (row, key) pairs / the causal T (T + 1) / 2 pairs, over all heads. Prints one table; a variant that
fails prints its error and the probe goes on.

    python scripts/probe_sparse_floor.py --T 16384 65536
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

H, D, R = 16, 64, 64


def window_mask(T: int, w: int, device):
    """BlockMask (R x R blocks) of a causal sliding window of w blocks: query block i attends blocks
    max(0, i - w + 1) .. i - 1 in full and its own block i under the causal rule; and its (row, key) pairs."""
    from torch.nn.attention.flex_attention import BlockMask

    nb = T // R
    i = torch.arange(nb, device=device)
    full_num = torch.clamp(i, max=w - 1).to(torch.int32)                         # blocks before i in the window
    full_idx = (i[:, None] - 1 - torch.arange(nb, device=device)[None, :]).clamp(min=0).to(torch.int32)
    part_idx = torch.zeros(nb, nb, dtype=torch.int32, device=device)
    part_idx[:, 0] = i.to(torch.int32)
    expand = (lambda x: x.expand(1, H, *x.shape).contiguous())

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx
    bm = BlockMask.from_kv_blocks(expand(torch.ones(nb, dtype=torch.int32, device=device)), expand(part_idx),
                                  expand(full_num), expand(full_idx), BLOCK_SIZE=R, mask_mod=causal,
                                  seq_lengths=(T, T), compute_q_blocks=False)
    pairs = H * (int(full_num.sum()) * R * R + nb * R * (R + 1) // 2)
    return bm, pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, nargs="+", default=[16384, 65536])
    ap.add_argument("--opts", default="performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,"
                                      "compile=estimator,sparse_pieces=1,shared_keys=64,shared_span=blocks")
    ap.add_argument("--windows", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128, 256],
                    help="divisors of the block count: window = NB / divisor blocks")
    ap.add_argument("--rep-ms", type=int, default=100)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("probe_sparse_floor.py needs a CUDA device", file=sys.stderr)
        return 2
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kernels.sea_sparse_rows import sparse_rows_forward
    from methods.flex import _compiled_flex
    from methods.sea.flex_shared import shared_block_mask
    from methods.sea.shared import key_block_width, shared_row_csr
    from scripts._sea_setup import build_sea, gaussian_qkv, parse_opts

    flex = _compiled_flex()
    opts = {"BLOCK_M": R, "BLOCK_N": R}
    add3 = torch.compile(lambda q, k, v: q + k + v)
    print("| T | variant | rho | ms | speedup vs cuDNN | goal 0.8/rho | goal met | ms / floor | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for T in a.T:
        q, k, v, _ = gaussian_qkv(T)
        scale = D ** -0.5
        causal_pairs = H * T * (T + 1) / 2

        def bench(fn):
            fn()
            return triton.testing.do_bench(fn, warmup=10, rep=a.rep_ms)

        def cudnn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        try:
            dense = bench(cudnn)
            floor = bench(lambda: add3(q, k, v))
        except Exception as exc:                                         # nothing to compare with: next T
            print(f"| {T} | cuDNN / floor | | failed: {type(exc).__name__}: {str(exc)[:150]} | | | | | |")
            continue
        gbps = 4 * q.numel() * q.element_size() / floor / 1e6
        print(f"| {T} | cuDNN dense causal | 1 | {dense:.4f} | 1.00 | 0.80 | | {dense / floor:.1f} | |")
        print(f"| {T} | floor: o = q + k + v ({gbps:.0f} GB/s) | | {floor:.4f} | {dense / floor:.1f} (the bound at "
              f"this rate) | | | 1.0 | |")

        def row(name, fn, pairs, ref=None):
            try:
                out = fn()
                err = (out.float() - ref.float()).abs().max().item() if ref is not None else float("nan")
                ms = bench(fn)
            except Exception as exc:                                     # failures are data
                print(f"| {T} | {name} | | failed: {type(exc).__name__}: {str(exc)[:150]} | | | | | |")
                return
            rho = pairs / causal_pairs
            goal = 0.8 / rho
            print(f"| {T} | {name} | {rho:.5f} | {ms:.4f} | {dense / ms:.2f} | {goal:.1f} | "
                  f"{'yes' if dense / ms >= goal else 'no'} | {ms / floor:.2f} | {err:.3g} |")

        try:                                                             # SEA's key blocks
            lay = build_sea(parse_opts(a.opts), T=T, causal=True)
            with torch.no_grad():
                lay(q, k, v, causal=True)
            sel = lay.last_aux["mask"]
            width = key_block_width(T, R, sel.shape[3], True, lay.mode, lay.k, H, lay.shared_budget, str(sel.device))
            bm = shared_block_mask(sel, T=T, R=R, causal=True, exact_mod=False, width=width)
            pairs = H * (T // R) * R * (R + 1) // 2 + int(bm.full_kv_num_blocks.sum()) * R * R
            row_ptr, col = shared_row_csr(sel, T=T, R=R, k=lay.k, span="blocks")
            if int(row_ptr[-1]) != pairs:
                print(f"| {T} | SEA key blocks | | the BlockMask holds {pairs} pairs, the per-row lists "
                      f"{int(row_ptr[-1])} | | | | | |")
            ref = sparse_rows_forward(q, k, v, row_ptr, col, scale, pieces=1)
            row(f"Flex on SEA's key blocks (width {width})",
                lambda: flex(q, k, v, block_mask=bm, scale=scale, kernel_options=opts), pairs, ref)
            row("rows kernel, same keys", lambda: sparse_rows_forward(q, k, v, row_ptr, col, scale, pieces=1),
                pairs, ref)
            del row_ptr, col, ref
        except Exception as exc:
            print(f"| {T} | SEA key blocks | | failed: {type(exc).__name__}: {str(exc)[:150]} | | | | | |")
        for div in a.windows:
            w = max(1, (T // R) // div)
            bm, pairs = window_mask(T, w, q.device)
            row(f"Flex, causal window of {w} blocks",
                lambda bm=bm: flex(q, k, v, block_mask=bm, scale=scale, kernel_options=opts), pairs)
        need = 0.8 * floor / dense
        print(f"| {T} | the goal is beyond the measured floor below rho = 0.8 floor / cuDNN = {need:.5f} "
              f"(1 / {1 / need:.0f}) | | | | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
