#!/usr/bin/env bash
# The SEA levers written but not yet run on a GPU (issue 7), in one call on a lent single-GPU machine:
#   1. the GPU tests of the new kernels (compiled, default tiles, SEA's widths): fused Performer, fused encoder,
#      top-k / interpolation / sparse kernels -> $OUT/gpu-tests.txt
#   2. one harness sweep, same run as cuDNN, T = 16k and 64k, both directions: SEA with the bf16 Performer;
#      + the fused encoder and the rewritten interpolation kernel; + sea.compile=estimator on top
#      -> $OUT/sea-next/{meta.json,rows.jsonl}
#   3. kernel-by-kernel profiles of the forward at 64k (scripts/profile_sea.py) -> $OUT/profile-*.txt
#   bash scripts/device_sea_next.sh [SECONDS for the sweep, default 330]
# Run with HARNESS_GIT_COMMIT=<commit> so the run directory names the tree.
set -u
secs=${1:-330}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_favor_dense.py tests/test_sea_encoder.py tests/test_sea_kernel.py \
  >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; tail -n 15 "$OUT/gpu-tests.txt"
fast=sea:performer_dtype=bf16:encoder_backend=triton:interp_backend=triton
bash scripts/device_sweep.sh sea-next "$secs" --device cuda \
  --methods sdpa:backend=cudnn,sea:performer_dtype=bf16,$fast,$fast:compile=estimator \
  --method-args sea.max_len=262144 --seq-lens 16384,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 \
  --both-directions --mode fwd --rep-ms 20 --timeout 240
for dir in --causal ""; do
  for opts in performer_dtype=bf16,encoder_backend=triton,interp_backend=triton \
              performer_dtype=bf16,encoder_backend=triton,interp_backend=triton,compile=estimator; do
    tag=$([ -n "$dir" ] && echo causal || echo bidir)-$(echo "$opts" | grep -q compile && echo compiled || echo eager)
    timeout 90 python3 scripts/profile_sea.py --T 65536 $dir --opts "$opts" >"$OUT/profile-$tag.txt" 2>&1
    echo "profile $tag exit $?"; head -n 14 "$OUT/profile-$tag.txt"
  done
done
