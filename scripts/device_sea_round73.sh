#!/usr/bin/env bash
# Issue 7, fourteenth session, call 4 (results/nvidia-h200/sea-flex-blocks/call4/): call 3 measured FlexAttention on
# shared_span=blocks at 0.088 ms for the shared kernel's 0.195 (16k causal), but the BlockMask's tensor ops (a
# difference array, running sums and a scatter over B H NB^2 integers) took ~0.6 ms at 64k (3.79 against 3.18 ms).
# Here the full blocks' lists come from one Triton program per query block (kernels/sea_block_lists.py) and the
# causal partial blocks are made once per shape.
# 1. GPU tests. 2. Causal 8k, 16k, 64k: cuDNN, shared strided, shared blocks (cuda_graph=16384) -> $OUT/causal/.
# 3. Profile of the causal 64k blocks row.
# Predictions (written before the run): blocks 64k 3.79 -> ~3.2 ms (~0.165x, as strided), 16k ~0.86x, 8k ~1.85x.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_sea_flex_shared.py -p no:cacheprovider 2>&1 | tail -n 4 | tee "$OUT/gpu-tests.txt"
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
m=sdpa:backend=cudnn,$g:shared_keys=64:cuda_graph=16384,$g:shared_keys=64:shared_span=blocks:cuda_graph=16384
bash scripts/device_sweep.sh causal 200 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods $m --seq-lens 8192,16384,65536 --causal --mode fwd --rep-ms 50 \
  --timeout 100 | tail -n 1
python3 scripts/ratio_table.py "$OUT/causal/rows.jsonl"
f=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
timeout 60 python3 scripts/profile_sea.py --T 65536 --causal --opts "$f,shared_span=blocks" --top 16 --iters 20 \
  >"$OUT/profile-65536-causal-blocks.txt" 2>&1
echo "profile exit $?"; sed -n 3,20p "$OUT/profile-65536-causal-blocks.txt" | cut -c1-120
