#!/usr/bin/env bash
# Issue 7, sixth session: SEA fast (whole and in 64 query blocks) beside cuDNN and SDPA-flash under CUDA-graph replay
# (harness --cuda-graph: every method captured and replayed alike), causal 16k / 64k / 256k -> $OUT/graphs/
# Shows how much of each time is host overhead (launches, the query-block loop) and whether SEA's forwards capture.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=sea:performer_dtype=bf16:compile=estimator:estimator_precision=tf32
bash scripts/device_sweep.sh graphs 200 --device cuda --cuda-graph \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$fast,$fast:query_blocks=64 \
  --method-args sea.max_len=262144 --seq-lens 16384,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --causal --mode fwd --rep-ms 20 --timeout 240
