#!/usr/bin/env bash
# Issue 7, sixth session (one call on a lent single-GPU machine, bf16, B=1, H=16, D=64):
#   1. GPU tests: the fused front at precision tf32 (bf16 feature operands) against its float64 restatement, the
#      new CUDA defaults (rows kernel + mix kernel) against the row kernel + tensor-op mix, the top-k kernel's
#      sort and bisect algorithms (equal masks, both timed) -> $OUT/gpu-tests.txt
#   2. quality gate of estimator_precision=tf32 on real q/k/v: `harness fidelity --capture-in` on SmolLM2-135M's
#      layers 0, 3, .., 27 at 2048 tokens of WikiText-2 test (carried in .carry/cap, bf16), four SEA variants
#      -> $OUT/fidelity/
#   3. harness sweep beside cuDNN, causal 16k / 64k / 256k: SEA fast, + estimator_precision=tf32, + fused front,
#      + both -> $OUT/precision/
#   4. kernel profile of SEA fast + fused + tf32 at 64k causal -> $OUT/profile-64k.txt
#   bash scripts/device_sea_round10.sh [SECONDS for the sweep, default 180]
# Predictions (results/nvidia-h200/sea-speed-notes.md): fused front output kernel 3.5 -> ~1.5 ms at 64k, 16.8 -> ~7
# at 256k; decoder 1.7 -> ~1.2 at 64k with one-pass dots; top-k bisect 1.3 -> ~0.3 ms at 64k.
# Run with HARNESS_GIT_COMMIT=<commit> so the run directory names the tree.
set -u
secs=${1:-180}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 170 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_favor_encoder.py tests/test_sea_mix_kernel.py \
  tests/test_sea_topk_kernel.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E " ms|err|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 24
cap=$(ls .carry/cap/*.safetensors | head -n 1)
f=sea:performer_dtype=bf16
timeout 150 python3 -m harness fidelity --capture-in "$cap" --dtype bf16 --device cuda --out /tmp/fidelity --quiet \
  --methods $f,$f:estimator_precision=tf32,$f:performer_backend=fused,$f:performer_backend=fused:estimator_precision=tf32 \
  >"$OUT/fidelity.txt" 2>&1
echo "fidelity exit $?"; grep -E "mean|Error" "$OUT/fidelity.txt" | tail -n 8
mkdir -p "$OUT/fidelity" && cp /tmp/fidelity/meta.json /tmp/fidelity/rows.jsonl "$OUT/fidelity/" 2>/dev/null
fast=sea:performer_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh precision "$secs" --device cuda \
  --methods sdpa:backend=cudnn,$fast,$fast:estimator_precision=tf32,$fast:performer_backend=fused,$fast:performer_backend=fused:estimator_precision=tf32 \
  --method-args sea.max_len=262144 --seq-lens 16384,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --causal --mode fwd --rep-ms 20 --timeout 240
timeout 50 python3 scripts/profile_sea.py --T 65536 --causal --top 25 \
  --opts performer_dtype=bf16,compile=estimator,performer_backend=fused,estimator_precision=tf32 \
  >"$OUT/profile-64k.txt" 2>&1
echo "profile exit $?"
