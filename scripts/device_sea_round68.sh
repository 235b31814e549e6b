#!/usr/bin/env bash
# Issue 7, thirteenth session, call 8: the causal table again at the session's final code (99675d6), to see the
# spread between runs, plus shared keys without CUDA-graph replay -> $OUT/fwd/.
# Prediction (written before the run): within ~5 % of call 7 (16k 0.86x replayed, 64k 0.168x); shared keys eager at
# 16k ~1.4-1.8x (host-bound: kernels 0.97 ms, ~80 launches).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
s=$g:shared_keys=64:shared_budget=2
bash scripts/device_sweep.sh fwd 280 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,$g:cuda_graph=16384,$s:cuda_graph=16384,$s \
  --seq-lens 8192,16384,32768,65536 --causal --mode fwd --rep-ms 50 --timeout 120 | tail -n 1
python3 scripts/ratio_table.py "$OUT/fwd/rows.jsonl"
