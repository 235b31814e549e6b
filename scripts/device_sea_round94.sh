#!/usr/bin/env bash
# Issue 7, seventeenth session, call 6 (results/nvidia-h200/sea-key-pass/call6/): the narrow last feature block's
# features computed by the last full block's programs on the same key and value tiles (KEY_TAIL_MERGE; SEA's m = 266:
# 2 programs per key range instead of 3, the third walking every key tile for 10 features). Its GPU tests, favor_dense
# with and without it at 8k and 64k (and without it at 768 programs, the merge's program count), SEA's 8k profile both
# ways.
# Predictions (written before the run): the tests pass; the key pass 0.146 -> ~0.11 ms at 8k, 1.03 -> ~0.75 at 64k
# (the tail's programs cost about a full block's); SEA's 8k kernels 0.98 -> ~0.95 ms.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 100 python3 -m pytest -q -m gpu tests/test_favor_dense.py -p no:cacheprovider -rA > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "rel L2|^FAILED|^ERROR|passed|failed" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 14
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for T in 8192 65536; do
  timeout 60 python3 scripts/tune_sea_kernels.py --T $T --opts $o --only favor --rep-ms 50 > "$OUT/tune-favor-$T.txt" 2>&1
  grep -E "^\| |values|error" "$OUT/tune-favor-$T.txt" | grep -v -- "---" | cut -c1-100
done
for v in merge split; do
  case $v in merge) extra="";; split) extra="--set kernels.favor_dense.KEY_TAIL_MERGE=False";; esac
  timeout 45 python3 scripts/profile_sea.py --T 8192 --opts $o,shared_keys=64 --top 40 $extra \
    > "$OUT/profile-8192-$v.txt" 2>&1
  echo "T=8192 $v: $(grep -m1 'kernels sum' "$OUT/profile-8192-$v.txt")"
  grep -E "_key_pf_kernel|_combine_kernel|_query_kernel" "$OUT/profile-8192-$v.txt" | cut -c1-90
done
