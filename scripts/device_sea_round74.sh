#!/usr/bin/env bash
# Issue 7, fourteenth session, call 5 (results/nvidia-h200/sea-flex-blocks/call5/): the BlockMask's lists cut to a
# per-shape bound on their length (methods/sea/shared.py: key_block_width: 78 at 16k-256k causal instead of NB =
# 256 .. 4096), so they no longer grow as NB^2; the causal table out to 256k.
# 1. GPU tests. 2. Causal 8k, 16k, 64k, 256k: cuDNN, shared strided, shared key blocks (cuda_graph=16384) ->
# $OUT/causal/. 3. Profile of the causal 64k key-blocks row.
# Predictions (written before the run): key blocks 64k within ~3 % of call 4 (0.159x; the lists kernel wrote only
# the counts' entries there too), memory 843 -> ~720 MiB (two NB x NB int32 lists gone); 16k ~0.79x; 256k: both
# spans ~0.04x cuDNN (per-row 0.043x in sea-front/call7), key blocks a little faster.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_sea_flex_shared.py -p no:cacheprovider 2>&1 | tail -n 4 | tee "$OUT/gpu-tests.txt"
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
m=sdpa:backend=cudnn,$g:shared_keys=64:cuda_graph=16384,$g:shared_keys=64:shared_span=blocks:cuda_graph=16384
bash scripts/device_sweep.sh causal 330 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods $m --seq-lens 8192,16384,65536,262144 --causal --mode fwd --rep-ms 50 \
  --timeout 120 | tail -n 1
python3 scripts/ratio_table.py "$OUT/causal/rows.jsonl"
f=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
timeout 60 python3 scripts/profile_sea.py --T 65536 --causal --opts "$f,shared_span=blocks" --top 12 --iters 20 \
  >"$OUT/profile-65536-causal-blocks.txt" 2>&1
echo "profile exit $?"; sed -n 3,12p "$OUT/profile-65536-causal-blocks.txt" | cut -c1-120
