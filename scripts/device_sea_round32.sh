#!/usr/bin/env bash
# Issue 7, eighth session, last lease: TF32 in the estimator's backward (methods/sea/precision.py: tf32_linear for
# the encoder, scaler and feature projections under estimator_precision=tf32), then the fwd+bwd table again.
# bf16, B=1, H=16, D=64, causal.
#   1. profile_sea --backward at 32k, SEA fast + compile, TF32_BACKWARD True / False, same call
#      -> $OUT/profile-fwdbwd-tf32bwd-{on,off}.txt (prediction: the fp32 FFMA GEMMs, 1.8 ms, -> ~0.3 ms of TF32
#      GEMMs; the graph breaks around tf32_linear may take back part of it)
#   2. the harness fwd+bwd table at 16k / 32k / 64k: SDPA-flash, cuDNN, SEA defaults, SEA fast + compile
#      -> $OUT/fwdbwd/
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator
for v in on:True off:False on2:True; do
  name=${v%%:*}; val=${v#*:}
  timeout 150 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 --iters 10 \
    --set methods.sea.precision.TF32_BACKWARD=$val >"$OUT/profile-fwdbwd-tf32bwd-$name.txt" 2>&1
  echo "profile $name exit $?"; sed -n 3,9p "$OUT/profile-fwdbwd-tf32bwd-$name.txt" | cut -c1-140
done
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh fwdbwd 280 --device cuda \
  --methods sdpa:backend=flash,sdpa:backend=cudnn,sea,$f --method-args sea.max_len=65536 \
  --seq-lens 16384,32768,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 \
  --timeout 150
