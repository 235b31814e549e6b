#!/usr/bin/env bash
# Issue 7, twenty-fifth session, call 3 (results/nvidia-h200/sea-rows/call3/): (a) the causal rows under the harness's
# graph replay: the latency configuration (key blocks on FlexAttention, whole call) beside the existing causal query
# blocks (per-row selection, every stage a block at a time) at 8 and 16 blocks, where call 2 of this session found the
# bidirectional estimator in 8 blocks at 1.47x SDPA-flash's memory; (b) the longest bidirectional T that fits for
# SDPA-flash and SEA's 8-block configuration (scripts/fit_probe.py, time-capped).
# Predictions (before the run): causal memory / SDPA-flash: whole key blocks ~6-11x (sea-vs-dense-5), 8 blocks
# ~1.3-1.6x, 16 blocks ~1.3x; latency / cuDNN, replayed: whole 16k ~0.75x, 64k ~0.15x; 8 blocks 16k ~1.5x, 64k
# ~0.2-0.3x, 256k ~0.05x; 16 blocks slower at every T. Fit: SEA 8 blocks runs at 8M and fails at 16M (its inputs
# alone are 96 GiB); SDPA-flash fits wherever its time allows (1M, 2M; 4M not tried: over a minute a call).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh causal 300 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --cuda-graph \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$f:shared_keys=64:shared_span=blocks,$f:query_blocks=8,$f:query_blocks=16 \
  --seq-lens 8192,16384,65536,262144 --mode fwd --rep-ms 50 --timeout 120 | tail -n 6
python3 scripts/ratio_table.py "$OUT/causal/rows.jsonl" | cut -c1-150
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
g=$g:shared_keys=64:encoder_operands=bf16:identity_values=kernel:nbf=8:query_blocks=8
timeout 230 python3 scripts/fit_probe.py --methods sdpa:backend=flash,$g --start 1048576 --stop 16777216 \
  --max-sec 60 --out "$OUT/fit-bidir.jsonl" 2>&1 | tail -n 14 | cut -c1-160
