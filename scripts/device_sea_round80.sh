#!/usr/bin/env bash
# Issue 7, fifteenth session, call 4 (results/nvidia-h200/sea-floor/call4/): the bidirectional Performer's partial
# sums stored [B H, m, n_split, Dv] (kernels/favor_dense.py), so the combine is a batched gemv over them in place
# instead of a reordered copy of all ~94 MB (at any T: ~2048 key-pass programs) and then the gemv.
# 1. The favor_dense GPU tests. 2. The 8k bidirectional profile again (call 1: 1.235 ms of kernels, 3 copies 0.081 ms
# and a gemv 0.038). 3. The bidirectional table (8k, 16k, 64k) as in sea-bidir-mix/call8.
# Predictions (written before the run): tests pass; 8k kernels 1.235 -> ~1.16 ms (the 0.081 ms copies gone); table
# 8k 2.26x -> ~2.15x, 16k 0.90x -> ~0.88x, 64k 0.187x -> ~0.185x; errors unchanged to ~1e-6 relative.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 -m pytest -q -m gpu tests/test_favor_dense.py -p no:cacheprovider 2>&1 | tail -n 3 \
  | tee "$OUT/gpu-tests.txt"
f=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
timeout 90 python3 scripts/profile_sea.py --T 8192 --opts "$f" --top 30 --iters 20 \
  >"$OUT/profile-8192-bidir.txt" 2>&1
echo "profile exit $?"; grep -v Warn "$OUT/profile-8192-bidir.txt" | sed -n 3,20p | cut -c1-120
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwd 200 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,$g:shared_keys=64:cuda_graph=16384 \
  --seq-lens 8192,16384,65536 --bidirectional --mode fwd --rep-ms 100 --timeout 100 | tail -n 1
python3 scripts/ratio_table.py "$OUT/fwd/rows.jsonl"
