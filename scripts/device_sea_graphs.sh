#!/usr/bin/env bash
# Issue 7, host overhead and the backward, one call on a lent single-GPU machine (bf16, B=1, H=16, D=64, causal):
#   1. sea-graphs: CUDA-graph replays (harness --cuda-graph) of cuDNN, SEA fastest (bf16 Performer + compiled
#      estimator) and SEA in 32 query blocks (eager and compiled), T = 4k .. 256k
#      -> $OUT/sea-graphs/{meta.json,rows.jsonl}
#   2. sea-fwdbwd-compiled: forward+backward at 32k with the compiled estimator
#      beside SDPA-flash and cuDNN, SEA's backward per stage -> $OUT/sea-fwdbwd-compiled/
#   bash scripts/device_sea_graphs.sh [SECONDS for the graph sweep, default 300]
set -u
secs=${1:-300}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=sea:performer_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh sea-graphs "$secs" --device cuda --cuda-graph \
  --methods sdpa:backend=cudnn,$fast,sea:query_blocks=32,$fast:query_blocks=32 \
  --method-args sea.max_len=262144 --seq-lens 4096,16384,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --causal --mode fwd --rep-ms 20 --timeout 240
bash scripts/device_sweep.sh sea-fwdbwd-compiled 100 --device cuda \
  --methods sdpa:backend=flash,sdpa:backend=cudnn,sea:compile=estimator \
  --seq-lens 32768 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 --timeout 150
