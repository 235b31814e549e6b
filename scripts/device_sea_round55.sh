#!/usr/bin/env bash
# Issue 7, twelfth session, call 2: the forward table with SEA's CUDA-graph replay capped at 32k (sea.cuda_graph=32768:
# longer calls run eagerly, where call 1 measured the graph slower), its gate now on the replayed (second) call's
# output, both directions, 8k-64k, one harness command -> $OUT/fwd/; per-kernel profiles of the short-T forward
# (16k causal, 8k bidirectional) that the graph leaves -> $OUT/profile-*.txt.
# Predictions: the graph rows as call 1's within ~5 % (causal 16k ~1.29x, bidirectional 8k ~3.4x); 64k = the eager
# row; error columns equal to the eager rows' (the replay runs the same kernels).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwd 330 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,$f,$f:cuda_graph=32768 --seq-lens 8192,16384,32768,65536 \
  --both-directions --mode fwd --rep-ms 50 --timeout 150 | tail -n 4
python3 scripts/ratio_table.py "$OUT/fwd/rows.jsonl"
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
timeout 100 python3 scripts/profile_sea.py --T 16384 --causal --opts "$fast" --top 40 --iters 20 \
  >"$OUT/profile-16k-causal.txt" 2>&1; echo "profile 16k exit $?"
timeout 100 python3 scripts/profile_sea.py --T 8192 --opts "$fast" --top 40 --iters 20 \
  >"$OUT/profile-8k-bidir.txt" 2>&1; echo "profile 8k bidir exit $?"
grep -E "wall" "$OUT"/profile-*.txt | cut -c1-160
