#!/usr/bin/env bash
# Issue 7, this session's closing lease (one call on a lent single-GPU machine, bf16, B=1, H=16, D=64):
#   1. GPU tests of the fused causal Performer + encoder kernel, the interpolation row counts and the linear-attention
#      scan -> $OUT/gpu-tests.txt
#   2. the SEA-vs-dense table, one harness command: cuDNN, SDPA-flash, SEA defaults, SEA fast (bf16 Performer +
#      compiled estimator), SEA fast + fused Performer/encoder, and that in 64 query blocks; T = 8k .. 256k, both
#      directions -> $OUT/table/
#   3. kernel profiles of SEA fast + fused at 64k and 256k causal -> $OUT/profile-{64k,256k}.txt
#   4. fit probe with steady-state peaks: SDPA-flash to 1M and SEA fast + fused in 64 query blocks to 8M, causal
#      -> $OUT/fit.jsonl
#   bash scripts/device_sea_round7.sh [SECONDS for the sweep, default 280]
# Run with HARNESS_GIT_COMMIT=<commit> so the run directory names the tree.
set -u
secs=${1:-280}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 -m pytest -q -s -m gpu tests/test_sea_favor_encoder.py tests/test_sea_interp_counts.py \
  tests/test_kernel_linear_attention.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "passed|failed|ms|Error" "$OUT/gpu-tests.txt" | tail -n 12
fast=sea:performer_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh table "$secs" --device cuda \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,sea,$fast,$fast:performer_backend=fused,$fast:performer_backend=fused:query_blocks=64 \
  --method-args sea.max_len=262144 --seq-lens 8192,16384,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --both-directions --mode fwd --rep-ms 20 --timeout 240
for T in 65536 262144; do
  timeout 40 python3 scripts/profile_sea.py --T $T --causal --top 25 \
    --opts performer_dtype=bf16,compile=estimator,performer_backend=fused >"$OUT/profile-$((T / 1024))k.txt" 2>&1
  echo "profile $T exit $?"
done
timeout 45 python3 scripts/fit_probe.py --methods sdpa:backend=flash --causal --start 262144 --stop 1048576 \
  --max-sec 40 --out "$OUT/fit.jsonl" >"$OUT/fit.txt" 2>&1
timeout 45 python3 scripts/fit_probe.py --methods sea:performer_dtype=bf16:performer_backend=fused:query_blocks=64 \
  --causal --start 262144 --stop 8388608 --max-sec 40 --out "$OUT/fit.jsonl" >>"$OUT/fit.txt" 2>&1
echo "fit exit $?"; grep "^|" "$OUT/fit.txt"
