#!/usr/bin/env bash
# Issue 7, sixteenth session, call 1 (results/nvidia-h200/sea-fewer-launches/call1/): the bidirectional estimator with
# fewer, narrower launches, against the same code with the three changes switched off (one process per profile):
#   kernels/favor_dense.py KEY_TAIL (the last key-pass feature block 16 wide, not 128: 272 feature columns, not 384)
#   and COMBINE=triton (the partials combined by one kernel, not ~15 torch operations and a batched gemv; the query
#   pass sums KV and z itself); methods/sea/layer.py POOLED_SCORES (the estimator's graph sums A_hat over each 64-row
#   block with the softmax: neither the logits nor A_hat [B, H, T, K] fp32 is written).
# Predictions (written before the run): 8k kernels 1.165 -> ~1.0 ms (key pass 0.21 -> ~0.15, the combine's ~15
# launches and gemv ~0.08 -> ~0.02, the softmax kernel and block-sum reduce ~0.03 less); 64k kernels ~6.85 -> ~6.1
# ms (key pass 1.40 -> ~1.0, ~1.5 GB less written and read around A_hat); the GPU tests pass.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_favor_dense.py tests/test_sea_shared.py -p no:cacheprovider 2>&1 \
  | tail -n 3 | tee "$OUT/gpu-tests.txt"
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
off="--set kernels.favor_dense.KEY_TAIL=False --set kernels.favor_dense.COMBINE=torch"
off="$off --set methods.sea.layer.POOLED_SCORES=False"
for T in 8192 65536; do
  for v in new old; do
    extra=""; [ $v = old ] && extra=$off
    timeout 150 python3 scripts/profile_sea.py --T $T --opts $o --top 40 $extra > "$OUT/profile-$T-$v.txt" 2>&1
    echo "T=$T $v: $(grep -m1 'kernels sum' "$OUT/profile-$T-$v.txt")"
    grep -E "_key_kernel|_combine_kernel|_query_kernel|gemv|softmax" "$OUT/profile-$T-$v.txt" | cut -c1-110
  done
done
