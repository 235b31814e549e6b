#!/usr/bin/env bash
# Issue 7, fourteenth session, call 7 (results/nvidia-h200/sea-bidir-mix/call7/): the bidirectional decoder with
# channels-last activations (methods/sea/estimator.py: BIDIR_CHANNELS_LAST, off by default), against the default
# layout, whose NCHW tensors reach cuDNN's NHWC convolutions through ~1.5 ms of compiled permutes and copies at 64k
# (call 2's profile). 1. Profiles of the 64k bidirectional shared-keys row, default and channels-last. 2. The
# bidirectional table (8k, 16k, 64k) twice: the default, then channels-last (set before the harness starts).
# Predictions (written before the run): the copies 1.5 -> ~0.8 ms: 64k 0.195x -> ~0.18x, 16k 0.91x -> ~0.87x,
# 8k ~2.25x; errors equal to ~1e-5 relative.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
f=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
for cl in False True; do
  timeout 70 python3 scripts/profile_sea.py --T 65536 --opts "$f" --top 16 --iters 20 \
    --set methods.sea.estimator.BIDIR_CHANNELS_LAST=$cl >"$OUT/profile-65536-bidir-cl-$cl.txt" 2>&1
  echo "profile exit $?"; sed -n 4,16p "$OUT/profile-65536-bidir-cl-$cl.txt" | cut -c1-110
done
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
args="--device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 \
  --methods sdpa:backend=cudnn,$g:shared_keys=64:cuda_graph=16384 --seq-lens 8192,16384,65536 --bidirectional \
  --mode fwd --rep-ms 50 --timeout 100"
timeout -s INT 120 python3 -m harness run --out "$OUT/default" --quiet $args; echo "exit $?"
python3 scripts/ratio_table.py "$OUT/default/rows.jsonl"
timeout -s INT 120 python3 -c "import sys, methods.sea.estimator as e; e.BIDIR_CHANNELS_LAST = True; \
from harness.cli import main; sys.exit(main(sys.argv[1:]))" run --out "$OUT/channels-last" --quiet $args
echo "exit $?"; python3 scripts/ratio_table.py "$OUT/channels-last/rows.jsonl"
