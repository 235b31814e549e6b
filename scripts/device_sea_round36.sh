#!/usr/bin/env bash
# Issue 7 (one lent single-GPU machine, bf16, B=1, H=16, D=64): the host side of SEA's training step, 32k causal,
# SEA fast + compile. round35 left 16.7 ms of kernels in a 19.9 ms step (and 18 ms at 16k for ~8 ms of kernels):
# the GPU waits for the host. Two changes, A/B in one call, then the harness's tables.
#   1. GPU tests: the finite check resolved after the work is queued (NaN raises on CUDA, the next call runs),
#      tf32_linear as a custom operator -> $OUT/gpu-tests.txt
#   2. profile_sea --backward at 32k: new / DEFER_FINITE_CHECK=False / TF32_LINEAR_OP=False / new again
#      -> $OUT/profile-<name>.txt. Predictions (wall, kernels unchanged at ~16.7 ms): the deferred check -2 ms +-1
#      (the host no longer waits for the previous step's backward before launching the forward), the operator
#      -0.5 ms +-0.5 (10 compiled graphs -> 4: fewer guards and wrappers forward and backward).
#   3. the fwd+bwd table of round35 -> $OUT/fwdbwd/; the forward table at 8k / 16k / 64k, both directions, cuDNN,
#      SDPA-flash and SEA fast + estimator_dtype=bf16 -> $OUT/fwd/ (the forward gains the deferred check only)
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 200 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_method.py tests/test_sea_precision.py \
  tests/test_sea_compile.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E " ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 6
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator
for v in new:methods.sea.layer.DEFER_FINITE_CHECK=True sync:methods.sea.layer.DEFER_FINITE_CHECK=False \
         fn:methods.sea.precision.TF32_LINEAR_OP=False new2:methods.sea.layer.DEFER_FINITE_CHECK=True; do
  name=${v%%:*}; set=${v#*:}
  timeout 200 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 --iters 20 \
    --set "$set" >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall" "$OUT/profile-$name.txt" | cut -c1-120
done
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh fwdbwd 200 --device cuda \
  --methods sdpa:backend=flash,sdpa:backend=cudnn,sea,$f --method-args sea.max_len=65536 \
  --seq-lens 16384,32768,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 \
  --timeout 150
bash scripts/device_sweep.sh fwd 150 --device cuda \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$f --method-args sea.max_len=65536 \
  --seq-lens 8192,16384,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --both-directions --mode fwd \
  --rep-ms 20 --timeout 150
