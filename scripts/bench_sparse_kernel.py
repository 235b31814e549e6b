#!/usr/bin/env python
"""SEA's sparse-attention kernels against dense cuDNN SDPA and FlexAttention on the same block-sparse mask.

Issue 7 asks two questions of the sparse kernel alone (not SEA's estimator): (1) at mask density rho, is it
at least 0.8 / rho times faster than dense cuDNN attention; (2) is it faster than FlexAttention given the
same block mask. This script answers both for bidirectional masks made of whole key blocks:

    for each (b, h, query block of BLOCK rows), n = max(1, round(rho * T / BLOCK)) key blocks drawn at
    random (seeded); every row of the query block attends to every key of those blocks.

The same selection is handed to
  * `row`   - kernels/sea_sparse_attention.py's CSR row kernel (SEA's default sparse path; one program per
              query row), as CSR lists of nnz = B H T n BLOCK keys;
  * `tiled` - the forward-only tiled kernel (BLOCK_M query rows per program, tensor-core dots over the active
              key tiles), as SEA's compressed mask [B, H, T, T / BLOCK] with k_sel = BLOCK (whole cells);
  * `flex`  - torch.compile'd flex_attention with BlockMask.from_kv_blocks (all blocks full, no mask_mod);
and dense `cudnn` / `flash` SDPA run on the same q, k, v (no mask) for the speedup. Outputs of row and tiled
are compared with Flex's (relative L2 over the whole output), and at small T with a dense masked softmax.
Mask construction is outside the timed region for every variant.

    python scripts/bench_sparse_kernel.py                                  # T 16k, 64k; rho 1/8, 1/32, 1/128
    python scripts/bench_sparse_kernel.py --T 16384 --rho 0.125 --json out.jsonl
CPU check (tiny sizes, kernels in the Triton interpreter, Flex eager):
    TRITON_INTERPRET=1 python scripts/bench_sparse_kernel.py --device cpu --T 512 --heads 2 --rho 0.25
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def block_selection(B, H, T, block, n, seed, device):
    """[B, H, nqb, n] sorted key-block ids, distinct within a query block."""
    nqb = T // block
    g = torch.Generator(device="cpu").manual_seed(seed)
    r = torch.rand(B, H, nqb, nqb, generator=g)
    return r.argsort(-1)[..., :n].sort(-1).values.to(device)             # [B, H, nqb, n]


def csr_from_blocks(sel, T, block):
    """Row kernel input: row_ptr int64 [B*H*T + 1], col int32 [B*H*T*n*block]; row t lists the keys of
    its query block's selected key blocks, ascending."""
    B, H, nqb, n = sel.shape
    keys = (sel[..., None] * block + torch.arange(block, device=sel.device)).reshape(B, H, nqb, 1, n * block)
    col = keys.expand(B, H, nqb, block, n * block).reshape(-1).to(torch.int32)   # rows of a block share keys
    row_ptr = torch.arange(B * H * T + 1, device=sel.device, dtype=torch.int64) * (n * block)
    return row_ptr, col


def compressed_mask(sel, T, block):
    """Tiled kernel input: SEA's compressed mask bool [B, H, T, Kc] with Kc = T / block cells (cell c spans
    keys [c block, (c+1) block) for bidirectional rows)."""
    B, H, nqb, n = sel.shape
    m = torch.zeros(B, H, nqb, nqb, dtype=torch.bool, device=sel.device)
    m.scatter_(-1, sel, True)
    return m[:, :, :, None, :].expand(B, H, nqb, block, nqb).reshape(B, H, T, nqb)


def flex_block_mask(sel, T, block):
    from torch.nn.attention.flex_attention import BlockMask

    B, H, nqb, n = sel.shape
    zeros = torch.zeros(B, H, nqb, dtype=torch.int32, device=sel.device)
    full_idx = torch.zeros(B, H, nqb, nqb, dtype=torch.int32, device=sel.device)
    full_idx[..., :n] = sel.to(torch.int32)
    full_num = torch.full((B, H, nqb), n, dtype=torch.int32, device=sel.device)
    allow = torch.zeros(B, H, nqb, nqb, dtype=torch.bool, device=sel.device)
    allow.scatter_(-1, sel, True)                                        # [B, H, nqb, nkb]

    def member(b, h, q_idx, kv_idx):     # skipped by the compiled kernel on full blocks; eager Flex needs it
        return allow[b, h, q_idx // block, kv_idx // block]
    return BlockMask.from_kv_blocks(zeros, torch.zeros_like(full_idx), full_num, full_idx, BLOCK_SIZE=block,
                                    mask_mod=member, seq_lengths=(T, T))


def dense_masked(q, k, v, sel, block, scale):
    """float64 reference: softmax over the selected blocks only (small T)."""
    B, H, T, D = q.shape
    allow = compressed_mask(sel, T, block).repeat_interleave(block, dim=-1)   # [B, H, T, T]
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    s = s.masked_fill(~allow, float("-inf"))
    return torch.softmax(s, -1) @ v.double()


def timer(device, rep_ms):
    if device.type == "cuda":
        import triton.testing

        return lambda fn: triton.testing.do_bench(fn, rep=rep_ms)

    def cpu(fn, reps=3):
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps * 1e3
    return cpu


def sdpa_fn(q, k, v, backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    which = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]

    def fn():
        with sdpa_kernel([which]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return fn


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--T", default="16384,65536", help="comma-separated sequence lengths (multiples of --block)")
    p.add_argument("--rho", default="0.125,0.03125,0.0078125", help="comma-separated mask densities")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--block", type=int, default=128, help="selection block (rows and keys); Flex BLOCK_SIZE")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--rep-ms", type=int, default=50)
    p.add_argument("--max-nnz", type=float, default=1.2e9, help="skip the row kernel above this many CSR entries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="append one JSON row per (T, rho) here")
    a = p.parse_args(argv)

    from kernels import sea_sparse_attention as ssa
    from methods.sea.interp import active_tiles

    dev = torch.device(a.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    bench = timer(dev, a.rep_ms)
    B, H, D, blk = a.batch, a.heads, a.head_dim, a.block
    scale = 1.0 / math.sqrt(D)
    if dev.type == "cuda":
        from methods.flex import _compiled_flex
        flex = _compiled_flex()
    else:
        from torch.nn.attention.flex_attention import flex_attention as flex
    rows = []
    print(f"{'T':>7} {'rho':>8} {'n/qblk':>6} {'cudnn':>8} {'flash':>8} {'flex':>8} {'row':>8} {'tiled':>8} "
          f"{'cudnn/row':>9} {'cudnn/tiled':>11} {'cudnn/flex':>10} {'0.8/rho':>7} {'flex/row':>8} "
          f"{'flex/tiled':>10}  errors vs flex (row, tiled)")
    for T in (int(x) for x in a.T.split(",")):
        if T % blk:
            print(f"T={T} is not a multiple of --block {blk}; skipped", file=sys.stderr)
            continue
        g = torch.Generator(device="cpu").manual_seed(a.seed)
        q, k, v = (torch.randn(B, H, T, D, generator=g).to(dev, dtype) for _ in range(3))
        dense = {}
        for be in ("cudnn", "flash"):
            if dev.type != "cuda":
                dense[be] = float("nan")
                continue
            try:
                dense[be] = bench(sdpa_fn(q, k, v, be))
            except RuntimeError as exc:
                print(f"  sdpa[{be}] unavailable: {str(exc).splitlines()[0][:120]}", file=sys.stderr)
                dense[be] = float("nan")
        for rho in (float(x) for x in a.rho.split(",")):
            nqb = T // blk
            n = max(1, round(rho * nqb))
            sel = block_selection(B, H, T, blk, n, a.seed + 1, dev)
            row = dict(T=T, rho=rho, rho_actual=n / nqb, blocks_per_query_block=n, B=B, H=H, D=D, block=blk,
                       dtype=a.dtype, device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                       cudnn_ms=dense["cudnn"], flash_ms=dense["flash"], notes=[])
            bm = flex_block_mask(sel, T, blk)
            out_flex = flex(q, k, v, block_mask=bm, scale=scale)
            row["flex_ms"] = bench(lambda: flex(q, k, v, block_mask=bm, scale=scale))
            if T <= 1024:
                ref = dense_masked(q, k, v, sel, blk, scale)
                row["err_flex_vs_dense_masked"] = rel_l2(out_flex, ref)
            nnz = B * H * T * n * blk
            row["nnz"] = nnz
            if nnz <= a.max_nnz:
                row_ptr, col = csr_from_blocks(sel, T, blk)
                out_row = ssa.sparse_attention_triton(q, k, v, row_ptr, col, scale)
                row["row_ms"] = bench(lambda: ssa.sparse_attention_triton(q, k, v, row_ptr, col, scale))
                row["err_row_vs_flex"] = rel_l2(out_row, out_flex)
                del row_ptr, col, out_row
            else:
                row["row_ms"] = float("nan")
                row["notes"].append(f"row kernel skipped: {nnz:.3g} CSR entries > --max-nnz {a.max_nnz:.3g}")
            mask = compressed_mask(sel, T, blk)
            bmq, bnk = ssa.TILED_BLOCK_M, ssa.TILED_BLOCK_N
            tiles, ntiles = active_tiles(mask, causal=False, block_m=bmq, block_n=bnk)
            tiled = lambda: ssa.sparse_attention_tiled(q, k, v, mask, tiles, ntiles, scale, k_sel=blk,  # noqa: E731
                                                       causal=False, block_m=bmq, block_n=bnk)
            out_tiled = tiled()
            row["tiled_ms"] = bench(tiled)
            row["err_tiled_vs_flex"] = rel_l2(out_tiled, out_flex)
            del mask, tiles, ntiles, out_tiled, out_flex, bm
            c = row["cudnn_ms"]
            row["goal_speedup"] = 0.8 / row["rho_actual"]
            for name in ("row", "tiled", "flex"):
                row[f"cudnn_over_{name}"] = c / row[f"{name}_ms"]
            row["flex_over_row"] = row["flex_ms"] / row["row_ms"]
            row["flex_over_tiled"] = row["flex_ms"] / row["tiled_ms"]
            rows.append(row)
            print(f"{T:>7} {row['rho_actual']:>8.5f} {n:>6} {c:>8.3f} {row['flash_ms']:>8.3f} {row['flex_ms']:>8.3f} "
                  f"{row['row_ms']:>8.3f} {row['tiled_ms']:>8.3f} {row['cudnn_over_row']:>9.2f} "
                  f"{row['cudnn_over_tiled']:>11.2f} {row['cudnn_over_flex']:>10.2f} {row['goal_speedup']:>7.1f} "
                  f"{row['flex_over_row']:>8.2f} {row['flex_over_tiled']:>10.2f}  "
                  f"{row.get('err_row_vs_flex', float('nan')):.2e}, {row['err_tiled_vs_flex']:.2e}"
                  + (f"  (flex vs dense-masked {row['err_flex_vs_dense_masked']:.2e})"
                     if "err_flex_vs_dense_masked" in row else "")
                  + "".join(f"  [{x}]" for x in row["notes"]), flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
