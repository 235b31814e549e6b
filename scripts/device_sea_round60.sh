#!/usr/bin/env bash
# Issue 7, twelfth session, call 7: the causal forward table at the session's final kernels (the rows forward one
# (b, h) at a time since call 6): cuDNN, SEA fast eager and with cuda_graph=32768, 8k-64k, one harness command ->
# $OUT/fwd/. Prediction: as call 4's causal rows less ~0.03 ms (16k replayed ~1.26x, 64k ~0.215x).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwd 170 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,$g,$g:cuda_graph=32768 --seq-lens 8192,16384,32768,65536 \
  --causal --mode fwd --rep-ms 50 --timeout 120 | tail -n 2
python3 scripts/ratio_table.py "$OUT/fwd/rows.jsonl"
