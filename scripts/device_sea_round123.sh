#!/usr/bin/env bash
# Issue 7, twenty-fourth session, call 2 (results/nvidia-h200/sea-conv3x3/call2/).
# Call 1 (round122): the Triton convolution at 8k took 68 / 67 / 51 us (conv1 / conv2 / conv3, best of 9
# configurations, all with cp.async pipelines of 2-4 stages) against cuDNN's 54 / 53 / 54 (with its casts and memset,
# in graphs of 20 calls); SEA's 8k kernels 0.605 -> 0.635 ms. Reading: ~450 MB of tile loads a 64-channel conv (each
# input row fetched by nine taps, the weights by every program), ~7 TB/s from L2 if cp.async.cg bypasses L1. Now the
# same kernel with NUM_STAGES=1 (plain loads, cached in L1: the three column taps of a row hit the lines the first
# fetched, the 72 KB of packed weights can stay in L1). Predictions (before the run): stage-1 configurations
# ~45-55 us for conv1 / conv2 at 8k if L2 bandwidth binds (equal to or below cuDNN's 54), slower if load latency does
# (no prefetch); conv3 ~40. If the best configuration's sum beats cuDNN's at 8k, SEA's 8k and 64k profiles follow
# (8k kernels 0.605 -> ~0.59).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 200 python3 scripts/bench_conv3x3.py --T 8192 65536 \
  --configs 2x4x3 1x4x1 2x4x1 2x8x1 4x4x1 4x8x1 8x8x1 1x2x1 > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
sums=$(awk '$1==8192 && $4 ~ /^[0-9.]+$/ {s[$3]+=$4; n[$3]++} END {for (c in s) if (n[c]==3) print s[c], c}' "$OUT/bench.txt" \
  | sort -n)
echo "$sums" | head -4
best=$(echo "$sums" | awk '$2 != "cudnn"' | head -1 | awk '{print $2}')
gain=$(echo "$sums" | awk -v b="$best" '$2==b {t=$1} $2=="cudnn" {c=$1} END {print (t < c) ? 1 : 0}')
echo "best at 8k: $best (beats cuDNN: $gain)"
timeout 100 python3 -m pytest -q -m gpu tests/test_sea_conv3x3.py -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 8
[ "$gain" = 1 ] || exit 0
IFS=x read -r R NW NS <<< "$best"
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel
for T in 8192 65536; do
  for b in triton cudnn; do
    f=$OUT/profile-$T-$b.txt
    timeout 90 python3 scripts/profile_sea.py --T $T --opts $o --top 30 --iters 20 \
      --set methods.sea.estimator.CONV_BACKEND=$b --set kernels.sea_conv3x3.BLOCK_R=$R \
      --set kernels.sea_conv3x3.NUM_WARPS=$NW --set kernels.sea_conv3x3.NUM_STAGES=$NS > "$f" 2>&1
    echo "T=$T CONV_BACKEND=$b: kernels $(grep -m1 'kernels sum' "$f" | sed -E 's/.*kernels sum ([0-9.]+) ms.*/\1/')" \
      "conv $(grep -m1 -E '_conv_kernel|sm90_xmma_fprop' "$f" | awk '{print $1, $2}')"
    grep -q 'kernels sum' "$f" || tail -n 3 "$f" | cut -c1-200
  done
done
