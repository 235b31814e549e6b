#!/usr/bin/env bash
# Issue 7, fifteenth session, call 5 (results/nvidia-h200/sea-vs-dense-5/): the table and plots for the
# configurations that meet its goals, from one harness command: cuDNN SDPA and SDPA-flash beside SEA fast with shared
# keys (strided: the bidirectional best) and with key blocks on FlexAttention (the causal best), both directions,
# T = 8k, 16k, 64k, 256k; then the report (tables, latency / memory plots) and the stage plot.
# Predictions (written before the run): causal key blocks ~0.78x / ~0.16x / ~0.037x cuDNN at 16k / 64k / 256k;
# bidirectional strided ~2.1x / ~0.85x / ~0.18x at 8k / 16k / 64k, ~0.05x at 256k; memory 6-11x cuDNN's.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
m=sdpa:backend=cudnn,sdpa:backend=flash,$g:shared_keys=64:cuda_graph=16384,$g:shared_keys=64:shared_span=blocks:cuda_graph=16384
bash scripts/device_sweep.sh table "${1:-470}" --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods $m --seq-lens 8192,16384,65536,262144 --both-directions --mode fwd \
  --rep-ms 50 --timeout 120 | tail -n 8
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
python3 -m harness report "$OUT/table" >/dev/null 2>&1; echo "report exit $?"
python3 scripts/plot_sea_stages.py "$OUT/table" --out "$OUT/stages-table.png" >/dev/null 2>&1; echo "stages exit $?"
