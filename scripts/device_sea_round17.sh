#!/usr/bin/env bash
# Issue 7, sixth session: bidirectional SEA in query blocks (methods/sea/bidir_blocks.py) on the GPU for the first
# time: latency, peak memory and error beside cuDNN and SDPA-flash, bidirectional 8k / 64k / 256k -> $OUT/bidir-blocks/
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=sea:performer_dtype=bf16:compile=estimator:estimator_precision=tf32
bash scripts/device_sweep.sh bidir-blocks 240 --device cuda \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$fast:query_blocks=64 \
  --method-args sea.max_len=262144 --seq-lens 8192,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --bidirectional --mode fwd --rep-ms 20 --timeout 150
