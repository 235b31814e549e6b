#!/usr/bin/env bash
# Issue 7, second round of levers, one call on a lent single-GPU machine (causal, bf16, B=1, H=16, D=64):
#   1. GPU tests of the fused causal decoder and the blocked interpolation kernel -> $OUT/gpu-tests.txt
#   2. one harness sweep at T = 16k and 64k beside cuDNN and SDPA-flash: the best measured SEA configuration so far
#      (bf16 Performer, fused encoder, compiled estimator) alone, + the blocked interpolation kernel, + the fused
#      decoder kernel, + query blocks (32 blocks: memory) -> $OUT/sea-levers2/{meta.json,rows.jsonl}
#   3. kernel profile of the fastest-looking variant at 64k -> $OUT/profile-*.txt
#   bash scripts/device_sea_levers2.sh [SECONDS for the sweep, default 300]
# Run with HARNESS_GIT_COMMIT=<commit> so the run directory names the tree.
set -u
secs=${1:-300}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_sea_decoder.py tests/test_sea_interp_kernel.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; tail -n 15 "$OUT/gpu-tests.txt"
best=sea:performer_dtype=bf16:encoder_backend=triton:compile=estimator
bash scripts/device_sweep.sh sea-levers2 "$secs" --device cuda \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$best,$best:interp_backend=triton,$best:decoder_backend=triton,$best:query_blocks=32 \
  --method-args sea.max_len=262144 --seq-lens 16384,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 \
  --causal --mode fwd --rep-ms 20 --timeout 240
opts=performer_dtype=bf16,encoder_backend=triton,compile=estimator,interp_backend=triton,decoder_backend=triton
timeout 90 python3 scripts/profile_sea.py --T 65536 --causal --opts "$opts" >"$OUT/profile-causal-all.txt" 2>&1
echo "profile exit $?"; grep -v -i warn "$OUT/profile-causal-all.txt" | head -n 22
