#!/usr/bin/env bash
# Issue 7, twenty-fourth session, call 1 (results/nvidia-h200/sea-conv3x3/call1/).
# kernels/sea_conv3x3.py (new): the bidirectional decoder's 3x3 convolutions as one Triton implicit GEMM each (nine
# taps, [rows x 64 columns, 64 channels] tiles, bias + ReLU fused, the weights packed once a call), against cuDNN's
# kernels, which the replayed 8k graph showed at 46-48 us each plus a memset and two weight casts (~8 us a conv with
# the gaps: sea-graph-call/call1/trace-graph-8192.json).
# Predictions (before the run): GPU tests pass (at most one bf16 step from cuDNN); in graphs of 20 calls cuDNN
# ~50-55 us for conv1 / conv2 and ~45 for conv3 at 8k, the best Triton configuration ~45-60 / ~30-40 (bytes ~25 us,
# products ~24 us a 64-channel conv at the ceilings); SEA's 8k kernels 0.605 -> ~0.59 ms with CONV_BACKEND=triton
# if the kernel matches cuDNN's time, 64k ~3.89 -> ~3.85.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 -m pytest -q -m gpu tests/test_sea_conv3x3.py -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 8
timeout 200 python3 scripts/bench_conv3x3.py --T 8192 65536 \
  --configs 1x4x2 1x4x3 2x4x2 2x4x3 2x4x4 2x8x3 4x8x2 4x8x3 4x4x3 > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
# the configuration with the smallest sum over the three convolutions at 8k
best=$(awk '$1==8192 && $3 ~ /x/ && NF==6 {s[$3]+=$4; n[$3]++} END {for (c in s) if (n[c]==3) print s[c], c}' \
  "$OUT/bench.txt" | sort -n | head -1 | awk '{print $2}')
best=${best:-2x4x3}
IFS=x read -r R NW NS <<< "$best"
echo "best at 8k: $best"
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
