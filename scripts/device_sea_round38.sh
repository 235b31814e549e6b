#!/usr/bin/env bash
# Issue 7, training step, last call of the ninth session (one lent single-GPU machine, bf16, B=1, H=16, D=64, causal,
# SEA fast + compile): the key-major sparse backward as the default (dq, dk, dv stored in the inputs' dtypes) and
# the linear-attention normaliser's gradient in Triton (kernels/linear_attention_den_grad.py).
#   1. GPU tests of the normaliser kernel and the sparse backward -> $OUT/gpu-tests.txt
#   2. profile_sea --backward at 32k: new (with --ops) / DEN_GRAD_KERNEL=False / new again -> $OUT/profile-<name>.txt.
#      Prediction: the normaliser kernel -0.8 ms +-0.3 of kernels (~25 small kernels -> 3); the stored gradients
#      -0.15 ms against call11's keys run (15.42 ms)
#   3. the fwd+bwd table (SDPA-flash, cuDNN, SEA defaults, SEA fast + compile) -> $OUT/fwdbwd/
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_linear_attention_den_grad.py \
  tests/test_sea_sparse_rows_bwd.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E " ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 6
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator
for v in new:True torch:False new2:True; do
  name=${v%%:*}; val=${v#*:}; extra=()
  [ "$name" = new ] && extra=(--ops 70)
  timeout 150 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 --iters 20 \
    --set kernels.linear_attention.DEN_GRAD_KERNEL=$val "${extra[@]}" >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall" "$OUT/profile-$name.txt" | cut -c1-160
done
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh fwdbwd 200 --device cuda \
  --methods sdpa:backend=flash,sdpa:backend=cudnn,sea,$f --method-args sea.max_len=65536 \
  --seq-lens 16384,32768,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 \
  --timeout 150
