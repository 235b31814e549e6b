#!/usr/bin/env bash
# Issue 7, twenty-fourth session, call 10 (results/nvidia-h200/sea-vs-dense-14/repeat/): round127's table again for
# cuDNN, SDPA-flash and SEA at nbf 1 and 8 (the 8k margin it measured for nbf=8 was 0.562 against 0.570 ms, 1.4 %:
# is it there in a second run on a fresh machine?). Predictions (before the run): 8k nbf=8 0.98-0.99x cuDNN, nbf=1
# ~1.13x; 16k / 64k as in round127 within ~2 %.
set -u
export PYTHONUNBUFFERED=1
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
g=$g:shared_keys=64:cuda_graph=16384:encoder_operands=bf16:identity_values=kernel
bash scripts/device_sweep.sh repeat 300 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g,$g:nbf=8 \
  --seq-lens 8192,16384,65536 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 5
python3 scripts/ratio_table.py "$OUT/repeat/rows.jsonl"
