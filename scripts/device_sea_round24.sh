#!/usr/bin/env bash
# Issue 7, seventh session, last lease (one lent single-GPU machine, bf16, B=1, H=16, D=64): estimator_dtype=bf16
# for causal calls (the compiled PyTorch decoder under bf16 autocast measured faster than the fp32 decoder kernel in
# the table, sea-vs-dense-4/):
#   1. quality gate on real causal q/k/v (SmolLM2-135M capture carried in .carry/cap, TF32 flags off first): SEA
#      fast's estimator with and without estimator_dtype=bf16 -> $OUT/fidelity*.txt
#   2. causal CUDA-graph replay at 16k / 64k / 256k: cuDNN, SEA fast, SEA fast + estimator_dtype=bf16
#      -> $OUT/causal-graphs/
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
cap=$(ls .carry/cap/*.safetensors | head -n 1)
f=sea:performer_dtype=bf16:estimator_precision=tf32
timeout 120 python3 -c "import sys, torch
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
from harness.cli import main
sys.exit(main(sys.argv[1:]))" fidelity --capture-in "$cap" --dtype bf16 --device cuda --out /tmp/fidelity --quiet \
  --methods $f,$f:estimator_dtype=bf16 >"$OUT/fidelity.txt" 2>&1
echo "fidelity exit $?"; grep -E "mean|Error" "$OUT/fidelity.txt" | cut -c1-70 | tail -n 4
python3 - <<'PY' >"$OUT/fidelity-layers.txt" 2>&1
import json
for line in open("/tmp/fidelity/rows.jsonl"):
    if line.strip():
        r = json.loads(line)
        print(json.dumps({k: r.get(k) for k in ("method", "config", "layer", "err_rel_l2", "status")}))
PY
echo "layers $(wc -l <"$OUT/fidelity-layers.txt")"
fast=sea:performer_dtype=bf16:compile=estimator:estimator_precision=tf32
bash scripts/device_sweep.sh causal-graphs 150 --device cuda --cuda-graph \
  --methods sdpa:backend=cudnn,$fast,$fast:estimator_dtype=bf16 \
  --method-args sea.max_len=262144 --seq-lens 16384,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --causal --mode fwd --rep-ms 100 --timeout 200
