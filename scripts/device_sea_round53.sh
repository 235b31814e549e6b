#!/usr/bin/env bash
# Issue 7, eleventh session, the lease's last minutes: the 256k causal forward at the session's final tree (the goal
# <= 0.1x cuDNN was met in sea-vs-dense-4/ with an older SEA; not re-run since): cuDNN, SDPA-flash and SEA fast +
# compile + pieces=1, one harness command -> $OUT/fwd-256k/. Prediction: SEA ~14-16 ms against cuDNN's ~320 ms
# (~0.05x), as in sea-vs-dense-4 (0.054x) less this session's front and decoder savings.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwd-256k 170 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$f --seq-lens 262144 --causal \
  --mode fwd --rep-ms 50 --timeout 150 | tail -n 3
python3 - "$OUT/fwd-256k/rows.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(r["method"], r["config"].get("backend", ""), r.get("seq_len"), r.get("status"),
          round(r.get("latency_ms") or -1, 3), round((r.get("memory_bytes") or 0) / 2**20, 1), "MiB")
PY
