#!/usr/bin/env bash
# Issue 7, twenty-third session, call 2 (results/nvidia-h200/sea-graph-call/call1/): where the bidirectional 8k
# call's time goes outside the kernels. The table's SEA (sea-vs-dense-11: 0.696 ms against 0.626 ms of kernels) runs
# as a CUDA-graph replay behind the finite-input check, three copies of q, k, v into the graph's inputs and a clone
# of its output. This call: (1) SEA's 8k forward with the table's options incl. cuda_graph=16384 under the profiler,
# kernel table and a Chrome trace of one call (gaps between kernels, the host's share); (2) the eager forward with
# the project lines behind each small launch (--sites); (3) the harness's 8k cell for cuDNN and SEA (do_bench, as
# the table times it). Predictions (before the run): kernels in the graph call ~0.612 + check 0.015 + copies ~0.03 +
# clone ~0.01 = ~0.67 ms; harness SEA ~0.685 ms, cuDNN ~0.568 (ratio ~1.21x).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel
timeout 120 python3 scripts/profile_sea.py --T 8192 --opts $o,cuda_graph=16384 --top 45 --iters 20 \
  --trace "$OUT/trace-graph-8192.json" > "$OUT/profile-graph-8192.txt" 2>&1
grep -E "wall|kernels sum" "$OUT/profile-graph-8192.txt"
timeout 120 python3 scripts/profile_sea.py --T 8192 --opts $o --top 45 --sites 45 > "$OUT/profile-sites-8192.txt" 2>&1
grep -E "wall|kernels sum" "$OUT/profile-sites-8192.txt"
S=sea:${o//,/:}:cuda_graph=16384
timeout 200 python3 -m harness run --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --methods sdpa:backend=cudnn,$S --seq-lens 8192 --bidirectional --mode fwd --rep-ms 50 \
  --timeout 120 --out "$OUT/harness8k" > "$OUT/harness8k.txt" 2>&1
tail -n 6 "$OUT/harness8k.txt" | cut -c1-200
