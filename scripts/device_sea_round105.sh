#!/usr/bin/env bash
# Issue 7, nineteenth session, call 4 (results/nvidia-h200/sea-offsets/call4/): scripts/profile_sea.py --sites with the
# profiler's verbose config (call 3's stacks came back empty): SEA's 8k bidirectional forward, every host operation
# with the project lines that launched its kernels, so that the next session can name the ~58 small launches.
# Prediction (written before the run): the sites name methods/sea/layer.py, methods/sea/shared.py and
# methods/sea/estimator.py lines for the aten launches (copies, fills, index arithmetic).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
timeout 80 python3 scripts/profile_sea.py --T 8192 --opts $o --top 10 --sites 70 > "$OUT/sites-8192.txt" 2>&1
echo "rc $?"; grep -c "<- methods\|<- kernels\|<- harness" "$OUT/sites-8192.txt"; grep "<-" "$OUT/sites-8192.txt" | head -n 12 | cut -c1-150
