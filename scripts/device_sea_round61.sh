#!/usr/bin/env bash
# Issue 7, thirteenth session, call 1: shared-key selection (sea.shared_keys, methods/sea/shared.py and
# kernels/sea_shared_attention.py): blocks of 64 query rows attend one set of cells (chosen on A_hat pooled over the
# block, shared_budget times a row's budget) plus their own keys; no CSR lists, one tensor-core kernel.
# 1. GPU tests of the option -> $OUT/gpu-tests.txt.
# 2. Kernel profiles, causal 16k and 64k: SEA fast (per-row) against shared_keys=64 at budget 2 and 4, and the block
#    scores' pooling (rebin's scatter_add against a plain sum) at 64k -> $OUT/profile-*.txt.
# Predictions (written before the run), kernels per forward: 16k per-row 1.48 ms -> shared ~0.75-0.9 (top-k 0.08,
# CSR lists ~0.2 and the rows kernel 0.49 go; block scores ~0.05-0.1, the shared kernel ~0.05-0.1 come); 64k 4.07 ->
# ~3.0-3.2 (rows 0.87, CSR 0.4, top-k 0.23 go; rebin scatter ~0.2, kernel ~0.2-0.3 come); budget 4 costs the kernel
# ~1.5-2x of budget 2's time.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_sea_shared.py -p no:cacheprovider 2>&1 | tail -n 15 | tee "$OUT/gpu-tests.txt"
f=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for T in 16384 65536; do
  for v in "rows:" "shared2:,shared_keys=64,shared_budget=2" "shared4:,shared_keys=64,shared_budget=4"; do
    IFS=: read -r name extra <<<"$v"
    timeout 100 python3 scripts/profile_sea.py --T $T --causal --opts "$f$extra" --top 16 --iters 20 \
      >"$OUT/profile-$T-$name.txt" 2>&1
    echo "profile $T $name exit $?"; grep -E "wall" "$OUT/profile-$T-$name.txt" | head -n 1 | cut -c1-120
  done
done
timeout 100 python3 scripts/profile_sea.py --T 65536 --causal --opts "$f,shared_keys=64,shared_budget=2" --top 16 \
  --iters 20 --set methods.sea.shared.SCORE_POOL=sum >"$OUT/profile-65536-shared2-sum.txt" 2>&1
echo "profile 65536 shared2 sum exit $?"; grep -E "wall" "$OUT/profile-65536-shared2-sum.txt" | head -n 1 | cut -c1-120
