#!/usr/bin/env bash
# Issue 7, fifteenth session, call 2 (results/nvidia-h200/sea-floor/call2/): the goals called met in earlier sessions,
# re-run at this commit, and the GPU tests. 1. Every GPU test (the padded capture now gives the generator back).
# 2. Forward+backward at 32k causal against SDPA-flash (met at 0.485x in sea-front/call5, not re-run since).
# 3. Peak memory of SEA in 64 query blocks against SDPA-flash, both directions, 64k and 256k (met at 1.27-1.67x in
# sea-vs-dense-4, not re-run since). 4. The bidirectional Performer's key-pass program count at 8k and 64k (its
# partial sums are ~94 MB at any T with 2048 programs).
# Predictions (written before the run): all GPU tests pass; fwd+bwd 32k 0.45-0.55x; memory 1.2-1.7x flash at both
# lengths and directions; KEY_PROGRAMS 512 faster than 2048 at 8k by ~0.03-0.05 ms, no better at 64k.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 270 python3 -m pytest -q -m gpu tests -p no:cacheprovider -x 2>&1 | tail -n 15 | tee "$OUT/gpu-tests.txt"
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwdbwd 110 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=flash,$g --seq-lens 32768 --causal --mode fwd+bwd \
  --rep-ms 200 --timeout 100 | tail -n 1
python3 scripts/ratio_table.py "$OUT/fwdbwd/rows.jsonl"
h=sea:performer_dtype=bf16:compile=estimator:estimator_precision=tf32:query_blocks=64
bash scripts/device_sweep.sh memory 150 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=flash,$h --seq-lens 65536,262144 --both-directions \
  --mode fwd --rep-ms 20 --timeout 120 | tail -n 1
python3 scripts/ratio_table.py "$OUT/memory/rows.jsonl"
python3 - "$OUT/memory/rows.jsonl" <<'PY'
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
ref = {(r["seq_len"], r["causal"]): r.get("memory_bytes") for r in rows if r["method"] == "sdpa"}
for r in rows:
    mem, fm = r.get("memory_bytes"), ref.get((r["seq_len"], r["causal"]))
    print(f"{r['method']:5s} T={r['seq_len']} causal={r['causal']} {r['status']} memory / flash's "
          f"{mem / fm if mem and fm else float('nan'):.2f}")
PY
timeout 90 python3 scripts/tune_sea_kernels.py --only favor --T 8192 --rep-ms 100 2>&1 | grep -v Warn | tail -n 12 \
  | tee "$OUT/tune-favor-8192.txt"
timeout 60 python3 scripts/tune_sea_kernels.py --only favor --T 65536 --rep-ms 100 2>&1 | grep -v Warn | tail -n 12 \
  | tee "$OUT/tune-favor-65536.txt"
