#!/usr/bin/env bash
# Issue 7, seventh session, third lease (one lent single-GPU machine, bf16, B=1, H=16, D=64, bidirectional):
#   1. GPU test of the radix-select top-k (kernels/sea_topk_global.py) against the torch.topk path at 64k size
#      -> $OUT/gpu-tests-topk-global.txt
#   2. SEA fast with topk_backend torch (auto today) and triton (the radix select), key pass on 2 warps in both,
#      beside cuDNN: eager at 8k / 64k / 256k -> $OUT/bidir/, CUDA-graph replay at 8k / 16k / 64k -> $OUT/bidir-graphs/
#   3. kernel profile of the whole bidirectional forward at 64k with the radix select -> $OUT/profile-bidir-64k.txt
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_topk_global.py >"$OUT/gpu-tests-topk-global.txt" 2>&1
echo "gpu tests exit $?"; grep -E "ms|passed|failed|Error" "$OUT/gpu-tests-topk-global.txt" | tail -n 12
fast=sea:performer_dtype=bf16:compile=estimator:estimator_precision=tf32
bash scripts/device_sweep.sh bidir 150 --device cuda \
  --methods sdpa:backend=cudnn,$fast:topk_backend=triton,$fast \
  --method-args sea.max_len=262144 --seq-lens 8192,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --bidirectional --mode fwd --rep-ms 200 --timeout 240
bash scripts/device_sweep.sh bidir-graphs 110 --device cuda --cuda-graph \
  --methods sdpa:backend=cudnn,$fast:topk_backend=triton,$fast \
  --method-args sea.max_len=65536 --seq-lens 8192,16384,65536 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --bidirectional --mode fwd --rep-ms 100 --timeout 200
timeout 80 python3 scripts/profile_sea.py --T 65536 --iters 5 --warmup 2 --top 30 \
  --opts performer_dtype=bf16,compile=estimator,estimator_precision=tf32,topk_backend=triton \
  >"$OUT/profile-bidir-64k.txt" 2>&1
echo "bidir profile exit $?"; grep -E "wall" "$OUT/profile-bidir-64k.txt"; sed -n '/ms\/fwd/,+12p' "$OUT/profile-bidir-64k.txt" | cut -c1-110
