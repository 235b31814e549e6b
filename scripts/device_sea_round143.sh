#!/usr/bin/env bash
# Issue 7, twenty-sixth session, call 5 (results/nvidia-h200/sea-presets/call5/): the forward+backward goal (causal
# 32k, SEA / SDPA-flash <= 0.5), last measured in the fifteenth session (0.438x, sea-floor/call2/), re-run at this
# session's code: SEA's fast options without shared keys (the configuration measured then) and preset=fast (shared
# keys on key blocks: with gradients the selection's per-row lists; not measured before), with cuDNN and SDPA-flash.
# Also the GPU tests of the presets' file (CPU tests; a check that the CUDA session runs them the same way).
# Predictions (before the run): FAST 0.44-0.49x SDPA-flash (code since then changed the forward, not the backward);
# preset=fast unknown, likely slower than FAST (per-row lists of twice a row's cells); memory ~5x.
set -u
export PYTHONUNBUFFERED=1
timeout 120 python3 -m pytest -q tests/test_sea_preset.py -p no:cacheprovider > "$OUT/preset-tests.txt" 2>&1
tail -n 1 "$OUT/preset-tests.txt"
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwdbwd 400 --device cuda --batch 1 --heads 16 --head-dim 64 --dtype bf16 \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$f,sea:preset=fast --seq-lens 32768 --causal --mode fwd+bwd \
  --rep-ms 100 --timeout 200 | tail -n 6
