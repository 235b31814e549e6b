#!/usr/bin/env bash
# Issue 7, the closing lease's follow-up (one call on a lent single-GPU machine, bf16, B=1, H=16, D=64):
#   1. the fused causal Performer + encoder kernel's GPU test, every error printed -> $OUT/gpu-tests-fe.txt
#   2. SEA fast + fused in 64 query blocks (compiled estimator; it hit dynamo's recompile limit in round 7) beside
#      cuDNN and SDPA-flash, causal, T = 8k .. 256k -> $OUT/blocks/
#   3. the linear-attention kernel's GPU tests (the blocked scan) -> $OUT/gpu-tests-la.txt
# Run with HARNESS_GIT_COMMIT=<commit> so the run directory names the tree.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 70 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_favor_encoder.py >"$OUT/gpu-tests-fe.txt" 2>&1
echo "fused kernel gpu tests exit $?"; grep -E "err|passed|failed|Error" "$OUT/gpu-tests-fe.txt" | tail -n 14
bash scripts/device_sweep.sh blocks "${1:-200}" --device cuda \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,sea:performer_dtype=bf16:compile=estimator:performer_backend=fused:query_blocks=64 \
  --method-args sea.max_len=262144 --seq-lens 8192,16384,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --causal --mode fwd --rep-ms 20 --timeout 200
timeout 120 python3 -m pytest -q -rA --tb=short -m gpu tests/test_kernel_linear_attention.py >"$OUT/gpu-tests-la.txt" 2>&1
echo "linear attention gpu tests exit $?"; grep -E "passed|failed|Error" "$OUT/gpu-tests-la.txt" | tail -n 8
