#!/usr/bin/env bash
# Issue 7, seventeenth session, call 5 (results/nvidia-h200/sea-key-pass/call5/ and sea-vs-dense-7/call5/): the
# query pass's dash from two bf16 products too (QUERY_DASH=bf16x2), its GPU tests, its time against TF32, SEA's 8k
# profile at the final code, then call 4's table command again (same-run ratios twice, for their spread).
# Predictions (written before the run): the tests pass; the query pass within 10 % of its TF32 time (0.099 ms at 8k;
# it reads each query once, so its dash products are a small part); the table within ~5 % of call 4 (1.865x /
# 0.782x / 0.167x / 0.038x against cuDNN).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 -m pytest -q -m gpu tests/test_favor_dense.py -p no:cacheprovider -rA > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "rel L2|^FAILED|^ERROR|passed|failed" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 14
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for T in 8192 65536; do
  timeout 90 python3 scripts/tune_sea_kernels.py --T $T --opts $o --only favor --rep-ms 50 > "$OUT/tune-favor-$T.txt" 2>&1
  grep -E "^\| |values|error" "$OUT/tune-favor-$T.txt" | grep -v -- "---" | cut -c1-100
done
timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o,shared_keys=64 --top 40 > "$OUT/profile-8192.txt" 2>&1
echo "T=8192: $(grep -m1 'kernels sum' "$OUT/profile-8192.txt")"
grep -E "_key_pf_kernel|_key_sqnorm|_combine_kernel|_query_kernel" "$OUT/profile-8192.txt" | cut -c1-90
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh table2 "${1:-210}" --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g:shared_keys=64:cuda_graph=16384 \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 2
python3 scripts/ratio_table.py "$OUT/table2/rows.jsonl"
