#!/usr/bin/env bash
# Issue 7, tenth session, last lease: the session's fwd+bwd table at its final commit (one harness command; bf16, B=1,
# H=16, D=64, causal): SDPA-flash, SEA fast + compile with sparse_pieces 3 and 1 -> $OUT/fwdbwd/
set -u
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh fwdbwd 200 --device cuda \
  --methods sdpa:backend=flash,$f,$f:sparse_pieces=1 \
  --method-args sea.max_len=65536 --seq-lens 16384,32768,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 \
  --causal --mode fwd+bwd --rep-ms 20 --timeout 150 | tail -n 4
