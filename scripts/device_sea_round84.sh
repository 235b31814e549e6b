#!/usr/bin/env bash
# Issue 7, sixteenth session, call 2 (results/nvidia-h200/sea-fewer-launches/call2/): call 1's changes after two
# fixes, plus a fourth, against the same code with all four switched off (one process per profile):
#   kernels/favor_dense.py KEY_TAIL, COMBINE (now one program per 8 features, each reading a feature's splits as
#   one [splits, Dv] tile, and writing per-block sums of KV and z that the query pass adds once: call 1's query pass,
#   summing each feature step's block, took 0.182 ms at 8k against 0.091 before); methods/sea/layer.py
#   POOLED_SCORES; methods/sea/estimator.py IDENTITY_IN_KERNEL (the identity value columns made in the key pass: no
#   fp32 [B, H, T, 2d] concatenation, 0.021 ms at 8k and 0.219 at 64k in call 1).
# Predictions (written before the run): query pass back to ~0.09 ms (8k) / ~0.67 (64k); combine <= 0.03 ms at both;
# the cat kernel gone; key pass at 8k ~0.17-0.19 (it reads half the value bytes); 8k kernels ~1.05 ms against ~1.17
# with everything off, 64k ~6.4 against ~6.9 ms; GPU tests pass.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_favor_dense.py tests/test_sea_shared.py -p no:cacheprovider 2>&1 \
  | tail -n 3 | tee "$OUT/gpu-tests.txt"
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
off="--set kernels.favor_dense.KEY_TAIL=False --set kernels.favor_dense.COMBINE=torch"
off="$off --set methods.sea.layer.POOLED_SCORES=False --set methods.sea.estimator.IDENTITY_IN_KERNEL=False"
for T in 8192 65536; do
  for v in new old; do
    extra=""; [ $v = old ] && extra=$off
    timeout 150 python3 scripts/profile_sea.py --T $T --opts $o --top 40 $extra > "$OUT/profile-$T-$v.txt" 2>&1
    echo "T=$T $v: $(grep -m1 'kernels sum' "$OUT/profile-$T-$v.txt")"
    grep -E "_key_kernel|_combine_kernel|_query_kernel|gemv|softmax|cat_0" "$OUT/profile-$T-$v.txt" | cut -c1-110
  done
done
