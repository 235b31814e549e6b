#!/usr/bin/env bash
# Issue 7, twenty-first session, call 3 (results/nvidia-h200/sea-bf16-encoder/call3/): the bidirectional table (the
# sea-vs-dense-9 command) with SEA as committed, with identity_values=kernel, with encoder_operands=bf16 (the head's
# weight rounded once on the host) and with both, in one run. Predictions (written before the run, after call2's
# profiles were not yet seen): 8k 1.528x (sea-vs-dense-9) -> ~1.42x committed, ~1.40x identity, ~1.33x bf16, ~1.31x
# both; 64k 0.138x -> ~0.13x; 256k ~0.032x.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
g=$g:shared_keys=64:cuda_graph=16384
b=encoder_operands=bf16
bash scripts/device_sweep.sh table 450 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$g,$g:identity_values=kernel,$g:$b,$g:$b:identity_values=kernel \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 8
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
