#!/usr/bin/env bash
# Issue 7, for the next lease (one lent single-GPU machine, bf16, B=1, H=16, D=64): where the host-bound query
# blocks spend their time, before optimising them.
#   1. bidirectional SEA in 16 query blocks at 16k: kernel profile and host profile (cProfile) of one forward
#      -> $OUT/profile-bidir-blocks-16k.txt (the first GPU run took 14 s a call at 64k in 64 blocks, ~75 ms a
#      block-pass: results/nvidia-h200/sea-bidir-blocks/)
#   2. causal SEA fast in 64 query blocks at 64k: the same -> $OUT/profile-causal-blocks-64k.txt (172 ms eager
#      against 18.9 ms replayed as a CUDA graph: results/nvidia-h200/sea-graphs/)
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=performer_dtype=bf16,compile=estimator,estimator_precision=tf32
timeout 200 python3 scripts/profile_sea.py --T 16384 --iters 1 --warmup 1 --host --top 30 \
  --opts $fast,query_blocks=16 >"$OUT/profile-bidir-blocks-16k.txt" 2>&1
echo "bidir blocks exit $?"; grep -E "wall" "$OUT/profile-bidir-blocks-16k.txt"
timeout 150 python3 scripts/profile_sea.py --T 65536 --causal --iters 2 --warmup 2 --host --top 30 \
  --opts $fast,query_blocks=64 >"$OUT/profile-causal-blocks-64k.txt" 2>&1
echo "causal blocks exit $?"; grep -E "wall" "$OUT/profile-causal-blocks-64k.txt"
