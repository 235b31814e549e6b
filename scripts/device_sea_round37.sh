#!/usr/bin/env bash
# Issue 7, training step (one lent single-GPU machine, bf16, B=1, H=16, D=64, causal, SEA fast + compile): the
# sparse backward's choice now that the host no longer hides it (round36: 16.7 ms of kernels in a 17.2 ms step).
#   1. GPU tests of kernels/sea_sparse_rows_bwd.py and the layer (the new sparse_backward option)
#      -> $OUT/gpu-tests.txt
#   2. profile_sea --backward at 32k, BACKWARD row / keys / row (A/B/A), with peak memory -> $OUT/profile-<name>.txt.
#      Prediction: keys -1.3 ms +-0.4 of kernels and of wall (round35: kernels 16.71 -> 15.36 ms), memory + the
#      sort's buffers (~0.5-1 GiB at 32k)
#   3. the fwd+bwd table with both backwards in one harness command (sparse_backward=row and =keys) -> $OUT/fwdbwd/
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_sparse_rows_bwd.py tests/test_sea_rows_layer.py \
  >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E " ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 6
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator
for v in row:row keys:keys row2:row; do
  name=${v%%:*}; bwd=${v#*:}
  timeout 150 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 --iters 20 \
    --set kernels.sea_sparse_rows_bwd.BACKWARD=$bwd >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall" "$OUT/profile-$name.txt" | cut -c1-160
done
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh fwdbwd 240 --device cuda \
  --methods sdpa:backend=flash,sdpa:backend=cudnn,$f:sparse_backward=row,$f:sparse_backward=keys \
  --method-args sea.max_len=65536 --seq-lens 16384,32768,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 \
  --causal --mode fwd+bwd --rep-ms 20 --timeout 150
