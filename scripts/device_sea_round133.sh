#!/usr/bin/env bash
# Issue 7, twenty-fifth session, call 4 (results/nvidia-h200/sea-rows/call4/): (a) GPU tests of the estimator in blocks
# in both directions; (b) the causal latency configuration (key blocks on FlexAttention) with its estimator in 8 and 16
# blocks (SEAAttention._causal_block_scores) and the causal mix now writing into the sparse output, under the harness's
# graph replay; (c) the longest T that fits, bidirectional and causal, for SEA's block configurations (call 3's probe
# hit an illegal memory access at 4M: cuDNN's convolution on a decoder input of 2^31 + 49k elements; the blocks are now
# cut below that).
# Predictions (before the run): tests pass. Causal memory / SDPA-flash: whole key blocks ~5x (5.9x before the in-place
# mix), 8 blocks ~1.5-2x, 16 blocks ~1.3x; latency / cuDNN, replayed: whole 16k ~0.45x, 64k ~0.10x; 8 blocks 16k
# ~0.6x, 64k ~0.12x, 256k ~0.03x; 16 blocks 64k ~0.14x. Fit: both directions run at 4M and 8M, and fail at 16M (the
# inputs alone 96 GiB).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 120 python3 -m pytest -q -m gpu tests/test_sea_estimator_rows.py -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 6
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
f=$f:shared_keys=64:shared_span=blocks
bash scripts/device_sweep.sh causal 200 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --cuda-graph --methods sdpa:backend=cudnn,sdpa:backend=flash,$f,$f:query_blocks=8,$f:query_blocks=16 \
  --seq-lens 8192,16384,65536,262144 --mode fwd --rep-ms 50 --timeout 120 | tail -n 6
python3 scripts/ratio_table.py "$OUT/causal/rows.jsonl" | cut -c1-150
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
g=$g:shared_keys=64:encoder_operands=bf16:identity_values=kernel:nbf=8:query_blocks=8
timeout 110 python3 scripts/fit_probe.py --methods $g --start 4194304 --stop 16777216 --max-sec 60 \
  --out "$OUT/fit-bidir.jsonl" 2>&1 | tail -n 4 | cut -c1-160
timeout 110 python3 scripts/fit_probe.py --methods $f:query_blocks=8 --causal --start 4194304 --stop 16777216 \
  --max-sec 60 --out "$OUT/fit-causal.jsonl" 2>&1 | tail -n 4 | cut -c1-160
