#!/usr/bin/env bash
# Issue 7, twelfth session, call 1: in-method CUDA-graph replay (sea.cuda_graph, methods/sea/graphs.py).
# 1. GPU tests of the option -> $OUT/gpu-tests.txt.
# 2. One harness command, both directions, 8k-64k: cuDNN, SEA fast + compile + pieces=1 eager, and the same with
#    cuda_graph=65536 (every T replayed) -> $OUT/fwd/.
# Predictions (written before the run): causal 16k 2.0-2.6x cuDNN eager -> ~1.3x with the graph (kernels ~1.55 ms,
# +~0.1 ms of input / output copies and the finite check); causal 8k ~10x -> ~3x; bidirectional 8k ~7.4x -> ~3.4x;
# 64k both directions: the graph loses ~0.1-0.2 ms (four 134 MB copies against ~0.06 ms of host time saved).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_sea_graphs.py -p no:cacheprovider 2>&1 | tail -n 25 | tee "$OUT/gpu-tests.txt"
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwd 420 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,$f,$f:cuda_graph=65536 --seq-lens 8192,16384,32768,65536 \
  --both-directions --mode fwd --rep-ms 50 --timeout 150 | tail -n 8
python3 scripts/ratio_table.py "$OUT/fwd/rows.jsonl"
