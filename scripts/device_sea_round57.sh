#!/usr/bin/env bash
# Issue 7, twelfth session, call 4: round56's change with the key pass back on fp32 keys (favor_dense.KEY_FP32: call 3
# measured the key pass 1.54 -> 1.79 ms reading bf16 keys), at the session's final tree:
#   1. GPU tests (encoder, favor_dense) -> $OUT/gpu-tests.txt
#   2. A/B/A profiles of the bidirectional forward at 64k against a436386 (.gl/old3) -> $OUT/profile-*.txt
#   3. quality gate on real bidirectional q/k/v (MiniLM-L6 capture, .carry/capbi), old and new -> $OUT/fidelity.txt
#   4. the forward table, both directions, 8k-64k: cuDNN, SEA fast eager, SEA fast + cuda_graph=32768 -> $OUT/fwd/
# Predictions: bidirectional 64k kernels 11.30 -> ~10.9 ms (call 3's -0.26 plus the key pass's -0.25, less ~0.1 of
# key copy); fidelity: the same mean error to ~1e-5 relative (rounding-level differences); causal rows as call 2's.
set -u
export PYTHONUNBUFFERED=1
new=$PWD
old=$PWD/.gl/old3
timeout 150 env PYTHONPATH=$new python3 -m pytest -q -rA --tb=short -m gpu tests/test_sea_encoder.py \
  tests/test_favor_dense.py -p no:cacheprovider >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "passed|failed|Error" "$OUT/gpu-tests.txt" | cut -c1-200 | tail -n 4
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for v in "64k-old:$old" "64k-new:$new" "64k-old2:$old"; do
  IFS=: read -r name tree <<<"$v"
  (cd "$tree" && timeout 80 env PYTHONPATH="$tree" python3 "$tree/scripts/profile_sea.py" --T 65536 \
    --opts "$fast" --top 30 --iters 20) >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall" "$OUT/profile-$name.txt" | cut -c1-110 | head -n 1
done
cap=$new/.carry/capbi/minilm-512x2.safetensors
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:sparse_pieces=1
for v in "old:$old" "new:$new"; do
  IFS=: read -r name tree <<<"$v"
  (cd "$tree" && timeout 90 env PYTHONPATH="$tree" python3 -c "import sys, torch
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
from harness.cli import main
sys.exit(main(sys.argv[1:]))" fidelity --capture-in "$cap" --dtype bf16 --device cuda --out /tmp/fid-$name --quiet \
    --methods $f,$f:compile=estimator) >/dev/null 2>&1
  echo "fidelity $name exit $?"
  python3 - "$name" <<'PY' >>"$OUT/fidelity.txt" 2>&1
import json, sys
for line in open(f"/tmp/fid-{sys.argv[1]}/rows.jsonl"):
    r = json.loads(line)
    lay = (r.get("extra") or {}).get("layer")
    print(sys.argv[1], r["method"], r["config"].get("compile"), "layer", lay, r.get("status"), "rel L2",
          r.get("err_rel_l2"), "KL", r.get("attn_kl"))
PY
done
grep -E "layer mean" "$OUT/fidelity.txt" | cut -c1-160
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwd 200 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,$g,$g:cuda_graph=32768 --seq-lens 8192,16384,32768,65536 \
  --both-directions --mode fwd --rep-ms 50 --timeout 150 | tail -n 2
python3 scripts/ratio_table.py "$OUT/fwd/rows.jsonl"
