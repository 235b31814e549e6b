#!/usr/bin/env bash
# Issue 7, sixteenth session, call 6 (results/nvidia-h200/sea-vs-dense-6/call6/): every GPU test at this session's
# code, then call 5's table command again (same-run ratios twice, for their spread).
# Predictions (written before the run): the GPU tests pass; the ratios within ~5 % of call 5's (2.01x / 0.813x /
# 0.180x / 0.041x at 8k / 16k / 64k / 256k).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 330 python3 -m pytest -q -m gpu tests -p no:cacheprovider 2>&1 | tail -n 4 | tee "$OUT/gpu-tests.txt"
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh table2 "${1:-200}" --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g:shared_keys=64:cuda_graph=16384 \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 2
python3 scripts/ratio_table.py "$OUT/table2/rows.jsonl"
