#!/usr/bin/env bash
# Issue 7, fifteenth session, calls 6 and 7 (results/nvidia-h200/sea-vs-dense-5/call6/, call7/): the cell recorded oom in
# the table (bidirectional key blocks at 256k: attention_probs built every row's lists, 130 GiB), after the fix
# (key_block_rows_mask), beside cuDNN; and the GPU tests of the key blocks.
# Predictions (written before the run): the cell runs ok, ~7776 MiB-class memory, ~0.045-0.05x cuDNN (bidirectional
# key blocks were 0.206x at 64k against strided 0.183x); the GPU tests pass.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 100 python3 -m pytest -q -m gpu tests/test_sea_flex_shared.py -p no:cacheprovider 2>&1 | tail -n 2 \
  | tee "$OUT/gpu-tests.txt"
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh bidir-blocks-256k 200 --device cuda --method-args sea.max_len=262144 --batch 1 \
  --heads 16 --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,$g:shared_keys=64:shared_span=blocks:cuda_graph=16384 \
  --seq-lens 262144 --bidirectional --mode fwd --rep-ms 50 --timeout 150 | tail -n 3
python3 scripts/ratio_table.py "$OUT/bidir-blocks-256k/rows.jsonl"
# Call 6 (at 3668d4b) was still oom: attention_probs on inputs the layer had not just run built every row's lists in
# its own pipeline; call 7 runs this script again after that fix (17a445c).
