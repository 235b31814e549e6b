#!/usr/bin/env bash
# Issue 7, nineteenth session, call 3 (results/nvidia-h200/sea-offsets/call3/ and ../sea-vs-dense-9/): the radix
# select in one launch a digit (kernels/sea_topk_global.py FUSED_PICK: 6 launches for fp32 scores instead of 16):
# its GPU tests, SEA's 8k profile with it on (with the calling lines of the aten launches) and off, then the
# bidirectional table at the session's final code (the same harness command as sea-vs-dense-8; call 2's rows did not
# come back from the device). At most 8 files under $OUT (a call returns no more).
# Predictions (written before the run): tests pass; 8k kernels 0.842 (call 2) -> ~0.815 ms with the fused select
# (the select's ~0.06 ms of small launches -> ~0.03); table 8k ~1.50x (call 2: 1.557x), 16k ~0.63x, 64k ~0.135x,
# 256k ~0.031x.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 80 python3 -m pytest -q -m gpu tests/test_sea_topk_global.py -p no:cacheprovider -rA \
  > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 6
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
timeout 50 python3 scripts/profile_sea.py --T 8192 --opts $o --top 45 --sites 45 > "$OUT/profile-8192-new.txt" 2>&1
echo "8k fused: $(grep -m1 'kernels sum' "$OUT/profile-8192-new.txt" | cut -c1-100)"
timeout 40 python3 scripts/profile_sea.py --T 8192 --opts $o --top 45 --set kernels.sea_topk_global.FUSED_PICK=False \
  > "$OUT/profile-8192-old.txt" 2>&1
echo "8k unfused: $(grep -m1 'kernels sum' "$OUT/profile-8192-old.txt" | cut -c1-100)"
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh table 220 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g:shared_keys=64:cuda_graph=16384 \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 2
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
