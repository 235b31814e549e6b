#!/usr/bin/env bash
# Issue 7, eleventh session, first lease: the fused causal front's output kernel (_fe_output_kernel, 1.28 ms of the
# 64k causal forward's 4.83 ms of kernels) under its launch knobs. Reading of the kernel: one program per 128-row
# chunk with 8 warps and [128, 128] fp32 tiles (scores, encoder), likely one program per SM and no overlap of its
# serial load -> dot chain (~20 us a program, 62 programs an SM). Prediction: 4 warps or 16 warps within +-15 %;
# 64-row chunks (more programs resident) 1.28 -> ~0.9 ms if latency is the cause; stages 1 / 3 no change (the loop
# runs once at 64k: one chunk per group). A/B/.../A -> $OUT/profile-*.txt
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
m=kernels.sea_favor_encoder
for v in base:8:128:2:1024 w4:4:128:2:1024 w16:16:128:2:1024 s1:8:128:1:1024 s3:8:128:3:1024 \
         c64w4:4:64:2:1024 c64w8:8:64:2:1024 g2:8:128:2:256 base-again:8:128:2:1024; do
  IFS=: read -r name w c s g <<<"$v"
  timeout 100 python3 scripts/profile_sea.py --T 65536 --causal --opts "$fast" --top 12 --iters 20 \
    --set $m.NUM_WARPS_OUTPUT=$w --set $m.CHUNK_TF32=$c --set $m.STAGES_TF32=$s --set $m.MAX_CHECKPOINTS=$g \
    >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall|_fe_" "$OUT/profile-$name.txt" | cut -c1-100 | head -n 5
done
