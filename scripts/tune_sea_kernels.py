#!/usr/bin/env python
"""Time SEA's heaviest Triton kernels under alternative launch constants, side by side in one process (issue 7).

Builds `sea` (B=1, H=16, D=64, bf16, causal, untrained estimator; options --opts) at --T, runs one forward to get
real intermediates (the encoder output z, the CSR lists), then for each kernel times its module-level constants'
variants (the harness's timer, harness.measure.time_cuda: median, L2 flushed) and checks every variant's output
against the baseline's (max abs difference relative to the baseline's largest value; variants that change the float
summation order differ by rounding only). Prints one table per kernel.

    python scripts/tune_sea_kernels.py --T 65536 \
        --opts performer_dtype=bf16,performer_backend=fused,estimator_precision=tf32
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.measure import time_cuda  # noqa: E402

DECODER = [{}, {"PRECISION": "tf32"}, {"BLOCK_T": 64}, {"NUM_WARPS": 8}, {"BLOCK_C": 4}, {"BLOCK_C": 16},
           {"PROGRAMS_PER_SM": 1}, {"PROGRAMS_PER_SM": 4}, {"BLOCK_F": 64}, {"PRECISION": "tf32", "BLOCK_T": 64},
           {"PRECISION": "tf32", "NUM_WARPS": 8}, {"BLOCK_T": 64, "NUM_WARPS": 8}]
FRONT = [{}, {"STAGES_TF32": None}, {"STAGES_TF32": 1}, {"STAGES_TF32": 3}, {"NUM_WARPS_OUTPUT": 4},
         {"NUM_WARPS_OUTPUT": 4, "STAGES_TF32": 1}, {"CHUNK_TF32": 64}, {"MAX_CHECKPOINTS": 512},
         {"MAX_CHECKPOINTS": 2048}]     # CHUNK / CHUNK_TF32, STAGES_TF32: the chunk of fp32 / tf32-precision calls
# kernels/favor_dense.py (the bidirectional Performer: key pass, combine, query pass), timed as one call; the first row
# is the per-program key pass (the form before the seventeenth session), the rest the per-feature one
# (KEY_BLOCK_T=128 in the per-program form needs 256 KiB of shared memory: out of resources on an H200)
# (the round-19 sweep: results/nvidia-h200/sea-round19/call2/tune-favor.txt; a transposed per-program key pass,
# features as [features, keys], was no faster: results/nvidia-h200/sea-bidir-mix/call1/tune-favor.txt)
# (the seventeenth session's sweeps: results/nvidia-h200/sea-key-pass/call1/ .. call3/, call5/: per-feature with 64-key
# tiles no faster than per-program; 128-key tiles on 2 stages 0.71x / 0.74x of it at 8k / 64k with bf16 values; more
# warps, 256-key tiles, other split counts and the query pass's tile settings no better; the query pass's dash from
# two bf16 products, as the key pass's, slower than its TF32 product (0.375 against 0.352 ms, 1.923 against 1.823 ms:
# removed))
# (call 6: the narrow last block's features merged into the last full block's programs measured slower in SEA's
# 8k profile and failed GPU tests: reverted)
FAVOR = [{"KEY_FORM": "per_program", "KEY_PF_DASH": "tf32"}, {}, {"KEY_PF_DASH": "tf32"}, {"KEY_DIAG": "tile"},
         {"KEY_PF_STAGES": 3}, {"KEY_PF_PROGRAMS": 1024}]
ROWS = [{}, {"ROWS_PER_PROGRAM": 32}, {"ENTRIES_PER_STEP": 32}, {"ENTRIES_PER_STEP": 128}, {"NUM_WARPS": 8},
        {"NUM_WARPS": 2}, {"ROWS_PER_PROGRAM": 32, "NUM_WARPS": 8}, {"ENTRIES_PER_STEP": 128, "NUM_WARPS": 8},
        {"HEAD_GROUP": 1}, {"HEAD_GROUP": 4},
        # the forward with P rounded once (pieces=1) runs NUM_WARPS_ONE_PIECE warps (2), not NUM_WARPS
        {"NUM_WARPS_ONE_PIECE": 1}, {"NUM_WARPS_ONE_PIECE": 4}, {"ENTRIES_PER_STEP": 128, "NUM_WARPS_ONE_PIECE": 4},
        {"ENTRIES_PER_STEP": 32, "NUM_WARPS_ONE_PIECE": 1}, {"HEAD_GROUP": 2}, {"HEAD_GROUP": 16}]
# kernels/sea_interp.py's CSR columns kernel (csr_columns_cells on the layer's own mask and row pointers)
INTERP = [{}, {"ROWS_PER_PROGRAM": 8}, {"ROWS_PER_PROGRAM": 32}, {"NUM_WARPS": 1}, {"NUM_WARPS": 4},
          {"SLOT_BLOCK": 32}, {"SLOT_BLOCK": 128}, {"ROWS_PER_PROGRAM": 8, "NUM_WARPS": 1},
          {"ROWS_PER_PROGRAM": 32, "NUM_WARPS": 4}]
# kernels/sea_topk.py's bisect top-k (select_topk on the layer's A_hat, the mode and k of the layer)
TOPK = [{}, {"BISECT_CELLS": 256}, {"BISECT_CELLS": 1024}, {"BISECT_CELLS_PER_THREAD": 8},
        {"BISECT_CELLS_PER_THREAD": 32}, {"BISECT_SNAP": False}]


@contextlib.contextmanager
def constants(module, values: dict):
    old = {k: getattr(module, k) for k in values}
    for k, v in values.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


def sweep(name, module, variants, call, rep_ms):
    print(f"\n{name} ({module.__name__})\n| variant | ms | vs baseline | max rel diff |\n|---|---|---|---|")
    base_out, base_ms = None, None
    for values in variants:
        label = ", ".join(f"{k}={v}" for k, v in values.items()) or "baseline"
        try:
            with constants(module, values):
                out = call()
                ms = time_cuda(call, rep_ms=rep_ms).median_ms
        except Exception as exc:  # noqa: BLE001 - a variant that fails is a row
            print(f"| {label} | error: {type(exc).__name__}: {str(exc)[:120]} | | |")
            continue
        out = out[0] if isinstance(out, tuple) else out
        if base_out is None:
            base_out, base_ms = out.float(), ms
        diff = ((out.float() - base_out).abs().max() / base_out.abs().max().clamp(min=1e-30)).item()
        print(f"| {label} | {ms:.3f} | {ms / base_ms:.3f}x | {diff:.2e} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=65536)
    ap.add_argument("--opts", default="performer_dtype=bf16,performer_backend=fused,estimator_precision=tf32")
    ap.add_argument("--rep-ms", type=float, default=100, help="timing budget of each variant")
    ap.add_argument("--only", default="decoder,front,rows",
                    help="comma list of decoder, front, rows, interp, topk, favor (favor: the bidirectional "
                         "Performer kernel on the same q, k and [identity values ; v], operands and precision from "
                         "--opts; front: with the decoder head when the estimator puts it there)")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("tune_sea_kernels.py needs a CUDA device", file=sys.stderr)
        return 2
    import kernels.favor_dense as fd
    import kernels.sea_decoder as dk
    import kernels.sea_favor_encoder as fe
    import kernels.sea_interp as si
    import kernels.sea_sparse_rows as sr
    import kernels.sea_topk as stk
    from methods.sea.topk import select_topk, selection_caps
    from scripts._sea_setup import build_sea, gaussian_qkv, parse_opts

    H, D, T = 16, 64, a.T
    opts = parse_opts(a.opts)
    mod = build_sea(opts, T=T, causal=True)
    q, k, v, _ = gaussian_qkv(T)
    est = mod.estimator
    with torch.no_grad():
        mod(q, k, v, causal=True)
        print(f"T={T} opts={a.opts} impl={mod.impl}")
        aux = mod.last_aux
        z, _, _ = est.fused_front(q, k, v, valid=None, vid_rows=est.v_id[:T], state=None, want_state=False)
        todo = a.only.split(",")
        if "decoder" in todo:
            sweep("decoder", dk, DECODER, lambda: dk.decoder_forward(z, est.dec, precision=None), a.rep_ms)
        if "front" in todo:
            head = est.front_head()
            sweep(f"fused front (precision tf32 when asked; decoder head {'in' if head else 'not in'} it)", fe, FRONT,
                  lambda: est.fused_front(q, k, v, valid=None, vid_rows=est.v_id[:T], state=None, want_state=False,
                                          head=head), a.rep_ms)
        if "favor" in todo:
            from methods.sea.estimator import PRECISIONS, identity_values

            # a bidirectional layer of the same options (its softmax-feature projection: m = d ln d features)
            bopts = {key: val for key, val in opts.items() if key != "performer_backend"}
            best = build_sea(bopts, T=T, causal=False).estimator
            vals = torch.cat([identity_values(None, 1, T, D, q.device)[:, None].expand(1, H, T, D), v.float()], -1)
            # q, k in the layer's dtype, as SEA's estimator passes them (KEY_FP32: the key pass's fp32 copy of k)
            print(f"favor_dense: m={best.proj.shape[0]} features, operands {best.performer_dtype}, q/k {q.dtype}, "
                  f"precision {best.precision}")
            for label, vv in (("bf16", vals.bfloat16()),):                   # as SEA passes them (VALS_BF16)
                sweep(f"bidirectional Performer (favor_dense), values {label}", fd, FAVOR,
                      lambda: fd.favor_softmax_dense(q, k, vv, best.proj, operands=best.performer_dtype,
                                                     precision=PRECISIONS[best.precision]), a.rep_ms)
        if "rows" in todo:
            scale = D ** -0.5
            pieces = mod.pieces_for(q)
            sweep(f"rows kernel (pieces={pieces})", sr, ROWS,
                  lambda: sr.sparse_rows_forward(q, k, v, aux["row_ptr"], aux["col"], scale, pieces=pieces),
                  a.rep_ms)
        if "interp" in todo:
            caps = selection_caps(mod.mode, B=1, H=H, T=T, K=mod.K, k=mod.k, causal=True)
            sweep("CSR columns", si, INTERP,
                  lambda: si.csr_columns_cells(aux["mask"], aux["row_ptr"], mod.k, max(int(caps[1]), 1), causal=True),
                  a.rep_ms)
        if "topk" in todo:
            sweep("top-k (triton)", stk, TOPK,
                  lambda: select_topk(aux["a_hat"], mode=mod.mode, k=mod.k, causal=True, backend="triton").float(),
                  a.rep_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
