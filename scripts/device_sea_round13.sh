#!/usr/bin/env bash
# Issue 7, sixth session: the fused front at precision tf32 with explicit pipeline stages (STAGES_TF32; the default
# staging ran out of shared memory at 4 chunks per group): its GPU test, and its launch constants timed side by side
# at 64k and 256k causal (scripts/tune_sea_kernels.py --only front) -> $OUT/gpu-tests.txt, $OUT/tune-front-*.txt
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 100 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_favor_encoder.py \
  tests/test_sea_estimator_precision.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "tf32|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 8
for T in 65536 262144; do
  timeout 110 python3 scripts/tune_sea_kernels.py --T $T --only front >"$OUT/tune-front-$((T / 1024))k.txt" 2>&1
  echo "tune $T exit $?"; grep "^|" "$OUT/tune-front-$((T / 1024))k.txt"
done
