#!/usr/bin/env bash
# Issue 7, seventeenth session, call 5 (results/nvidia-h200/sea-vs-dense-7/call5/): call 4's table command again
# (same-run ratios twice, for their spread).
# Predictions (written before the run): within ~5 % of call 4 (1.865x / 0.782x / 0.167x / 0.038x against cuDNN).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh table "${1:-220}" --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g:shared_keys=64:cuda_graph=16384 \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 2
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
