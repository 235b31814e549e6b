#!/usr/bin/env bash
# Issue 7, eighth session: the rows kernel with a backward (kernels/sea_sparse_rows_bwd.py) in SEA's forward+backward.
# 32k causal, bf16, B=1, H=16, D=64.
#   1. GPU tests of the new backward (against the row kernel's, timed at 8k) -> $OUT/gpu-tests.txt
#   2. profile_sea --backward, SEA fast + compile, row kernel (auto) vs rows kernel (backend=triton_rows)
#      -> $OUT/profile-fwdbwd-*.txt (prediction: sparse backward 5.5 -> 2.5-3.5 ms, forward 1.8 -> ~1.0 ms)
#   3. the harness fwd+bwd cells at 16k / 32k / 64k -> $OUT/fwdbwd/
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_sparse_rows_bwd.py tests/test_kernel_linear_attention.py \
  >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 8
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator
for v in row:$fast rows:$fast,backend=triton_rows; do
  name=${v%%:*}; opts=${v#*:}
  timeout 150 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$opts" --top 30 \
    >"$OUT/profile-fwdbwd-$name.txt" 2>&1
  echo "profile $name exit $?"; sed -n 2,12p "$OUT/profile-fwdbwd-$name.txt" | cut -c1-140
done
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh fwdbwd 240 --device cuda \
  --methods sdpa:backend=flash,sdpa:backend=cudnn,$f,$f:backend=triton_rows \
  --seq-lens 16384,32768,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 \
  --timeout 120
