#!/usr/bin/env bash
# Issue 7, twenty-fifth session, call 6 (results/nvidia-h200/sea-rows/call6/): after the bidirectional head kernel's
# head index became int64 (call 5: at T = 4M, heads 8-15 of a block read v at h x 2^28 elements, past 2^31: garbage,
# NaN scalers in heads 13 and 14), (a) the GPU tests, with one reading rows of [1, 16, 4M, .] tensors; (b) the 8k
# profile of the whole bidirectional call at nbf=8 (the head kernel took 0.112 ms in sea-nbf/call4/); (c) the
# bidirectional fit probe of the 8-block configuration, 4M to 16M; (d) the 8k / 64k rows of call 2 again (whole and 8
# blocks, graph replay) with the changed head.
# Predictions (before the run): tests pass; head kernel 0.112-0.118 ms at 8k; fit: 4M and 8M run with finite output,
# 16M out of memory (inputs 96 GiB); table as call 2 within ~3 % (whole 8k ~0.88x, 8 blocks 8k ~1.5x, 64k ~0.095x;
# memory 1.47x).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_sea_estimator_rows.py tests/test_sea_bidir_head_tail.py \
  -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 6
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel,nbf=8
f=$OUT/profile-8192-nbf8.txt
timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o --top 8 --iters 20 > "$f" 2>&1
grep -m1 'kernels sum' "$f"; grep -m1 '_head_kernel' "$f"
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
g=$g:shared_keys=64:encoder_operands=bf16:identity_values=kernel:nbf=8
timeout 120 python3 scripts/fit_probe.py --methods $g:query_blocks=8 --start 4194304 --stop 16777216 --max-sec 60 \
  --out "$OUT/fit-bidir.jsonl" 2>&1 | tail -n 3 | cut -c1-250
bash scripts/device_sweep.sh table 120 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --cuda-graph --methods sdpa:backend=cudnn,sdpa:backend=flash,$g,$g:query_blocks=8 \
  --seq-lens 8192,65536 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 3
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl" | cut -c1-130
