#!/usr/bin/env bash
# Issue 7, thirteenth session, call 3: shared keys after call 2, where the kernel's in-register slot lookup (int64
# [64 x 64] one-hot selects) took 4.65 ms at 16k (call 1's cell loop: 0.55) and the rebin kernel's int64 divisions
# 1.35 ms (the scatter_add: 0.057). Now: the cells' slot table by tensor ops (kernels/sea_shared_attention.py:
# slot_table; the kernel finds a slot's cell by one int32 compare-and-sum, then four int32 gathers), the rebin
# kernel on a per-shape shift table (methods/sea/shared.py: rebin_tables; no division in the kernel).
# 1. GPU tests -> $OUT/gpu-tests.txt. 2. Profiles, causal 16k and 64k, per-row SEA fast and shared_keys=64 budget 2
# -> $OUT/profile-*.txt. 3. One harness command, causal 8k-64k: cuDNN, SEA fast (cuda_graph=16384), SEA fast +
# shared_keys=64 at budget 2 and 4 (cuda_graph=16384) -> $OUT/fwd/.
# Predictions (written before the run): shared kernel 16k <= 0.15 ms, 64k <= 0.4; rebin 16k ~0.02, 64k ~0.08;
# kernels 16k ~0.95 ms, 64k ~3.2; table: 16k replayed ~0.85x cuDNN, 64k ~0.17x (budget 2).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_sea_shared.py -p no:cacheprovider 2>&1 | tail -n 15 | tee "$OUT/gpu-tests.txt"
f=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for T in 16384 65536; do
  for v in "rows:" "shared2:,shared_keys=64,shared_budget=2"; do
    IFS=: read -r name extra <<<"$v"
    timeout 100 python3 scripts/profile_sea.py --T $T --causal --opts "$f$extra" --top 16 --iters 20 \
      >"$OUT/profile-$T-$name.txt" 2>&1
    echo "profile $T $name exit $?"; grep -E "wall" "$OUT/profile-$T-$name.txt" | head -n 1 | cut -c1-120
    grep -E "_shared_fwd|_rebin|_rows_fwd|_csr_col|_group_bisect" "$OUT/profile-$T-$name.txt" | cut -c1-60
  done
done
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwd 330 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,$g:cuda_graph=16384,$g:shared_keys=64:shared_budget=2:cuda_graph=16384,$g:shared_keys=64:shared_budget=4:cuda_graph=16384 \
  --seq-lens 8192,16384,32768,65536 --causal --mode fwd --rep-ms 50 --timeout 120 | tail -n 2
python3 scripts/ratio_table.py "$OUT/fwd/rows.jsonl"
