#!/usr/bin/env bash
# Issue 7, sixteenth session, call 5 (results/nvidia-h200/sea-vs-dense-6/): the bidirectional table at the session's
# defaults (KEY_TAIL, the Triton combine with 4 features a program, POOLED_SCORES; the front and the in-kernel
# identity columns off), one harness command: cuDNN SDPA and SDPA-flash beside SEA fast with shared keys (strided,
# the bidirectional best), T = 8k, 16k, 64k, 256k; then the report and the stage plot.
# Predictions (written before the run): bidirectional 8k ~1.95x cuDNN (2.07x in sea-vs-dense-5; call 4's kernels
# 1.084 ms against 1.165 there), 16k ~0.83x (0.878x), 64k ~0.175x (0.183x), 256k ~0.04x (0.042x); peak memory
# at 64k ~1.8 GiB (1944 MiB), at 256k ~7.3 GiB (7776 MiB).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh table "${1:-380}" --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g:shared_keys=64:cuda_graph=16384 \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 6
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
python3 -m harness report "$OUT/table" >/dev/null 2>&1; echo "report exit $?"
python3 scripts/plot_sea_stages.py "$OUT/table" --out "$OUT/stages-table.png" >/dev/null 2>&1; echo "stages exit $?"
