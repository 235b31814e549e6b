#!/usr/bin/env bash
# Issue 7, sixth session, tuning call (one lent single-GPU machine, bf16, B=1, H=16, D=64):
#   1. launch constants of the decoder, fused front and rows kernels timed side by side at 64k causal, the front's
#      also at 256k (scripts/tune_sea_kernels.py) -> $OUT/tune-64k.txt, $OUT/tune-256k.txt
#   2. kernel profiles of SEA fast + fused + tf32: bidirectional 64k (auto front: favor_dense), causal 16k
#      -> $OUT/profile-bidir-64k.txt, $OUT/profile-16k.txt
#   bash scripts/device_sea_round11.sh
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 200 python3 scripts/tune_sea_kernels.py --T 65536 >"$OUT/tune-64k.txt" 2>&1
echo "tune 64k exit $?"; cat "$OUT/tune-64k.txt" | grep -v Warning | tail -n 45
timeout 120 python3 scripts/tune_sea_kernels.py --T 262144 --only front >"$OUT/tune-256k.txt" 2>&1
echo "tune 256k exit $?"; grep "^|" "$OUT/tune-256k.txt"
timeout 60 python3 scripts/profile_sea.py --T 65536 --top 25 \
  --opts performer_dtype=bf16,compile=estimator,estimator_precision=tf32 >"$OUT/profile-bidir-64k.txt" 2>&1
echo "profile bidir exit $?"; grep -E "wall|^ +[0-9]" "$OUT/profile-bidir-64k.txt" | head -n 14
timeout 60 python3 scripts/profile_sea.py --T 16384 --causal --top 25 \
  --opts performer_dtype=bf16,compile=estimator,performer_backend=fused,estimator_precision=tf32 \
  >"$OUT/profile-16k.txt" 2>&1
echo "profile 16k exit $?"; grep -E "wall|^ +[0-9]" "$OUT/profile-16k.txt" | head -n 14
