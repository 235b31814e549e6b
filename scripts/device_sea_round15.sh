#!/usr/bin/env bash
# Issue 7, sixth session: estimator_precision=tf32 in the bidirectional Performer kernel (kernels/favor_dense.py)
#   1. its GPU test (one-pass precision beside the defaults; errors printed) -> $OUT/gpu-tests.txt
#   2. quality gate on real bidirectional q/k/v: all-MiniLM-L6 (6 layers, 2 x 512 tokens of WikiText-2 test, carried
#      in .carry/capbi), SEA bf16 with and without tf32 -> $OUT/fidelity/
#   3. bidirectional 64k / 256k beside cuDNN: SEA fast with estimator_precision fp32 and tf32 -> $OUT/bidir/
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 90 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_favor_dense.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "rel L2|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 8
cap=$(ls .carry/capbi/*.safetensors | head -n 1)
f=sea:performer_dtype=bf16
timeout 100 python3 -m harness fidelity --capture-in "$cap" --dtype bf16 --device cuda --out /tmp/fidelity --quiet \
  --methods $f,$f:estimator_precision=tf32 >"$OUT/fidelity.txt" 2>&1
echo "fidelity exit $?"; grep -E "mean|Error" "$OUT/fidelity.txt" | cut -c1-60 | tail -n 4
mkdir -p "$OUT/fidelity" && cp /tmp/fidelity/meta.json /tmp/fidelity/rows.jsonl "$OUT/fidelity/" 2>/dev/null
fast=sea:performer_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh bidir 150 --device cuda \
  --methods sdpa:backend=cudnn,$fast,$fast:estimator_precision=tf32 \
  --method-args sea.max_len=262144 --seq-lens 65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --bidirectional --mode fwd --rep-ms 20 --timeout 240
