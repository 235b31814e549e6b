#!/usr/bin/env bash
# Issue 7, twenty-fourth session, call 11 (results/nvidia-h200/sea-nbf/call4/): the GPU tests of kernels/sea_conv3x3.py
# after the review's refactor (one import, input checks in one helper, TAIL_SPLIT 2), and SEA's 8k / 64k profiles at
# nbf=8 (the table's option, not profiled in call 4). Predictions (before the run): tests pass; 8k kernels ~0.50 ms
# (key pass ~0.04, query ~0.04, combine ~0.011), 64k ~3.2.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 100 python3 -m pytest -q -m gpu tests/test_sea_conv3x3.py -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 6
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel,nbf=8
for T in 8192 65536; do
  f=$OUT/profile-$T-nbf8.txt
  timeout 80 python3 scripts/profile_sea.py --T $T --opts $o --top 14 --iters 20 > "$f" 2>&1
  echo "T=$T nbf=8: kernels $(grep -m1 'kernels sum' "$f" | sed -E 's/.*kernels sum ([0-9.]+) ms.*/\1/')" \
    "key $(grep -m1 '_key_pf_kernel' "$f" | awk '{print $1}') query $(grep -m1 '_query_kernel' "$f" | awk '{print $1}')" \
    "combine $(grep -m1 '_combine_kernel' "$f" | awk '{print $1}') $(grep -o 'nb_features=[0-9]*' "$f" | head -1)"
  grep -q 'kernels sum' "$f" || tail -n 3 "$f" | cut -c1-200
done
