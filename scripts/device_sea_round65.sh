#!/usr/bin/env bash
# Issue 7, thirteenth session, call 5: the quality of shared keys on the GPU path. SmolLM2-135M's captured q/k/v
# (.carry/cap: WikiText-2 test, T = 2048, every third layer, bf16) through the fidelity task on CUDA, where shared
# keys run kernels/sea_shared_attention.py (the CPU runs of results/cpu/sea-shared-keys/ take the per-row CSR lists of
# the same selection): SEA fast per-row, SEA fast + shared_keys=64 at budgets 1, 2, 4, and the oracle estimate alike
# -> $OUT/fidelity/. Prediction: the GPU means equal the CPU ones to ~1e-3 relative (bf16 kernels against fp32 CPU
# arithmetic; the selection may flip at near-ties of the estimate).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:sparse_pieces=1
o=sea-oracle:sparse_pieces=1
s=shared_keys=64
timeout 400 python3 -m harness fidelity --capture-in .carry/cap/smollm2-2048-l3-bf16.safetensors --device cuda \
  --out /tmp/fid --quiet \
  --methods $f,$f:$s,$f:$s:shared_budget=2,$f:$s:shared_budget=4,$o,$o:$s,$o:$s:shared_budget=2,$o:$s:shared_budget=4
echo "fidelity exit $?"
mkdir -p "$OUT/fidelity"; cp /tmp/fid/meta.json /tmp/fid/rows.jsonl "$OUT/fidelity/"
python3 - <<'PY'
import json
for line in open("/tmp/fid/rows.jsonl"):
    r = json.loads(line)
    if (r.get("extra") or {}).get("layer") == "mean":
        c = r["config"]
        print(f'{r["method"]:11s} shared_keys={c.get("shared_keys")} budget={c.get("shared_budget")} {r["status"]} '
              f'rel_l2={r.get("err_rel_l2")} kl={r.get("attn_kl")} recall={r.get("topk_recall")} impl={r.get("impl", "")[-60:]}')
PY
