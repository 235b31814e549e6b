#!/usr/bin/env bash
# Issue 7, twelfth session, call 5: launch constants at 16k causal, where the replayed forward now stands at 1.28x
# cuDNN (1.51 ms of kernels; the rows kernel 0.515, the front 0.30, CSR columns 0.18, top-k 0.08), all tuned at 64k so
# far: scripts/tune_sea_kernels.py at T=16384 (rows, CSR columns, top-k, front) and the rows kernel's pieces=1 warps
# at 65536 -> $OUT/tune-16k.txt, $OUT/tune-64k-rows.txt. Prediction: within +-5 % of the baselines except the rows
# kernel, where 16k's 38 entries a row (15 at 64k) may favour 128-entry steps (-10 % +- 10 %).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
timeout 280 python3 scripts/tune_sea_kernels.py --T 16384 --opts "$fast" --only rows,interp,topk,front --rep-ms 100 \
  >"$OUT/tune-16k.txt" 2>&1; echo "tune 16k exit $?"
timeout 150 python3 scripts/tune_sea_kernels.py --T 65536 --opts "$fast" --only rows --rep-ms 100 \
  >"$OUT/tune-64k-rows.txt" 2>&1; echo "tune 64k exit $?"
grep -E "^\| |^[a-zA-Z]" "$OUT/tune-16k.txt" | cut -c1-90 | head -n 60
grep -E "^\| " "$OUT/tune-64k-rows.txt" | cut -c1-90
