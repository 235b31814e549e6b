#!/usr/bin/env bash
# Issue 7, twenty-sixth session, call 4 (results/nvidia-h200/sea-presets/call4/): issue 7's forward table in one harness
# command, both directions, every method replayed by the harness, SEA by its presets: fast (the latency
# configuration: in the causal direction sea-rows' F, key blocks on FlexAttention; bidirectionally G, nbf=8) and lean
# (the same with the estimator in 8 blocks of rows), against cuDNN and SDPA-flash, at this session's kernels (calls
# 1-3: the bidirectional blocks 0.858 -> 0.792 ms at 8k).
# Predictions (before the run): causal fast 0.65x / 0.15x / 0.035x cuDNN at 16k / 64k / 256k with 5.0x SDPA-flash's
# memory, lean 0.91x / 0.18x / 0.036x with 1.17x; bidirectional fast 0.87x / 0.39x / 0.083x / 0.019x at 8k / 16k /
# 64k / 256k with 9.8x, lean ~1.36x / 0.55x / 0.094x / 0.020x with 1.47x.
set -u
export PYTHONUNBUFFERED=1
bash scripts/device_sweep.sh table 540 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --cuda-graph --methods sdpa:backend=cudnn,sdpa:backend=flash,sea:preset=fast,sea:preset=lean \
  --seq-lens 8192,16384,65536,262144 --both-directions --mode fwd --rep-ms 50 --timeout 120 | tail -n 8
