#!/usr/bin/env bash
# Issue 7, eighth session, first lease (one lent single-GPU machine, bf16, B=1, H=16, D=64):
#   1. GPU tests of the radix select (module's own tiles) and the rows kernel -> $OUT/gpu-tests.txt
#   2. where SEA's forward+backward spends its time at 32k causal (the training goal, 2.10x SDPA-flash, never
#      profiled kernel by kernel): scripts/profile_sea.py --backward for SEA's defaults, the fastest forward options,
#      and the same with scaler_input=detached -> $OUT/profile-fwdbwd-*.txt
#   3. the fwd+bwd cell at 32k causal by the harness (same-run ratios to SDPA-flash / cuDNN, stages_bwd_ms)
#      -> $OUT/fwdbwd/
#   4. bidirectional SEA in 64 query blocks with the CSR lists by the interpolation kernels (interp_backend=auto)
#      against the tensor ops (interp_backend=torch) at 64k and 256k -> $OUT/bidir-blocks/ (prediction: memory
#      unchanged, time -5..-20 %)
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_topk_global.py tests/test_sea_sparse_rows.py \
  >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 8
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16
for v in default:- fast:$fast detached:$fast,scaler_input=detached; do
  name=${v%%:*}; opts=${v#*:}; [ "$opts" = "-" ] && opts=""
  timeout 90 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$opts" --top 30 \
    >"$OUT/profile-fwdbwd-$name.txt" 2>&1
  echo "profile $name exit $?"; head -n 14 "$OUT/profile-fwdbwd-$name.txt"
done
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16
bash scripts/device_sweep.sh fwdbwd 120 --device cuda \
  --methods sdpa:backend=flash,sdpa:backend=cudnn,sea,$f,$f:scaler_input=detached \
  --seq-lens 32768 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 --timeout 60
bash scripts/device_sweep.sh bidir-blocks 150 --device cuda \
  --methods sdpa:backend=flash,$f:query_blocks=64,$f:query_blocks=64:interp_backend=torch \
  --method-args sea.max_len=262144 --seq-lens 65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --bidirectional --mode fwd --rep-ms 20 --timeout 120
