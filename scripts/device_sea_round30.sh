#!/usr/bin/env bash
# Issue 7, eighth session: the rows backward rewritten (dk / dv per entry from the gathered q / dout rows, no
# tensor-core products for them; the first version took 10.2 ms against the row kernel's 5.6 at 32k) and the mixed
# form (rows forward with lse + the row kernel's backward). 32k causal, bf16, B=1, H=16, D=64.
#   1. GPU tests of kernels/sea_sparse_rows_bwd.py (timings of the three backwards at 8k) -> $OUT/gpu-tests.txt
#   2. profile_sea --backward, SEA fast + compile on backend=triton_rows with BACKWARD=rows / row
#      -> $OUT/profile-fwdbwd-*.txt (prediction: rows backward 10.2 -> ~4-5 ms; mixed: forward 1.77 -> 1.12 ms,
#      backward as the row kernel's 5.6 ms)
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_sparse_rows_bwd.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 8
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,backend=triton_rows
for bwd in rows row; do
  timeout 150 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 \
    --set kernels.sea_sparse_rows_bwd.BACKWARD=$bwd >"$OUT/profile-fwdbwd-$bwd.txt" 2>&1
  echo "profile $bwd exit $?"; sed -n 3,10p "$OUT/profile-fwdbwd-$bwd.txt" | cut -c1-140
done
