#!/usr/bin/env bash
# Issue 7, seventeenth session, call 4 (results/nvidia-h200/sea-vs-dense-7/): the GPU tests of the touched files
# (call 3's three failures: fp32 products with 128-key tiles, now on 64-key tiles; the bf16x2 test now compares the
# feature sums z, which no other product touches), then the bidirectional table with the per-feature key pass.
# Predictions (written before the run): the tests pass; SEA / cuDNN bidirectional ~1.85x at 8k (call 3: kernels
# 1.083 -> 0.982 ms), ~0.76x at 16k, ~0.167x at 64k (6.61 -> 6.13 ms), ~0.039x at 256k.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 170 python3 -m pytest -q -m gpu tests/test_favor_dense.py tests/test_sea_bidir_front.py \
  tests/test_sea_estimator_precision.py -p no:cacheprovider -rA > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "rel L2|^FAILED|^ERROR|passed|failed" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 24
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh table "${1:-220}" --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g:shared_keys=64:cuda_graph=16384 \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 2
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
