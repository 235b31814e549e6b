#!/usr/bin/env bash
# Issue 7, twelfth session, call 3: the bidirectional estimator without its fp32 copies: favor_dense reads q and k
# in their dtype (the estimator cast them first), and the encoder kernel writes z in bf16 when the decoder runs
# under bf16 autocast (the decoder's Linear cast it anyway) and reads v in bf16. Exact: the GPU tests compare bit for
# bit. A/B/A profiles against the tree before (a436386, carried in .gl/old3), bf16, B=1, H=16, D=64, SEA fast +
# compile + pieces=1, bidirectional forward at 64k and 8k -> $OUT/profile-*.txt; GPU tests -> $OUT/gpu-tests.txt.
# Prediction: 64k kernels -0.4 +- 0.15 ms (q, k casts ~0.2; z's cast kernel and half its write ~0.25), 8k -0.05 ms.
set -u
export PYTHONUNBUFFERED=1
new=$PWD
old=$PWD/.gl/old3
timeout 240 env PYTHONPATH=$new python3 -m pytest -q -rA --tb=short -m gpu tests/test_sea_encoder.py \
  tests/test_favor_dense.py -p no:cacheprovider >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "passed|failed|Error" "$OUT/gpu-tests.txt" | cut -c1-200 | tail -n 4
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for v in "64k-old:$old:65536" "64k-new:$new:65536" "64k-old2:$old:65536" "8k-old:$old:8192" "8k-new:$new:8192"; do
  IFS=: read -r name tree T <<<"$v"
  (cd "$tree" && timeout 100 env PYTHONPATH="$tree" python3 "$tree/scripts/profile_sea.py" --T "$T" \
    --opts "$fast" --top 30 --iters 20) >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall" "$OUT/profile-$name.txt" | cut -c1-110 | head -n 1
done
