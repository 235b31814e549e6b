#!/usr/bin/env bash
# Issue 7, twenty-sixth session, call 8 (results/nvidia-h200/sea-presets/call8/): the one-command table of call 4
# again at the session's final code (call 7's joined block outputs; the bidirectional head's weights cached as a
# dict entry), for the README's headline; the GPU tests of the files this session touched.
# Predictions (before the run): tests pass; within 3 % of call 4 except preset=lean, faster by ~0.03-0.045 ms causal
# (16k ~0.93x cuDNN) and ~0.01 ms bidirectional (call 7); fast unchanged; memory as in call 4.
set -u
export PYTHONUNBUFFERED=1
timeout 170 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py tests/test_sea_estimator_rows.py \
  tests/test_sea_shared.py tests/test_sea_query_blocks.py -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 6
bash scripts/device_sweep.sh table 300 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --cuda-graph --methods sdpa:backend=cudnn,sdpa:backend=flash,sea:preset=fast,sea:preset=lean \
  --seq-lens 8192,16384,65536,262144 --both-directions --mode fwd --rep-ms 50 --timeout 120 | grep -E "exit|rows$"
