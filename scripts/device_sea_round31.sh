#!/usr/bin/env bash
# Issue 7, eighth session, last lease: the training goal's table after this session's changes, and two program-order
# probes of the sparse backward. bf16, B=1, H=16, D=64, causal.
#   1. GPU tests of kernels/sea_sparse_rows_bwd.py: backward timings at 8k (rows; row kernel t-major; row kernel with
#      (b, h) fastest) -> $OUT/gpu-tests.txt
#   2. profile_sea --backward at 32k, SEA fast + compile (auto: rows forward + row kernel's backward), the row
#      backward t-major vs heads fastest, and the rows backward with all 16 heads interleaved
#      -> $OUT/profile-fwdbwd-*.txt (prediction, a guess: heads fastest cuts the 5.5 ms backward if same-address
#      atomics of neighbouring rows are what bounds it; nothing changes if it is the atomics' count)
#   3. the harness fwd+bwd table at 16k / 32k / 64k: SDPA-flash, cuDNN, SEA defaults, SEA fast + compile
#      -> $OUT/fwdbwd/
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_sparse_rows_bwd.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 8
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator
for v in auto:kernels.sea_sparse_attention.ROW_BWD_HEADS_FAST=False \
         headsfast:kernels.sea_sparse_attention.ROW_BWD_HEADS_FAST=True \
         rows-hg16:kernels.sea_sparse_rows_bwd.BACKWARD=rows; do
  name=${v%%:*}; set1=${v#*:}
  extra=""; [ "$name" = "rows-hg16" ] && extra="--set kernels.sea_sparse_rows.HEAD_GROUP=16"
  timeout 150 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 \
    --set "$set1" $extra >"$OUT/profile-fwdbwd-$name.txt" 2>&1
  echo "profile $name exit $?"; sed -n 3,9p "$OUT/profile-fwdbwd-$name.txt" | cut -c1-140
done
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh fwdbwd 280 --device cuda \
  --methods sdpa:backend=flash,sdpa:backend=cudnn,sea,$f --method-args sea.max_len=65536 \
  --seq-lens 16384,32768,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 \
  --timeout 150
