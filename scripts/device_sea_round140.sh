#!/usr/bin/env bash
# Issue 7, twenty-sixth session, call 2 (results/nvidia-h200/sea-presets/call2/). Call 1: the head kernel's in-place
# scalers cost it 5 registers (125 -> 130, one program an SM): 64k 3.59 -> 3.97 ms; reverted. Now: the tail kernel's
# block sums in place (kept), the tail's head groups raised where the blocks are few (MIN_PROGRAMS; 8k in 8 blocks:
# 64 programs a call, 10.5 us each), the parity convolution's weights made channels-last once (cuDNN copied them
# every block). A/B against the previous session's commit (.carry/base) in one harness table each, same card; the
# 8k profile of 8 blocks with the launch sites, and with the tail's old grid (MIN_PROGRAMS=0).
# Predictions (before the run): GPU tests pass. 8k, 8 blocks: 0.857 -> ~0.79 ms (tail -0.05, weight copies -0.02),
# 1.47x -> ~1.37x cuDNN; 16k -0.05 ms; 64k 3.59 -> ~3.55 ms; whole calls unchanged (within 2 %); memory unchanged;
# the tail at 8 blocks 0.084 -> ~0.035 ms a call in the profile; the 16 direct copies -> 8.
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
o=$o,encoder_operands=bf16,identity_values=kernel,nbf=8,query_blocks=8
f=$OUT/profile-8192-qb8.txt
timeout 80 python3 scripts/profile_sea.py --T 8192 --opts $o --top 16 --iters 20 --sites 10 > "$f" 2>&1
grep -E "kernels sum|^ +[0-9]" "$f" | head -n 18
f=$OUT/profile-8192-qb8-oldtail.txt
timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o --top 6 --iters 20 \
  --set kernels.sea_bidir_tail.MIN_PROGRAMS=0 > "$f" 2>&1
grep -E "kernels sum|_tail" "$f" | head -n 3
