#!/usr/bin/env bash
# Issue 7, twenty-fourth session, call 7 (results/nvidia-h200/sea-vs-dense-14/): the bidirectional table with SEA's
# nbf option beside the default (sea-vs-dense-13's command, plus nbf=2, 4, 8: m = 133, 66, 33 Performer features at
# d = 64). Call 1 (sea-nbf/call1/): 8k kernels 0.601 / 0.556 / 0.524 ms at nbf 1 / 2 / 4; sea-nbf/call2/: with distilled
# estimators on all-MiniLM-L6, accuracy 0.9665 / 0.9688 / 0.9665 and fidelity 0.274 / 0.273 / 0.274 (nbf 1 / 2 / 4).
# Predictions (before the run): 8k 1.13x cuDNN (nbf=1), ~1.06x (2), ~1.00x (4), ~0.96x (8); 64k 0.106x -> ~0.097x /
# ~0.090x / ~0.086x; errors against exact (Gaussian inputs, untrained estimator) about the same for every nbf.
set -u
export PYTHONUNBUFFERED=1
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
g=$g:shared_keys=64:cuda_graph=16384:encoder_operands=bf16:identity_values=kernel
bash scripts/device_sweep.sh table 400 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g,$g:nbf=2,$g:nbf=4,$g:nbf=8 \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 8
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
