#!/usr/bin/env bash
# Issue 7, twenty-third session, call 4 (results/nvidia-h200/sea-vs-dense-12/): the bidirectional table at this
# session's defaults (sea-vs-dense-11's command): KEY_EVEN_TILES on (key pass 0.101 -> 0.093 ms at 8k, 0.690 ->
# 0.659 at 64k; sea-key-pass-ncu/call7/), the replay's finite check copying q, k, v into the graph's inputs
# (COPY_IN_CHECK: the graph call's kernels 0.661 -> 0.646 ms at 8k; sea-graph-call/call2/). The harness's 8k cell at
# 8cec20d measured SEA 0.683 ms against cuDNN's 0.567 (1.204x; sea-graph-call/call1/).
# Predictions (before the run): 8k ~1.18x cuDNN (~0.668 ms), 16k ~0.50x, 64k ~0.106x, 256k ~0.0245x.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
g=$g:shared_keys=64:cuda_graph=16384:encoder_operands=bf16:identity_values=kernel
bash scripts/device_sweep.sh table 420 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 4
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
