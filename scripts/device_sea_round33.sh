#!/usr/bin/env bash
# Issue 7, eighth session: does bidirectional SEA fastest in 64 query blocks fit T = 16M now that the blocks' CSR
# lists come from the interpolation kernels (out of memory at 16M in sea-vs-dense-4/fit-bidir-blocks.jsonl, built
# with block_csr's int64 tensor ops)? bf16, B=1, H=16, D=64 -> $OUT/fit-bidir-blocks-16m.jsonl
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 200 python3 scripts/fit_probe.py \
  --methods sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:query_blocks=64 \
  --start 16777216 --stop 16777216 --max-sec 120 --out "$OUT/fit-bidir-blocks-16m.jsonl" 2>&1 | tail -n 8
echo "fit exit $?"
