#!/usr/bin/env bash
# Issue 7, twenty-fifth session, call 9 (results/nvidia-h200/sea-rows/call9/): call 8's int64 cell geometry cost the
# shared-key kernel 8 % (0.060 -> 0.065 ms at 8k, 0.439 -> 0.474 at 64k); it is now a constexpr form (WIDE) taken only
# where 2 K (T + 1) passes 2^31. GPU tests (the 8M + 64 rows test takes WIDE) and the 8k / 64k profiles again.
# Predictions (before the run): tests pass; the kernel back to ~0.060 / ~0.44 ms.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_sea_shared.py -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 6
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel,nbf=8
for T in 8192 65536; do
  f=$OUT/profile-$T-nbf8.txt
  timeout 60 python3 scripts/profile_sea.py --T $T --opts $o --top 6 --iters 20 > "$f" 2>&1
  echo "T=$T $(grep -m1 'kernels sum' "$f" | sed -E 's/.*(kernels sum [0-9.]+ ms).*/\1/') $(grep -m1 '_shared_fwd' "$f")"
done
