#!/usr/bin/env bash
# Issue 7, for the next lease (one lent single-GPU machine, bf16, B=1, H=16, D=64, causal, SEA fast + compile):
# the key-major backward with its dq pass in the rows kernel's 16-row layout (sparse_backward=keys_rows, written
# after the ninth session's last GPU call: tested under the interpreter, NOT timed).
#   1. GPU tests of kernels/sea_sparse_rows_bwd.py (gradients against the row kernel's on CUDA; times at 8k of every
#      backward, keys_rows included) -> $OUT/gpu-tests.txt
#   2. profile_sea --backward at 32k, BACKWARD keys / keys_rows / keys (A/B/A) -> $OUT/profile-<name>.txt.
#      Prediction: the dq pass 1.77 -> ~1.3 ms (+-0.3; the rows forward runs the same lists in 1.11 ms with two
#      products per step, the dq pass has five: s, dp and a three-piece dq)
#   3. if keys_rows wins: the fwd+bwd table with sparse_backward=keys and =keys_rows in one harness command, then the
#      default (BACKWARD) changed
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_sparse_rows_bwd.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E " ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 4
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator
for v in keys:keys keys_rows:keys_rows keys2:keys; do
  name=${v%%:*}; bwd=${v#*:}
  timeout 150 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 --iters 20 \
    --set kernels.sea_sparse_rows_bwd.BACKWARD=$bwd >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall|_bwd_kernel" "$OUT/profile-$name.txt" | cut -c1-120
done
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh fwdbwd 200 --device cuda \
  --methods sdpa:backend=flash,$f:sparse_backward=keys,$f:sparse_backward=keys_rows \
  --method-args sea.max_len=65536 --seq-lens 16384,32768,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 \
  --causal --mode fwd+bwd --rep-ms 20 --timeout 150
