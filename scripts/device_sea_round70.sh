#!/usr/bin/env bash
# Issue 7, fourteenth session, call 1: the bidirectional 64k goal (0.224x, needs 0.2). Levers in this commit: the
# shared kernel mixes in its epilogue (no float copy of c, no fp32 [B, H, T, D] temporary, no addcmul, no cast back);
# the average context from the cells' sums of v (no fp32 copy of v, no [1, T] x [T, D] gemv); the block sums read
# A_hat without an fp32 copy. And a transposed form of the Performer's key pass (KEY_TRANSPOSED, off by default).
# 1. GPU tests -> $OUT/gpu-tests.txt. 2. The key pass's forms and tiles (tune_sea_kernels.py --only favor).
# 3. One harness command, bidirectional 8k, 16k, 64k: cuDNN, SEA fast shared_keys=64 with the new mix and with
# mix_backend=torch (the old tensor-op mix), cuda_graph=16384 -> $OUT/fwd/. 4. Profiles of the 64k row, with the key
# pass as it is and transposed.
# Predictions (written before the run): 64k kernels 8.41 -> ~7.6 ms (mix -0.45, cell sums -0.17, block sums' copy
# -0.15): 0.224x -> ~0.203x; the torch-mix variant ~0.5 ms slower in the same run; 16k 1.13x -> ~1.08x, 8k ~2.5x.
# Transposed key pass: 1.55 -> ~1.2 ms (+-0.3: one shared-memory transpose of the features a tile goes).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_sea_shared.py tests/test_favor_dense.py -p no:cacheprovider 2>&1 | tail -n 5 \
  | tee "$OUT/gpu-tests.txt"
timeout 150 python3 scripts/tune_sea_kernels.py --T 65536 --opts performer_dtype=bf16,estimator_precision=tf32 \
  --only favor --rep-ms 100 2>&1 | grep -v Warn | tee "$OUT/tune-favor.txt" | tail -n 14
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwd 240 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods \
  sdpa:backend=cudnn,$g:shared_keys=64:cuda_graph=16384,$g:shared_keys=64:mix_backend=torch:cuda_graph=16384 \
  --seq-lens 8192,16384,65536 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 1
python3 scripts/ratio_table.py "$OUT/fwd/rows.jsonl"
f=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
timeout 90 python3 scripts/profile_sea.py --T 65536 --opts "$f" --top 24 --iters 20 \
  >"$OUT/profile-65536-bidir-shared2.txt" 2>&1
echo "profile exit $?"; sed -n 3,16p "$OUT/profile-65536-bidir-shared2.txt" | cut -c1-110
timeout 90 python3 scripts/profile_sea.py --T 65536 --opts "$f" --top 24 --iters 20 \
  --set kernels.favor_dense.KEY_TRANSPOSED=True >"$OUT/profile-65536-bidir-shared2-trans.txt" 2>&1
echo "profile exit $?"; sed -n 3,10p "$OUT/profile-65536-bidir-shared2-trans.txt" | cut -c1-110
