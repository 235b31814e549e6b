#!/usr/bin/env bash
# Issue 7, seventeenth session, call 3 (results/nvidia-h200/sea-key-pass/call3/): call 2's best key-pass tiles
# (128 keys, 2 stages) as the defaults, settings around them and the query pass's tiles; the GPU tests with the
# bf16x2 test comparing key summaries (call 2's compared whole outputs, whose error is the query pass's TF32); SEA's
# profile at 8k and 64k, the session's defaults against the per-program pass with fp32 values.
# Predictions (written before the run): the tests pass, bf16x2's key summary >= 4x closer to ieee than TF32's;
# favor_dense at 8k ~0.28 ms (0.39 per-program), 64k ~1.83 (2.46); 16 warps or 256-key tiles within 10 % of the
# defaults; the query pass's variants within 10 %. SEA kernels 8k 1.08 -> ~0.98 ms, 64k ~ -0.5 ms.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 -m pytest -q -m gpu tests/test_favor_dense.py -p no:cacheprovider \
  -rA 2>&1 | grep -E "rel L2|passed|failed|Error" | tail -n 14 | tee "$OUT/gpu-tests.txt"
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for T in 8192 65536; do
  timeout 200 python3 scripts/tune_sea_kernels.py --T $T --opts $o --only favor --rep-ms 50 > "$OUT/tune-favor-$T.txt" 2>&1
  grep -E "^\| |values|error" "$OUT/tune-favor-$T.txt" | grep -v -- "---" | cut -c1-100
done
f=--set
for T in 8192 65536; do
  for v in old new; do
    case $v in old) extra="$f kernels.favor_dense.KEY_FORM=per_program $f methods.sea.estimator.VALS_BF16=False";;
      new) extra="";; esac
    timeout 100 python3 scripts/profile_sea.py --T $T --opts $o,shared_keys=64 --top 40 $extra \
      > "$OUT/profile-$T-$v.txt" 2>&1
    echo "T=$T $v: $(grep -m1 'kernels sum' "$OUT/profile-$T-$v.txt")"
    grep -E "_key_kernel|_key_pf_kernel|_key_sqnorm|_combine_kernel|_query_kernel|direct_copy|cat_0" \
      "$OUT/profile-$T-$v.txt" | cut -c1-90
  done
done
