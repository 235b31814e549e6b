#!/usr/bin/env bash
# Issue 7, seventh session: the SEA-vs-dense table at this session's defaults (one call on a lent single-GPU
# machine, bf16, B=1, H=16, D=64), one harness command: cuDNN, SDPA-flash, SEA defaults, SEA fast (bf16 Performer
# operands, compiled estimator, estimator_precision=tf32), SEA fast in 64 query blocks (both directions now), SEA
# fast with the decoder under bf16 autocast (the bidirectional configuration); T = 8k .. 256k, both directions,
# forward -> $OUT/table/; then kernel profiles of the bidirectional configuration at 64k -> $OUT/profile-bidir-64k.txt
#   bash scripts/device_sea_round23.sh [SECONDS for the table, default 420]
# Run with HARNESS_GIT_COMMIT=<commit> so the run directory names the tree.
set -u
secs=${1:-420}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=sea:performer_dtype=bf16:compile=estimator:estimator_precision=tf32
bash scripts/device_sweep.sh table "$secs" --device cuda \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,sea,$fast,$fast:query_blocks=64,$fast:estimator_dtype=bf16 \
  --method-args sea.max_len=262144 --seq-lens 8192,16384,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --both-directions --mode fwd --rep-ms 20 --timeout 240
timeout 45 python3 scripts/profile_sea.py --T 65536 --iters 5 --warmup 2 --top 30 \
  --opts performer_dtype=bf16,compile=estimator,estimator_precision=tf32,estimator_dtype=bf16 \
  >"$OUT/profile-bidir-64k.txt" 2>&1
echo "bidir profile exit $?"; grep -E "wall" "$OUT/profile-bidir-64k.txt"
