#!/usr/bin/env bash
# Issue 7, seventh session, fifth lease (one lent single-GPU machine, bf16, B=1, H=16, D=64, bidirectional):
#   1. SEA fast (auto: torch mix), with the rows kernel's mix epilogue (mix_backend=triton), and with the decoder
#      under bf16 autocast (estimator_dtype=bf16), beside cuDNN: eager 8k / 64k / 256k -> $OUT/bidir/;
#      CUDA-graph replay 8k / 16k / 64k -> $OUT/bidir-graphs/
#   2. their quality on real bidirectional q/k/v (MiniLM capture, TF32 flags off first) -> $OUT/fidelity/
#   3. kernel profile of the whole bidirectional forward at 64k with the mix epilogue -> $OUT/profile-bidir-64k.txt
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=sea:performer_dtype=bf16:compile=estimator:estimator_precision=tf32
bash scripts/device_sweep.sh bidir 160 --device cuda \
  --methods sdpa:backend=cudnn,$fast:mix_backend=triton,$fast,$fast:estimator_dtype=bf16 \
  --method-args sea.max_len=262144 --seq-lens 8192,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --bidirectional --mode fwd --rep-ms 200 --timeout 240
bash scripts/device_sweep.sh bidir-graphs 120 --device cuda --cuda-graph \
  --methods sdpa:backend=cudnn,$fast:mix_backend=triton,$fast,$fast:estimator_dtype=bf16 \
  --method-args sea.max_len=65536 --seq-lens 8192,16384,65536 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --bidirectional --mode fwd --rep-ms 100 --timeout 200
cap=$(ls .carry/capbi/*.safetensors | head -n 1)
f=sea:performer_dtype=bf16:estimator_precision=tf32
timeout 90 python3 -c "import sys, torch
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
from harness.cli import main
sys.exit(main(sys.argv[1:]))" fidelity --capture-in "$cap" --dtype bf16 --device cuda --out /tmp/fidelity --quiet \
  --methods $f,$f:mix_backend=triton,$f:estimator_dtype=bf16 >"$OUT/fidelity.txt" 2>&1
echo "fidelity exit $?"; grep -E "mean|Error" "$OUT/fidelity.txt" | cut -c1-70 | tail -n 4
python3 - <<'PY' >"$OUT/fidelity-layers.txt" 2>&1
import json
rows = [json.loads(l) for l in open("/tmp/fidelity/rows.jsonl") if l.strip()]
for r in rows:
    print(json.dumps({k: r.get(k) for k in ("method", "config", "layer", "err_rel_l2", "status", "extra")})[:600])
PY
echo "layers $(wc -l <"$OUT/fidelity-layers.txt")"
timeout 70 python3 scripts/profile_sea.py --T 65536 --iters 5 --warmup 2 --top 30 \
  --opts performer_dtype=bf16,compile=estimator,estimator_precision=tf32,mix_backend=triton \
  >"$OUT/profile-bidir-64k.txt" 2>&1
echo "bidir profile exit $?"; grep -E "wall" "$OUT/profile-bidir-64k.txt"
