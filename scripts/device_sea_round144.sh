#!/usr/bin/env bash
# Issue 7, twenty-sixth session, call 6 (results/nvidia-h200/sea-presets/call6/): where preset=lean's causal blocks
# spend their time at 16k (0.956x cuDNN in call 4, the goal's margin 4 %) and 8k: kernel tables with the launch sites
# (profile_sea.py --sites), the whole call beside them. No change measured here; it names the next cheap launches.
# Predictions (before the run): per-block weight casts or copies like the bidirectional head's (call 2) among the
# sites, ~0.02-0.05 ms at 16k in 8 blocks.
set -u
export PYTHONUNBUFFERED=1
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,shared_span=blocks,nbf=8
for T in 16384 8192; do
  for qb in 8 0; do
    f=$OUT/profile-causal-$T-qb$qb.txt
    timeout 100 python3 scripts/profile_sea.py --T $T --causal --opts $o,query_blocks=$qb --top 16 --iters 20 \
      --sites $([ $qb = 8 ] && echo 14 || echo 0) > "$f" 2>&1
    echo "== causal T=$T qb=$qb"; grep -E "kernels sum|^ +[0-9]" "$f" | head -n 32 | cut -c1-170
  done
done
