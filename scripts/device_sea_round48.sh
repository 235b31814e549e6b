#!/usr/bin/env bash
# Issue 7, eleventh session, second lease (one lent single-GPU machine, bf16, B=1, H=16, D=64, causal forward):
#   1. GPU tests: the decoder head in the fused front's epilogue (kernels/sea_favor_encoder.py head=) against
#      head_ref on the kernel's own z; SEA fast with the head fused, eager and compiled -> $OUT/gpu-tests.txt
#   2. per-kernel profiles at 64k and 16k of SEA fast + compile + pieces=1: the tree before this session's changes
#      (af7ed4b, carried in .gl/old) against this tree, A/B/C/A at 64k (C: this tree with FUSED_HEAD off)
#      -> $OUT/profile-*.txt
#   3. quality gate on real causal q/k/v (SmolLM2-135M capture carried in .carry/cap): SEA fast, old and new tree
#      -> $OUT/fidelity-*.txt
# Predictions (64k, kernels 4.81 ms in call 1): the head in the front removes the z cast (0.18 ms) and the row
# projection GEMM (0.085 ms) and writes 67 MB of bf16 instead of 537 MB of fp32 z (~-0.1 ms in the output kernel,
# if the epilogue's extra dot costs less); conv3 before the x4 widening cuts its GEMM 0.11 -> ~0.03 ms; the softmax
# inside the compiled graph fuses with norm_out (0.15 ms softmax + ~0.1 ms of norm_out kernels -> ~0.12 ms).
# In all 4.81 -> ~4.3 ms (-0.5 +-0.15); 16k about a quarter of that. Quality: the per-layer rel L2 of SEA fast
# unchanged to ~1e-4 relative (the head's summation order only).
set -u
export PYTHONUNBUFFERED=1
new=$PWD
old=$PWD/.gl/old
timeout 300 env PYTHONPATH=$new python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_favor_encoder.py \
  tests/test_sea_estimator_precision.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E "head|compile=|passed|failed|Error" "$OUT/gpu-tests.txt" | cut -c1-200 | tail -n 8
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for v in "64k-old:$old:65536:" "64k-new:$new:65536:--ops 40" \
         "64k-nohead:$new:65536:--set methods.sea.estimator.FUSED_HEAD=False" "64k-old2:$old:65536:" \
         "16k-old:$old:16384:" "16k-new:$new:16384:"; do
  IFS=: read -r name tree T extra <<<"$v"
  (cd "$tree" && timeout 100 env PYTHONPATH="$tree" python3 "$tree/scripts/profile_sea.py" --T "$T" --causal \
    --opts "$fast" --top 30 --iters 20 $extra) >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall|_fe_output|softmax|to_copy_0" "$OUT/profile-$name.txt" \
    | cut -c1-100 | head -n 5
done
cap=$(ls "$new"/.carry/cap/*.safetensors | head -n 1)
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16
for tree in old new; do
  dir=$new; [ "$tree" = old ] && dir=$old
  (cd "$dir" && timeout 150 env PYTHONPATH="$dir" python3 -c "import sys, torch
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
from harness.cli import main
sys.exit(main(sys.argv[1:]))" fidelity --capture-in "$cap" --dtype bf16 --device cuda --out /tmp/fid-$tree --quiet \
    --methods $f,$f:sparse_pieces=1) >"$OUT/fidelity-$tree.txt" 2>&1
  echo "fidelity $tree exit $?"
  python3 - "$tree" <<'PY' >>"$OUT/fidelity-$tree.txt" 2>&1
import json, sys
for line in open(f"/tmp/fid-{sys.argv[1]}/rows.jsonl"):
    r = json.loads(line)
    ex = r.get("extra") or {}
    print(sys.argv[1], r["method"], r["config"].get("sparse_pieces"), "layer", ex.get("layer"), r.get("status"),
          "rel L2", r.get("err_rel_l2"), "KL", r.get("attn_kl"), r.get("impl", "")[-60:])
PY
  grep -E "layer mean" "$OUT/fidelity-$tree.txt" | cut -c1-200
done
