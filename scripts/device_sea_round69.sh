#!/usr/bin/env bash
# Issue 7, thirteenth session, call 9: shared keys for bidirectional layers (one geometry L = T for every block; the
# block cells of a batch element ranked together by the radix select, kernels/sea_topk_global.py, on 64x fewer cells;
# the kernel takes the cells' keys outside the block's rows and all of its own).
# 1. GPU tests -> $OUT/gpu-tests.txt. 2. One harness command, bidirectional 8k, 16k, 64k: cuDNN, SEA fast per-row and
# shared_keys=64 budget 2, both cuda_graph=16384 -> $OUT/fwd/. 3. Profile of the shared row at 64k -> $OUT/.
# Predictions (written before the run): 64k 0.294x -> ~0.20-0.22x (radix count passes 1.69, CSR lists 0.96, rows
# kernel 0.97 ms go; block sums ~0.15, the select ~0.05, the shared kernel ~0.3, the mix in tensor ops ~0.2 come);
# 16k replayed 1.36x -> ~1.0-1.1x; 8k 3.2x -> ~2.5x.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_sea_shared.py -p no:cacheprovider 2>&1 | tail -n 5 | tee "$OUT/gpu-tests.txt"
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwd 240 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,$g:cuda_graph=16384,$g:shared_keys=64:cuda_graph=16384 \
  --seq-lens 8192,16384,65536 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 1
python3 scripts/ratio_table.py "$OUT/fwd/rows.jsonl"
f=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
timeout 100 python3 scripts/profile_sea.py --T 65536 --opts "$f,shared_keys=64" --top 24 --iters 20 \
  >"$OUT/profile-65536-bidir-shared2.txt" 2>&1
echo "profile exit $?"; sed -n 3,20p "$OUT/profile-65536-bidir-shared2.txt" | cut -c1-110
