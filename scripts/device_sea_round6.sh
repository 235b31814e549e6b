#!/usr/bin/env bash
# Issue 7, this session's second lease (one call on a lent single-GPU machine, bf16, B=1, H=16, D=64):
#   1. GPU tests of the kernels changed since the last lease (linear-attention scan, interpolation row counts,
#      fused causal Performer + encoder) -> $OUT/gpu-tests.txt
#   2. harness sweep beside cuDNN: SEA fast (bf16 Performer + compiled estimator; now with the blocked scan and
#      the in-kernel row counts) with and without performer_backend=fused, T = 8k .. 256k, both directions
#      (fused is causal only: its bidirectional cells are recorded unsupported) -> $OUT/sea-fused/
#   3. kernel profiles of SEA fast + fused at 64k and 256k causal -> $OUT/profile-{64k,256k}.txt
#   4. the longest T that fits: SDPA-flash, SEA (bf16 Performer) whole and in 64 query blocks -> $OUT/fit.jsonl
#   bash scripts/device_sea_round6.sh [SECONDS for the sweep, default 240]
# Run with HARNESS_GIT_COMMIT=<commit> so the run directory names the tree.
set -u
secs=${1:-240}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 -m pytest -q -s -m gpu tests/test_kernel_linear_attention.py tests/test_sea_interp_counts.py \
  tests/test_sea_interp_kernel.py tests/test_sea_favor_encoder.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; tail -n 25 "$OUT/gpu-tests.txt"
fast=sea:performer_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh sea-fused "$secs" --device cuda \
  --methods sdpa:backend=cudnn,$fast,$fast:performer_backend=fused \
  --method-args sea.max_len=262144 --seq-lens 8192,16384,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --both-directions --mode fwd --rep-ms 20 --timeout 240
for T in 65536 262144; do
  timeout 60 python3 scripts/profile_sea.py --T $T --causal --top 30 \
    --opts performer_dtype=bf16,compile=estimator,performer_backend=fused >"$OUT/profile-$((T / 1024))k.txt" 2>&1
  echo "profile $T exit $?"
done
timeout 150 python3 scripts/fit_probe.py --methods sdpa:backend=flash,sea:performer_dtype=bf16,sea:performer_dtype=bf16:query_blocks=64 \
  --both-directions --start 262144 --stop 8388608 --max-sec 10 --out "$OUT/fit.jsonl" >"$OUT/fit.txt" 2>&1
echo "fit exit $?"; tail -n 9 "$OUT/fit.txt"
