#!/usr/bin/env bash
# Issue 7, fourteenth session, call 2 (results/nvidia-h200/sea-bidir-mix/call2/). Call 1 measured the shared kernel's
# mix epilogue (-0.68 ms at 64k against the tensor-op mix, same run) but a slower key pass (3.02 against 1.55 ms):
# that commit's rewrite transposed the fp32 features before rounding them to bf16 (the old code rounds first), and
# the transposed form was no faster; both are undone here. New: A_hat's column sums from the block sums (the average
# context no longer reads A_hat); the CUDA tensor-op shared top-k fixed (select_rows_ref built its ranks on the CPU).
# 1. GPU tests. 2. The key pass's tiles. 3. One harness command, bidirectional 8k, 16k, 64k: cuDNN, SEA fast
# shared_keys=64 (epilogue mix) and the same with mix_backend=torch, cuda_graph=16384 -> $OUT/fwd/. 4. Profile, 64k.
# Predictions (written before the run): key pass back to ~1.55 ms; 64k kernels ~7.3 ms (call 1's 8.89 - 1.47 key
# pass - 0.14 column sums), wall ~7.5: ~0.20x cuDNN (goal 0.2); the torch-mix variant ~0.7 ms slower; 16k ~1.05x,
# 8k ~2.6x replayed.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_sea_shared.py tests/test_favor_dense.py -p no:cacheprovider 2>&1 | tail -n 5 \
  | tee "$OUT/gpu-tests.txt"
timeout 120 python3 scripts/tune_sea_kernels.py --T 65536 --opts performer_dtype=bf16,estimator_precision=tf32 \
  --only favor --rep-ms 100 2>&1 | grep -v Warn | tee "$OUT/tune-favor.txt" | tail -n 10
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwd 240 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods \
  sdpa:backend=cudnn,$g:shared_keys=64:cuda_graph=16384,$g:shared_keys=64:mix_backend=torch:cuda_graph=16384 \
  --seq-lens 8192,16384,65536 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 1
python3 scripts/ratio_table.py "$OUT/fwd/rows.jsonl"
f=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
timeout 90 python3 scripts/profile_sea.py --T 65536 --opts "$f" --top 30 --iters 20 \
  >"$OUT/profile-65536-bidir-shared2.txt" 2>&1
echo "profile exit $?"; sed -n 3,34p "$OUT/profile-65536-bidir-shared2.txt" | cut -c1-120
