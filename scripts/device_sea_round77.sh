#!/usr/bin/env bash
# Issue 7, fourteenth session, call 8 (results/nvidia-h200/sea-bidir-mix/call8/): the bidirectional table with the
# channels-last decoder as the default on CUDA (BIDIR_CHANNELS_LAST="auto"; call 7's harness table could not switch it: the harness times each cell in a
# worker process, which did not see the module setting; its profiles did: kernels 7.18 -> 6.85 ms at 64k).
# Predictions (written before the run): 64k 0.194x -> ~0.185x, 16k ~0.90x, 8k ~2.28x; errors as in call 7 to ~1e-5.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwd 200 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,$g:shared_keys=64:cuda_graph=16384 \
  --seq-lens 8192,16384,65536 --bidirectional --mode fwd --rep-ms 100 --timeout 100 | tail -n 1
python3 scripts/ratio_table.py "$OUT/fwd/rows.jsonl"
