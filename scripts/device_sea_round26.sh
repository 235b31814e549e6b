#!/usr/bin/env bash
# Issue 7, for the next lease (one lent single-GPU machine, bf16, B=1, H=16, D=64): what the seventh session wrote
# after its last GPU call.
#   1. GPU tests: the radix-select top-k timed at 134M cells with the module's own tiles (the seventh session's run
#      of this test had the CPU tests' tiny tiles: void), the rows kernel (with its mix epilogue) -> $OUT/gpu-tests.txt
#   2. bidirectional SEA fastest in 64 query blocks, CSR lists by the interpolation kernels (interp_backend=auto, now
#      taken by the blocks on CUDA) against the tensor ops (interp_backend=torch), 64k / 256k / 1M, beside SDPA-flash
#      -> $OUT/bidir-blocks/ (prediction: memory unchanged at <= 256k, lower per-block peaks where blocks select many
#      cells; time -5..-20 % from dropping nonzero / repeat_interleave over each block's keys)
#   3. the bidirectional fit probe again from 8M: does 16M fit now? -> $OUT/fit-bidir-blocks.jsonl
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_topk_global.py tests/test_sea_sparse_rows.py \
  >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 8
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:query_blocks=64
bash scripts/device_sweep.sh bidir-blocks 200 --device cuda \
  --methods sdpa:backend=flash,$f,$f:interp_backend=torch \
  --method-args sea.max_len=1048576 --seq-lens 65536,262144,1048576 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --bidirectional --mode fwd --rep-ms 20 --timeout 240
timeout 200 python3 scripts/fit_probe.py --methods $f --start 8388608 --stop 16777216 --max-sec 60 \
  --out "$OUT/fit-bidir-blocks.jsonl" 2>&1 | tail -n 6
