#!/usr/bin/env bash
# Issue 7, twenty-fifth session, call 7 (results/nvidia-h200/sea-rows/call7/): issue 7's forward table in one harness
# command, both directions, every method replayed by the harness: cuDNN, SDPA-flash, the causal latency configuration
# (key blocks, F) whole and with its estimator in 8 blocks, the bidirectional one (G, nbf=8) whole and in 8 blocks
# (G's bidirectional-only options make its causal cells `unsupported`, recorded as such). A repeat of calls 2 and 4
# on a fresh machine, after the head kernel's int64 index.
# Predictions (before the run): within ~3 % of calls 2, 4 and 6: causal F 8 blocks 0.92x / 0.17x / 0.036x cuDNN at
# 16k / 64k / 256k with 1.17x SDPA-flash's memory; bidirectional G 8 blocks 1.45-1.5x / 0.59x / 0.095x / 0.020x with
# 1.47x; G whole 8k 0.86-0.88x; F whole causal 16k 0.66x.
set -u
export PYTHONUNBUFFERED=1
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1:shared_keys=64
g=$f:encoder_operands=bf16:identity_values=kernel:nbf=8
f=$f:shared_span=blocks
bash scripts/device_sweep.sh table 540 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --cuda-graph \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$f,$f:query_blocks=8,$g,$g:query_blocks=8 \
  --seq-lens 8192,16384,65536,262144 --both-directions --mode fwd --rep-ms 50 --timeout 120 | tail -n 8
