#!/usr/bin/env bash
# Issue 7, nineteenth session, call 1 (results/nvidia-h200/sea-offsets/call1/): the Performer passes without
# accumulator rescaling (kernels/favor_dense.py KEY_OFFSET / QUERY_OFFSET = "norm": features bounded by
# |proj_f|^2 / 2, the per-head / per-row maxima applied once), and the GPU tests of the eighteenth session's review
# refactors (the shared encoder rows, the finite check's groups, the parity interleave), CPU-tested only so far.
# Then SEA's 8k bidirectional profile with both offsets on / off, twice; 64k on / off; one ops profile at 8k
# (host operations by device time) to attribute the ~40 small launches of the selection.
# Predictions (written before the run): tests pass; key pass 0.146 -> ~0.125 ms, query pass 0.099 -> ~0.080 at 8k
# (their accumulators' rescale is ~the exps' element count: 16K multiplies a 128-key tile in the key pass, 8K a
# 32-feature step in the query pass); 8k kernels 0.852 -> ~0.81; 64k 5.21 -> ~5.0.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# the committed select (a helper edits the working copy of these two files meanwhile)
cp .carry/r102/sea_topk_global.py kernels/sea_topk_global.py
cp .carry/r102/test_sea_topk_global.py tests/test_sea_topk_global.py
timeout 240 python3 -m pytest -q -m gpu tests/test_favor_dense.py tests/test_sea_bidir_head_tail.py \
  tests/test_finite_check.py tests/test_sea_encoder.py tests/test_sea_decoder.py tests/test_sea_decoder_v2.py \
  tests/test_sea_method.py tests/test_sea_estimator_precision.py tests/test_sea_shared.py \
  -p no:cacheprovider -rA > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 10
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
off=(--set kernels.favor_dense.KEY_OFFSET=running --set kernels.favor_dense.QUERY_OFFSET=running)
for run in 8192:new 8192:old 8192:new2 8192:old2 65536:new 65536:old; do
  T=${run%%:*}; v=${run##*:}
  case $v in
    new*) extra=();;
    old*) extra=("${off[@]}");;
  esac
  timeout 60 python3 scripts/profile_sea.py --T $T --opts $o --top 40 "${extra[@]}" > "$OUT/profile-$T-$v.txt" 2>&1
  echo "T=$T $v: $(grep -m1 'kernels sum' "$OUT/profile-$T-$v.txt" | cut -c1-100)"
  grep -E "_key_pf_kernel|_query_kernel|_combine" "$OUT/profile-$T-$v.txt" | cut -c1-60 | head -n 3
done
timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o --top 10 --ops 60 > "$OUT/ops-8192.txt" 2>&1
echo "ops profile: $(wc -l < "$OUT/ops-8192.txt") lines"
