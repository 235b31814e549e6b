#!/usr/bin/env bash
# Issue 7, eleventh session, last lease (one lent single-GPU machine, bf16, B=1, H=16, D=64):
#   1. GPU tests: the rows kernel (2 warps with pieces=1 now) and the layer on it -> $OUT/gpu-tests.txt
#   2. the forward table, both directions, 8k / 16k / 64k: cuDNN and SEA fast + compile + pieces=1, one harness
#      command as in sea-train/call17 (eager), and the same under CUDA-graph replay -> $OUT/fwd/, $OUT/fwd-graph/
#   3. the fwd+bwd table, causal 16k / 32k / 64k: SDPA-flash and SEA fast + compile + pieces=1 -> $OUT/fwdbwd/
#   4. the 64k causal forward's kernels by operation -> $OUT/profile-64k-causal-ops.txt
# Predictions: 64k causal forward 4.91 -> ~4.28 ms (0.257x -> ~0.225x cuDNN; kernels 4.80 -> ~4.17: the decoder
# head in the front -0.33, conv3 before the widening and A_hat in the compiled graph -0.23, rows forward with 2 warps
# -0.07); 16k kernels 1.74 -> ~1.57 (the wall host-bound as before); bidirectional: A_hat in the graph and the rows
# warps only (~-0.1 ms at 64k); fwd+bwd at 32k unchanged within the spread (0.455x in call19).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_sparse_rows.py tests/test_sea_rows_layer.py \
  >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "passed|failed|Error" "$OUT/gpu-tests.txt" | cut -c1-200 | tail -n 4
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
common="--device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16"
bash scripts/device_sweep.sh fwd 150 $common --methods sdpa:backend=cudnn,$f --seq-lens 8192,16384,65536 \
  --both-directions --mode fwd --rep-ms 50 --timeout 150 | tail -n 3
bash scripts/device_sweep.sh fwd-graph 120 $common --methods sdpa:backend=cudnn,$f --seq-lens 8192,16384,65536 \
  --both-directions --mode fwd --rep-ms 50 --timeout 150 --cuda-graph | tail -n 3
bash scripts/device_sweep.sh fwdbwd 170 $common --methods sdpa:backend=flash,$f --seq-lens 16384,32768,65536 \
  --causal --mode fwd+bwd --rep-ms 20 --timeout 150 | tail -n 3
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
timeout 80 python3 scripts/profile_sea.py --T 65536 --causal --opts "$fast" --top 40 --iters 20 --ops 40 \
  >"$OUT/profile-64k-causal-ops.txt" 2>&1
echo "profile exit $?"; grep -E "wall" "$OUT/profile-64k-causal-ops.txt" | cut -c1-120
python3 -m harness report "$OUT/fwd" --no-plots 2>&1 | tail -n 30
python3 -m harness report "$OUT/fwd-graph" --no-plots 2>&1 | tail -n 30
python3 -m harness report "$OUT/fwdbwd" --no-plots 2>&1 | tail -n 20
