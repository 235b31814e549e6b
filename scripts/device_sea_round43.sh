#!/usr/bin/env bash
# Issue 7, tenth session, third lease (one lent single-GPU machine, bf16, B=1, H=16, D=64):
#   1. the finite-check kernel in the forward (methods/sea/layer.py FINITE_KERNEL; kernels/finite_check.py measured
#      0.335 -> 0.107 ms for q, k, v at 32k alone, round 42): profile_sea forward at 16k causal A/B/A (host-bound:
#      does the Triton launch cost host time? the 16k forward read 2.2 ms in round 41 and 3.6 ms in round 42, across
#      calls) and at 64k causal A/B (prediction -0.45 ms: three 128 MiB reads) -> $OUT/profile-*.txt
#   2. quality gate for sparse_pieces=1 on real bidirectional q/k/v (MiniLM capture in .carry/capbi): sea-oracle and
#      SEA fast, pieces 3 / 1 -> $OUT/fidelity*
#   3. the session's forward table, both directions (cuDNN, SEA fast + compile with pieces 3 and 1), one command
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for v in 16k-new:16384:True 16k-aminmax:16384:False 16k-new2:16384:True 64k-new:65536:True 64k-aminmax:65536:False; do
  IFS=: read -r name T on <<<"$v"
  timeout 120 python3 scripts/profile_sea.py --T "$T" --causal --opts "$fast" --top 25 --iters 50 \
    --set methods.sea.layer.FINITE_KERNEL=$on >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall|nonfinite|MinMax" "$OUT/profile-$name.txt" | cut -c1-120 | head -n 3
done
cap=$(ls .carry/capbi/*.safetensors | head -n 1)
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16
timeout 200 python3 -c "import sys, torch
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
from harness.cli import main
sys.exit(main(sys.argv[1:]))" fidelity --capture-in "$cap" --dtype bf16 --device cuda --out /tmp/fidelity --quiet \
  --methods sea-oracle,sea-oracle:sparse_pieces=1,$f,$f:sparse_pieces=1 >"$OUT/fidelity.txt" 2>&1
echo "fidelity exit $?"
python3 - <<'PY' >"$OUT/fidelity-summary.txt" 2>&1
import json
for line in open("/tmp/fidelity/rows.jsonl"):
    r = json.loads(line)
    if (r.get("extra") or {}).get("layer") == "mean":
        print(r["method"], r["config"].get("sparse_pieces"), r.get("status"), "rel L2", r.get("err_rel_l2"),
              "KL", r.get("attn_kl"), r.get("impl", "")[-40:])
PY
cp /tmp/fidelity/rows.jsonl "$OUT/fidelity-rows.jsonl"; cut -c1-160 "$OUT/fidelity-summary.txt"
f=$f:compile=estimator
bash scripts/device_sweep.sh fwd 200 --device cuda \
  --methods sdpa:backend=cudnn,$f,$f:sparse_pieces=1 \
  --method-args sea.max_len=65536 --seq-lens 8192,16384,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 \
  --both-directions --mode fwd --rep-ms 50 --timeout 150 | tail -n 3
