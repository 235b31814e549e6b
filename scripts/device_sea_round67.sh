#!/usr/bin/env bash
# Issue 7, thirteenth session, call 7: the causal table at the final shared-key kernels (2 warps since call 6).
# 1. GPU tests -> $OUT/gpu-tests.txt. 2. One harness command, causal 8k-64k: cuDNN, SEA fast (cuda_graph=16384), SEA
# fast + shared_keys=64 at budget 2 and 4 (cuda_graph=16384) -> $OUT/fwd/. 3. Profiles of SEA fast + shared keys
# budget 2 at 16k and 64k -> $OUT/profile-*.txt. 4. The kernel probe with Flex's tiles set to the mask's 64 x 64
# blocks -> $OUT/probe.txt.
# Predictions (written before the run): shared kernel 0.2 ms (16k) / 0.48 (64k); table: 16k replayed ~0.87x cuDNN,
# 64k ~0.165x eager (budget 2), budget 4 +0.05-0.1 ms; Flex on the 64 x 64 block mask slower than the shared kernel.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_sea_shared.py -p no:cacheprovider 2>&1 | tail -n 5 | tee "$OUT/gpu-tests.txt"
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
s=$g:shared_keys=64
bash scripts/device_sweep.sh fwd 300 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 \
  --methods sdpa:backend=cudnn,$g:cuda_graph=16384,$s:shared_budget=2:cuda_graph=16384,$s:shared_budget=4:cuda_graph=16384 \
  --seq-lens 8192,16384,32768,65536 --causal --mode fwd --rep-ms 50 --timeout 120 | tail -n 1
python3 scripts/ratio_table.py "$OUT/fwd/rows.jsonl"
f=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for T in 16384 65536; do
  timeout 100 python3 scripts/profile_sea.py --T $T --causal --opts "$f,shared_keys=64,shared_budget=2" --top 24 \
    --iters 20 >"$OUT/profile-$T-shared2.txt" 2>&1
  echo "profile $T exit $?"; grep -E "wall" "$OUT/profile-$T-shared2.txt" | head -n 1 | cut -c1-120
done
timeout 200 python3 scripts/probe_shared_kernel.py --T 16384 65536 --block-n 64 --warps 2 4 2>&1 \
  | grep -v Warning > "$OUT/probe.txt"
tail -n 16 "$OUT/probe.txt"
