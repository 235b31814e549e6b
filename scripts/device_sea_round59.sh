#!/usr/bin/env bash
# Issue 7, twelfth session, call 6: call 5's two consistent wins taken -- the CSR columns kernel on 8-row programs
# (kernels/sea_interp.py ROWS_PER_PROGRAM) and the rows forward one (b, h) at a time (kernels/sea_sparse_rows.py
# FORWARD_HEAD_GROUP) -- checked in the layer: GPU tests of both kernels -> $OUT/gpu-tests.txt; A/B profiles of the
# causal forward (SEA fast + compile + pieces=1) at 16k and 64k against 9fd03b4 (.gl/old4) -> $OUT/profile-*.txt.
# Prediction: kernels 16k -0.05 ms (rows -0.027, CSR columns -0.022), 64k -0.06 ms (rows -0.026, CSR -0.034).
set -u
export PYTHONUNBUFFERED=1
new=$PWD
old=$PWD/.gl/old4
timeout 120 env PYTHONPATH=$new python3 -m pytest -q -rA --tb=short -m gpu tests/test_sea_interp_kernel.py \
  tests/test_sea_sparse_rows.py -p no:cacheprovider >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "passed|failed|Error" "$OUT/gpu-tests.txt" | cut -c1-200 | tail -n 4
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for v in "16k-old:$old:16384" "16k-new:$new:16384" "64k-old:$old:65536" "64k-new:$new:65536" "16k-old2:$old:16384"; do
  IFS=: read -r name tree T <<<"$v"
  (cd "$tree" && timeout 70 env PYTHONPATH="$tree" python3 "$tree/scripts/profile_sea.py" --T "$T" --causal \
    --opts "$fast" --top 12 --iters 20) >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall|_rows_fwd|_csr_col" "$OUT/profile-$name.txt" | cut -c1-100 | head -n 3
done
