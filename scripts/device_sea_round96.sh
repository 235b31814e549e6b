#!/usr/bin/env bash
# Issue 7, eighteenth session, call 2 (results/nvidia-h200/sea-decoder-ends/call2/): call 1 measured the fused head
# at 0.218 ms (8k) against the 0.143 ms it replaces and the tail kernel at 0.029 ms (predicted ~0.01; 128 programs at
# 8k). Now the head reads its row weight as a bf16 [2d, 2K] transpose made once per call (call 1 loaded the fp32
# weight and rounded it in every program: 32K values of registers), and the tail may split heads over programs
# (HEAD_GROUPS). Its GPU test (the bound now allows one-step z differences), a sweep of both kernels' constants at 8k
# and 64k against what they replace, then SEA's profile at 8k / 64k with the 8k sweep's best constants, and without
# the head (tail only).
# Predictions (written before the run): head ~0.10 ms at 8k (~0.7x the 0.143 it replaces), tail <= 0.015 ms with
# 4 head groups; SEA 8k kernels 0.907 (tail only, call 1) -> ~0.87 ms with the head.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 90 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py -p no:cacheprovider -rA \
  > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 6
for T in 8192 65536; do
  timeout 120 python3 scripts/tune_bidir_ends.py --T $T > "$OUT/tune-ends-$T.txt" 2>&1
  grep -E "^\| |^BEST|rror" "$OUT/tune-ends-$T.txt" | grep -v -- "---" | cut -c1-110
done
best=$(grep -m1 "^BEST" "$OUT/tune-ends-8192.txt" | cut -c6-)
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
E=methods.sea.estimator
for run in 8192:best 8192:tail 65536:best 65536:tail; do
  T=${run%%:*}; v=${run##*:}
  case $v in
    best) extra=($best);;
    tail) extra=($best --set $E.BIDIR_HEAD=False);;
  esac
  timeout 60 python3 scripts/profile_sea.py --T $T --opts $o --top 40 "${extra[@]}" > "$OUT/profile-$T-$v.txt" 2>&1
  echo "T=$T $v (${extra[*]}): $(grep -m1 'kernels sum' "$OUT/profile-$T-$v.txt" | cut -c1-90)"
  grep -E "_head_kernel|_tail_kernel|_encoder_fwd|nvjet|clone_permute|xmma|triton_poi|triton_red" \
    "$OUT/profile-$T-$v.txt" | cut -c1-100 | head -n 8
done
