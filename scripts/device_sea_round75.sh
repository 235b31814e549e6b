#!/usr/bin/env bash
# Issue 7, fourteenth session, call 6 (results/nvidia-h200/sea-flex-blocks/call6/): the key-blocks row at 64k read
# 0.159x cuDNN in call 4 and 0.182x in call 5 (the profile's CUDA-event wall 3.02 ms there, against the table's
# 3.41 ms); the same causal rows again, twice in one call, with 4x the timing budget (rep-ms 200).
# Predictions (written before the run): strided ~0.167x and key blocks ~0.16x at 64k in both runs, 16k 0.87x / 0.79x.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
m=sdpa:backend=cudnn,$g:shared_keys=64:cuda_graph=16384,$g:shared_keys=64:shared_span=blocks:cuda_graph=16384
for run in a b; do
  bash scripts/device_sweep.sh causal-$run 150 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
    --head-dim 64 --dtype bf16 --methods $m --seq-lens 16384,65536 --causal --mode fwd --rep-ms 200 \
    --timeout 100 | tail -n 1
  python3 scripts/ratio_table.py "$OUT/causal-$run/rows.jsonl"
done
