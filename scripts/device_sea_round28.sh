#!/usr/bin/env bash
# Issue 7, eighth session: the training goal after the linear-attention backward fixes (chunked cumsums for the
# normaliser's gradient, half backward dots after a half forward). 32k causal, bf16, B=1, H=16, D=64.
#   1. scripts/profile_sea.py --backward: defaults, fastest forward options, the same compiled -> $OUT/profile-*.txt
#      (prediction: defaults 56.4 -> ~33 ms (the two ~11 ms cumsums gone); fast 74.1 -> ~25 ms (cumsums, and the
#      three backward passes on bf16 dots: 22 + 6.7 -> ~4 ms))
#   2. the fwd+bwd cells by the harness (same-run ratios to SDPA-flash / cuDNN) -> $OUT/fwdbwd/
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16
for v in default:- fast:$fast compiled:$fast,compile=estimator; do
  name=${v%%:*}; opts=${v#*:}; [ "$opts" = "-" ] && opts=""
  timeout 150 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$opts" --top 30 \
    >"$OUT/profile-fwdbwd-$name.txt" 2>&1
  echo "profile $name exit $?"; sed -n 2,12p "$OUT/profile-fwdbwd-$name.txt" | cut -c1-140
done
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16
bash scripts/device_sweep.sh fwdbwd 200 --device cuda \
  --methods sdpa:backend=flash,sdpa:backend=cudnn,sea,$f,$f:compile=estimator \
  --seq-lens 32768 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 --timeout 120
