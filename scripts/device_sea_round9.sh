#!/usr/bin/env bash
# Issue 7, for the next lease (one call on a lent single-GPU machine, bf16, B=1, H=16, D=64): the two kernels written
# at the end of the fifth session and not yet run on a GPU.
#   1. GPU tests: the row-block sparse forward (kernels/sea_sparse_rows.py), the causal mean + mix kernel
#      (kernels/sea_causal_mix.py; both print old vs new times), the fused front's bf16 state tolerance re-check
#      -> $OUT/gpu-tests.txt
#   2. harness sweep beside cuDNN: SEA fast, + backend=triton_rows, + mix_backend=kernel, + both, causal,
#      T = 16k, 64k, 256k -> $OUT/rows-mix/
#   3. kernel profile of SEA fast with both at 64k causal -> $OUT/profile-64k.txt
#   bash scripts/device_sea_round9.sh [SECONDS for the sweep, default 240]
# Predictions (results/nvidia-h200/sea-speed-notes.md): row kernel 2.6 -> ~0.8 ms at 64k (1.27 -> ~0.5 at 16k);
# mix 1.57 -> ~0.2 ms at 64k, 6.0 -> ~0.7 ms at 256k. If they hold, make them the CUDA defaults (auto).
# Run with HARNESS_GIT_COMMIT=<commit> so the run directory names the tree.
set -u
secs=${1:-240}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 200 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_sparse_rows.py tests/test_sea_causal_mix.py \
  "tests/test_sea_favor_encoder.py::test_cuda_matches_reference_and_sea" >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "ms|err|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 20
fast=sea:performer_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh rows-mix "$secs" --device cuda \
  --methods sdpa:backend=cudnn,$fast,$fast:backend=triton_rows,$fast:mix_backend=kernel,$fast:backend=triton_rows:mix_backend=kernel \
  --method-args sea.max_len=262144 --seq-lens 16384,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --causal --mode fwd --rep-ms 20 --timeout 240
timeout 60 python3 scripts/profile_sea.py --T 65536 --causal --top 25 \
  --opts performer_dtype=bf16,compile=estimator,backend=triton_rows,mix_backend=kernel >"$OUT/profile-64k.txt" 2>&1
echo "profile exit $?"
