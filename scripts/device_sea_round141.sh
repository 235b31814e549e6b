#!/usr/bin/env bash
# Issue 7, twenty-sixth session, call 3 (results/nvidia-h200/sea-presets/call3/). Call 2 (8k in 8 blocks 0.859 -> 0.818
# ms): the tail's extra programs barely moved it (0.083 -> 0.077 ms for 8 calls: a chain of 8 dependent loads a
# program sets a call's time), and the launch sites showed the head kernel's three weight casts in every block. Now:
# the head's weights cast once a call (kernels/sea_bidir_head.py cast_weights, the estimator's block loop keeps
# them), and the tail walks its rows in steps of up to 4096 elements (8k blocks: 1 step instead of 8; the whole call
# 8 half-rows a step instead of 4). A/B against the previous session's commit (.carry/base), same card.
# Predictions (before the run): GPU tests pass. 8k, 8 blocks: 0.818 -> ~0.75 ms (copies -0.03, tail -0.04), ~1.30x
# cuDNN; 64k 3.55 -> ~3.50; whole calls within 2 % (the whole tail's steps doubled: +-0.005 ms); memory unchanged.
set -u
export PYTHONUNBUFFERED=1
base=$1
timeout 200 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py tests/test_sea_estimator_rows.py \
  -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 6
G=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
G=$G:shared_keys=64:encoder_operands=bf16:identity_values=kernel:nbf=8
args="--device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --cuda-graph
  --seq-lens 8192,16384,65536 --bidirectional --mode fwd --rep-ms 50 --timeout 120"
(cd .carry/base && HARNESS_GIT_COMMIT=$base bash scripts/device_sweep.sh base 170 $args \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$G,$G:query_blocks=8) 2>&1 | grep -E "exit|rows$"
bash scripts/device_sweep.sh new 170 $args --methods sdpa:backend=cudnn,sdpa:backend=flash,$G,$G:query_blocks=8 \
  2>&1 | grep -E "exit|rows$"
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel,nbf=8
for qb in 8 0; do
  f=$OUT/profile-8192-qb$qb.txt
  timeout 80 python3 scripts/profile_sea.py --T 8192 --opts $o,query_blocks=$qb --top 12 --iters 20 > "$f" 2>&1
  grep -E "kernels sum|^ +[0-9]" "$f" | head -n 13
done
