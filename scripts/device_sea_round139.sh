#!/usr/bin/env bash
# Issue 7, twenty-sixth session, call 1 (results/nvidia-h200/sea-presets/call1/): the blocked bidirectional estimator's
# scalers and block sums written in place by the head and tail kernels (two copy kernels a block fewer), A/B against
# the previous commit (carried in .carry/base, run from there) in one harness table each under --cuda-graph, same card;
# sea preset=lean beside the written-out options (the same configuration: the same times within noise); GPU tests of
# the touched kernels; the 8k profile of 8 blocks.
# Predictions (before the run): GPU tests pass. 8k, 8 blocks: 0.857 -> ~0.80 ms (~1.50x -> ~1.40x cuDNN; each copy ~3-4
# us of a ~0.05 ms block); 16k 0.586x -> ~0.56x; 64k 0.095x -> ~0.094x; memory unchanged (1.47x); preset=lean's row
# within 2 % of the written-out row.
set -u
export PYTHONUNBUFFERED=1
base=$1
timeout 200 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py tests/test_sea_estimator_rows.py \
  -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 6
G=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
G=$G:shared_keys=64:encoder_operands=bf16:identity_values=kernel:nbf=8:query_blocks=8
args="--device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --cuda-graph
  --seq-lens 8192,16384,65536 --bidirectional --mode fwd --rep-ms 50 --timeout 120"
(cd .carry/base && HARNESS_GIT_COMMIT=$base bash scripts/device_sweep.sh base 150 $args \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$G) 2>&1 | tail -n 6
bash scripts/device_sweep.sh new 180 $args --methods sdpa:backend=cudnn,sdpa:backend=flash,$G,sea:preset=lean \
  2>&1 | tail -n 7
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel,nbf=8,query_blocks=8
f=$OUT/profile-8192-qb8.txt
timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o --top 14 --iters 20 > "$f" 2>&1
grep -E "kernels sum|^ +[0-9]" "$f" | head -n 16
