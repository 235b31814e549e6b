#!/usr/bin/env bash
# Issue 7, eleventh session, last lease: the fused front's output kernel with one chunk per group in straight-line
# code (k, V_I and v loads issued with the scanned state's, the chunk's v rows reused by the encoder; GROUP > 1 keeps
# the loop), against the tree before it (522117f, carried in .gl/old2), bf16, B=1, H=16, D=64, causal forward:
#   1. GPU tests of the front (both paths against the float64 reference and SEA's composition) -> $OUT/gpu-tests.txt
#   2. profiles at 64k, A/B/A (old / new / old) -> $OUT/profile-*.txt
#   3. quality gate on real causal q/k/v (SmolLM2 capture in .carry/cap), new tree -> $OUT/fidelity-new.txt
#   4. the causal forward table (cuDNN, SEA fast + compile + pieces=1; 8k, 16k, 64k), one harness command -> $OUT/fwd/
# Prediction: _fe_output_kernel 1.23 -> ~1.13 ms (-0.1 +- 0.1: one dependent load chain fewer per program).
set -u
export PYTHONUNBUFFERED=1
new=$PWD
old=$PWD/.gl/old2
timeout 150 env PYTHONPATH=$new python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_favor_encoder.py \
  >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "passed|failed|Error" "$OUT/gpu-tests.txt" | cut -c1-200 | tail -n 4
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for v in "64k-old:$old" "64k-new:$new" "64k-old2:$old"; do
  IFS=: read -r name tree <<<"$v"
  (cd "$tree" && timeout 100 env PYTHONPATH="$tree" python3 "$tree/scripts/profile_sea.py" --T 65536 --causal \
    --opts "$fast" --top 30 --iters 20) >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall|_fe_output" "$OUT/profile-$name.txt" | cut -c1-100 | head -n 3
done
cap=$(ls "$new"/.carry/cap/*.safetensors | head -n 1)
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16
timeout 150 env PYTHONPATH="$new" python3 -c "import sys, torch
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
from harness.cli import main
sys.exit(main(sys.argv[1:]))" fidelity --capture-in "$cap" --dtype bf16 --device cuda --out /tmp/fid-new --quiet \
  --methods $f,$f:sparse_pieces=1 >"$OUT/fidelity-new.txt" 2>&1
echo "fidelity exit $?"
python3 - <<'PY' >>"$OUT/fidelity-new.txt" 2>&1
import json
for line in open("/tmp/fid-new/rows.jsonl"):
    r = json.loads(line)
    if (r.get("extra") or {}).get("layer") == "mean":
        print("new", r["method"], r["config"].get("sparse_pieces"), "layer mean", r.get("status"), "rel L2",
              r.get("err_rel_l2"), "KL", r.get("attn_kl"))
PY
grep -E "layer mean" "$OUT/fidelity-new.txt" | cut -c1-160
export PYTHONPATH=$new
bash scripts/device_sweep.sh fwd 120 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,$f:compile=estimator:sparse_pieces=1 \
  --seq-lens 8192,16384,65536 --causal --mode fwd --rep-ms 50 --timeout 150 | tail -n 2
python3 - "$OUT/fwd/rows.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(r["method"], r.get("seq_len"), r.get("status"), round(r.get("latency_ms") or -1, 3))
PY
