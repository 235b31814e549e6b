#!/usr/bin/env bash
# Issue 7, twenty-sixth session, call 10 (results/nvidia-h200/sea-presets/call10/): the blocks' convolutions run slower
# than the whole call's (bidirectional 8k in 8 blocks 0.29 against 0.14 ms; causal 16k an sm80 kernel, 0.114 against
# 0.060): does cuDNN's benchmark mode (timing its algorithms per shape at the first call) pick faster ones? Profiles of
# preset=lean with torch.backends.cudnn.benchmark off (the default) and on.
# Predictions (before the run): with benchmark on, bidirectional 8k kernels 0.79 -> ~0.72 ms (convolutions -0.07),
# causal 16k 1.14 -> ~1.11 ms; possibly no change (cuDNN's heuristics may already pick the fastest).
set -u
export PYTHONUNBUFFERED=1
b=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
for bench in False True; do
  f=$OUT/profile-bidir-8192-qb8-bench$bench.txt
  timeout 70 python3 scripts/profile_sea.py --T 8192 --opts $b,encoder_operands=bf16,identity_values=kernel,nbf=8,query_blocks=8 \
    --top 5 --iters 20 --set torch.backends.cudnn.benchmark=$bench > "$f" 2>&1
  echo "bidir 8k bench=$bench: $(grep -m1 'kernels sum' "$f" | sed -E 's/.*(kernels sum [0-9.]+ ms).*/\1/')"; grep -E "fprop" "$f" | cut -c1-110
  f=$OUT/profile-causal-16384-qb8-bench$bench.txt
  timeout 70 python3 scripts/profile_sea.py --T 16384 --causal --opts $b,shared_span=blocks,nbf=8,query_blocks=8 \
    --top 5 --iters 20 --set torch.backends.cudnn.benchmark=$bench > "$f" 2>&1
  echo "causal 16k bench=$bench: $(grep -m1 'kernels sum' "$f" | sed -E 's/.*(kernels sum [0-9.]+ ms).*/\1/')"; grep -E "fprop" "$f" | cut -c1-110
done
