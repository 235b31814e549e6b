#!/usr/bin/env bash
# The fused sparse-attention + mix kernel (sea.mix_backend=triton, kernels/sea_sparse_mix.py), written but not yet
# run on a GPU, in one call on a lent single-GPU machine (bf16, B=1, H=16, D=64):
#   1. its GPU test (real size, prints fused vs two-step ms) -> $OUT/gpu-tests.txt
#   2. harness sweep beside cuDNN: SEA fast (bf16 Performer + compiled estimator) with and without the fused mix,
#      T = 8k, 16k, 64k, 256k, both directions, stage profile -> $OUT/sea-mix/{meta.json,rows.jsonl}
#   3. kernel-by-kernel profile of SEA fast at 16k causal (where its fixed cost shows) -> $OUT/profile-16k.txt
#   bash scripts/device_sea_mix.sh [SECONDS for the sweep, default 300]
# Run with HARNESS_GIT_COMMIT=<commit> so the run directory names the tree.
set -u
secs=${1:-300}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -s -m gpu tests/test_sea_sparse_mix.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; tail -n 15 "$OUT/gpu-tests.txt"
fast=sea:performer_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh sea-mix "$secs" --device cuda --methods sdpa:backend=cudnn,$fast,$fast:mix_backend=triton \
  --method-args sea.max_len=262144 --seq-lens 8192,16384,65536,262144 --batch 1 --heads 16 --head-dim 64 --dtype bf16 \
  --both-directions --mode fwd --rep-ms 20 --timeout 240
python3 scripts/profile_sea.py --T 16384 --causal --opts performer_dtype=bf16,compile=estimator --top 40 \
  >"$OUT/profile-16k.txt" 2>&1
echo "profile exit $?"
