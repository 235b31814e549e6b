#!/usr/bin/env bash
# Issue 7, for the next lease (one lent single-GPU machine, bf16, B=1, H=16, D=64, causal): the key-major sparse
# backward (kernels/sea_sparse_rows_bwd.py, BACKWARD="keys": dq by the row kernel without atomics, dk / dv over the
# lists transposed to key order, no atomics), written after the eighth session's last GPU call.
#   1. GPU tests of kernels/sea_sparse_rows_bwd.py: gradients of every backward against the row kernel's, timings at
#      8k (rows / row / row with heads fastest / keys) -> $OUT/gpu-tests.txt
#   2. profile_sea --backward at 32k, SEA fast + compile, BACKWARD row / keys / row (A/B/A)
#      -> $OUT/profile-fwdbwd-{row,keys,row2}.txt (prediction: the sparse backward 5.5 -> ~4.5 ms, +-1.5; the
#      sort and the searchsorted show as their own kernels); the first (row) also lists the host operations by device
#      time (--ops: which step of the layer the small kernels serve) and writes a trace of one step
#      ($OUT/trace-fwdbwd-row.json.gz: launch gaps, host syncs)
# If keys wins in both, make it the default (BACKWARD) and re-run the fwd+bwd table of round32.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_sparse_rows_bwd.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 8
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator
for v in row:row keys:keys row2:row; do
  name=${v%%:*}; bwd=${v#*:}; extra=()
  [ "$name" = row ] && extra=(--ops 80 --trace "$OUT/trace-fwdbwd-row.json")
  timeout 200 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 --iters 10 \
    --set kernels.sea_sparse_rows_bwd.BACKWARD=$bwd "${extra[@]}" >"$OUT/profile-fwdbwd-$name.txt" 2>&1
  echo "profile $name exit $?"; sed -n 3,12p "$OUT/profile-fwdbwd-$name.txt" | cut -c1-140
done
[ -f "$OUT/trace-fwdbwd-row.json" ] && gzip "$OUT/trace-fwdbwd-row.json"
