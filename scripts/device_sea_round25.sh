#!/usr/bin/env bash
# Issue 7, seventh session, last lease: the longest bidirectional T that SEA in 64 query blocks fits on the card
# (scripts/fit_probe.py, T doubling from 1M; bf16, B=1, H=16, D=64; SDPA-flash's bidirectional fit is in
# results/nvidia-h200/sea-vs-dense-2/: 1M ran, the next doubling not tried) -> $OUT/fit-bidir-blocks.jsonl
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 170 python3 scripts/fit_probe.py \
  --methods sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:query_blocks=64 \
  --start 1048576 --stop 16777216 --max-sec 30 --out "$OUT/fit-bidir-blocks.jsonl" 2>&1 | tail -n 15
echo "fit exit $?"
