#!/usr/bin/env bash
# Issue 7, eighteenth session, call 7 (results/nvidia-h200/sea-decoder-ends/call7/): two small launches fewer in the
# bidirectional forward. conv3's bias left out of the tail's input (one constant per head and row: the softmax over K
# does not see it; inductor had added it in a pass of its own, `to_copy_cat_convolution_3`, 0.012 ms at 8k), switch
# methods.sea.estimator.TAIL_BIAS_FREE; the finite check of q, k, v in one launch (kernels/finite_check.py ONE_LAUNCH;
# three launches took 0.025 ms at 8k). GPU tests of both, then SEA's profile at 8k with both switches on / off, twice,
# and at 64k on.
# Predictions (written before the run): tests pass; 8k kernels 0.870 -> ~0.850 ms (bias pass -0.012, the check
# ~-0.008); 64k 5.29 -> ~5.22 (the bias pass 0.063 ms there).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 100 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py tests/test_finite_check.py \
  -p no:cacheprovider -rA -s > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "^FAILED|^ERROR|^E  |nonfinite flags|passed|failed" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 8
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
for run in 8192:new 8192:old 8192:new2 8192:old2 65536:new; do
  T=${run%%:*}; v=${run##*:}
  case $v in
    new*) extra=();;
    old*) extra=(--set methods.sea.estimator.TAIL_BIAS_FREE=False --set kernels.finite_check.ONE_LAUNCH=False);;
  esac
  timeout 60 python3 scripts/profile_sea.py --T $T --opts $o --top 40 "${extra[@]}" > "$OUT/profile-$T-$v.txt" 2>&1
  echo "T=$T $v: $(grep -m1 'kernels sum' "$OUT/profile-$T-$v.txt" | cut -c1-100)"
  grep -E "_nonfinite|convolution_3|cat_convolution" "$OUT/profile-$T-$v.txt" | cut -c1-100 | head -n 4
done
