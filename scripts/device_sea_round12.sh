#!/usr/bin/env bash
# Issue 7, sixth session: the SEA-vs-dense table at this session's defaults (one call on a lent single-GPU
# machine, bf16, B=1, H=16, D=64):
#   1. GPU tests of what changed since the last timing: the decoder kernel (BLOCK_F=64), the fused front at
#      precision tf32 with 128-row chunks, auto front selection -> $OUT/gpu-tests.txt
#   2. the table, one harness command: cuDNN, SDPA-flash, SEA defaults, SEA fast (bf16 Performer operands,
#      compiled estimator, estimator_precision=tf32: the fused front on causal calls), SEA fast in 64 query
#      blocks; T = 8k .. 256k, both directions, forward -> $OUT/table/
#   3. forward+backward at 32k causal beside SDPA-flash and cuDNN -> $OUT/fwdbwd/
#   4. kernel profiles of SEA fast at 64k and 256k causal -> $OUT/profile-{64k,256k}.txt
#   bash scripts/device_sea_round12.sh [SECONDS for the table, default 290]
# Run with HARNESS_GIT_COMMIT=<commit> so the run directory names the tree.
set -u
secs=${1:-290}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 110 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_decoder.py tests/test_sea_favor_encoder.py \
  tests/test_sea_estimator_precision.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 6
fast=sea:performer_dtype=bf16:compile=estimator:estimator_precision=tf32
bash scripts/device_sweep.sh table "$secs" --device cuda \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,sea,$fast,$fast:query_blocks=64 \
  --method-args sea.max_len=262144 --seq-lens 8192,16384,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --both-directions --mode fwd --rep-ms 20 --timeout 240
bash scripts/device_sweep.sh fwdbwd 70 --device cuda \
  --methods sdpa:backend=flash,sdpa:backend=cudnn,sea,sea:performer_dtype=bf16 \
  --seq-lens 32768 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 --timeout 60
for T in 65536 262144; do
  timeout 35 python3 scripts/profile_sea.py --T $T --causal --top 25 \
    --opts performer_dtype=bf16,compile=estimator,estimator_precision=tf32 >"$OUT/profile-$((T / 1024))k.txt" 2>&1
  echo "profile $T exit $?"; grep -E "wall" "$OUT/profile-$((T / 1024))k.txt"
done
