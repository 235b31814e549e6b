#!/usr/bin/env bash
# Issue 7, tenth session, last minutes of the lease: per-operation profiles of the 64k forward in both directions
# (SEA fast + compile + sparse_pieces=1), the data for the next session's forward levers (the causal goal needs
# 4.83 -> ~3.8 ms of kernels, the bidirectional one 11.6 -> ~7.5 ms) -> $OUT/profile-64k-{causal,bidir}-ops.txt
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for v in causal:--causal bidir:; do
  name=${v%%:*}; flag=${v#*:}
  timeout 80 python3 scripts/profile_sea.py --T 65536 $flag --opts "$fast" --top 40 --iters 20 --ops 50 \
    >"$OUT/profile-64k-$name-ops.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall" "$OUT/profile-64k-$name-ops.txt" | cut -c1-120
done
