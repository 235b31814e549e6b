#!/usr/bin/env bash
# Issue 7, training step, after round38 (one lent single-GPU machine, bf16, B=1, H=16, D=64, causal, SEA fast +
# compile; the session's last device minutes): the key-major lists' entry keys by one Triton kernel
# (`_entry_keys_kernel` in place of repeat_interleave / divisions / where: ~0.45 ms at 32k) and delta = rowsum(o dout)
# inside the row kernel's dq pass (the torch product and sum: ~0.2 ms). Prediction: the 32k step 14.8 -> 14.2 ms
# +-0.3 (kernels 14.5 -> ~13.9).
#   1. GPU tests of the sparse backward (gradients against float64 on CUDA) -> $OUT/gpu-tests.txt
#   2. the fwd+bwd table (SDPA-flash, cuDNN, SEA defaults, SEA fast + compile) -> $OUT/fwdbwd/
#   3. profile_sea --backward at 32k -> $OUT/profile-new.txt
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 60 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_sparse_rows_bwd.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E " ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 4
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh fwdbwd 150 --device cuda \
  --methods sdpa:backend=flash,sdpa:backend=cudnn,sea,$f --method-args sea.max_len=65536 \
  --seq-lens 16384,32768,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 \
  --timeout 150
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator
timeout 60 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 --iters 20 \
  >"$OUT/profile-new.txt" 2>&1
echo "profile exit $?"; grep -E "wall" "$OUT/profile-new.txt" | cut -c1-160
