#!/usr/bin/env bash
# Issue 7, eleventh session: the fwd+bwd table again with more repetitions. Round 50 timed SEA's 32k causal step once
# (--rep-ms 20 at ~17 ms a step: one sample) at 17.6 ms against 12.2 ms in sea-train/call19, with the backward's
# stages equal to call19's (estimator 7.64 vs 7.49 ms, sparse 2.77 vs 2.76) and 16k / 64k as before. Prediction: an
# outlier; with --rep-ms 300 the 32k step is 12-13 ms (0.45-0.5x SDPA-flash) -> $OUT/fwdbwd/, plus the step's kernels
# at 32k -> $OUT/profile-32k-bwd.txt
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh fwdbwd 240 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=flash,$f --seq-lens 16384,32768,65536 --causal --mode fwd+bwd \
  --rep-ms 300 --timeout 150 | tail -n 3
python3 -m harness report "$OUT/fwdbwd" --no-plots >/dev/null 2>&1
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
timeout 100 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 --iters 20 \
  >"$OUT/profile-32k-bwd.txt" 2>&1
echo "profile exit $?"; grep -E "wall" "$OUT/profile-32k-bwd.txt" | cut -c1-120
python3 - "$OUT/fwdbwd/rows.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(r["method"], r.get("seq_len"), r.get("status"), round(r.get("latency_ms") or -1, 2),
          round(r.get("latency_p20_ms") or -1, 2), round(r.get("latency_p80_ms") or -1, 2))
PY
