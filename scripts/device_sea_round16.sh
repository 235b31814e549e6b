#!/usr/bin/env bash
# Issue 7, sixth session: the causal decoder in three plain kernels (kernels/sea_decoder_v2.py, decoder_backend=split)
#   1. its GPU test: against the module and the fused kernel, and both timed at 64k and 256k -> $OUT/gpu-tests.txt
#   2. SEA fast with each decoder beside cuDNN, causal 16k / 64k / 256k -> $OUT/decoder/
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_decoder_v2.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "decoder T=|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 8
fast=sea:performer_dtype=bf16:compile=estimator:estimator_precision=tf32
bash scripts/device_sweep.sh decoder 130 --device cuda \
  --methods sdpa:backend=cudnn,$fast,$fast:decoder_backend=split \
  --method-args sea.max_len=262144 --seq-lens 16384,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --causal --mode fwd --rep-ms 20 --timeout 240
