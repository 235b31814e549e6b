#!/usr/bin/env bash
# The SEA levers written but not yet run on a GPU (issue 7), in one call on a lent single-GPU machine:
#   1. the GPU tests of the new kernels (compiled, default tiles, SEA's widths): fused Performer, fused encoder,
#      top-k / interpolation / sparse kernels -> $OUT/gpu-tests.txt
#   2. one harness sweep, same run as cuDNN: SEA with the bf16 Performer, then + the fused encoder and the
#      rewritten interpolation kernel (top-k kernel and fused bidirectional Performer are defaults on CUDA)
#      -> $OUT/sea-next/{meta.json,rows.jsonl}
#   3. SEA forward+backward beside SDPA-flash at 32k causal, with SEA's backward per stage (extra.stages_bwd_ms)
#      -> $OUT/sea-next-bwd/{meta.json,rows.jsonl}
#   bash scripts/device_sea_next.sh [SECONDS for the sweep, default 360]
# Run with HARNESS_GIT_COMMIT=<commit> so the run directory names the tree.
set -u
secs=${1:-360}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_favor_dense.py tests/test_sea_encoder.py tests/test_sea_kernel.py \
  >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; tail -n 15 "$OUT/gpu-tests.txt"
bash scripts/device_sweep.sh sea-next "$secs" --device cuda \
  --methods sdpa:backend=cudnn,sea:performer_dtype=bf16,sea:performer_dtype=bf16:encoder_backend=triton:interp_backend=triton \
  --method-args sea.max_len=262144 --seq-lens 16384,65536,262144 --batch 1 --heads 16 --head-dim 64 --dtype bf16 \
  --both-directions --mode fwd --rep-ms 20 --timeout 60
bash scripts/device_sweep.sh sea-next-bwd 120 --device cuda --methods sdpa:backend=flash,sdpa:backend=cudnn,sea \
  --seq-lens 32768 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 --timeout 60
