#!/usr/bin/env bash
# Issue 7, eleventh session, third lease: launch constants of the 64k causal forward's kernels after the decoder head
# moved into the front (kernels 4.24 ms in round 48: front output 1.23, rows 0.96, CSR columns 0.36, top-k 0.23),
# timed side by side in one process with outputs checked against the baseline's (scripts/tune_sea_kernels.py), SEA
# fast + compile + pieces=1 -> $OUT/tune-64k.txt
# Predictions: CSR columns (predicted 0.12 ms when written, measured 0.36): 8-row programs or 1 warp -0.1 ms if the
# small-t blocks' serial steps are the tail; rows kernel with pieces=1 (fewer MMAs a step than when it was tuned):
# 128 entries a step within +-10 %; top-k and front: no variant better than 5 %.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
timeout 400 python3 scripts/tune_sea_kernels.py --T 65536 --opts "$fast" --only interp,rows,topk,front --rep-ms 60 \
  >"$OUT/tune-64k.txt" 2>&1
echo "tune exit $?"; grep -E "^\||^T=|^[a-zA-Z]" "$OUT/tune-64k.txt" | cut -c1-110 | tail -n 60
