#!/usr/bin/env bash
# Issue 7, tenth session, fourth lease (one lent single-GPU machine, bf16, B=1, H=16, D=64, causal 32k fwd+bwd, SEA
# fast + compile + sparse_pieces=1): the causal linear-attention kernels' tiling in the training step
# (methods/sea/favor.py LINEAR_CHUNK / LINEAR_BLOCK_E / LINEAR_WARPS; the four passes' _chunk_output_kernel took
# 1.50 ms, group states 0.47, scan 0.46 in round 42). SEA's values are [V_I ; v] (128 columns): block_e 64 computes
# each chunk's scores twice (two value blocks). Prediction for block_e=128: _chunk_output_kernel 1.50 -> ~1.1 ms;
# chunk 128 halves the states (group states and scan ~-0.4 ms) but doubles the in-chunk work (unclear).
# A/B/C/D/E/A -> $OUT/profile-*.txt
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for v in c64-e64-w4:64:64:4 c64-e128-w4:64:128:4 c64-e128-w8:64:128:8 c128-e128-w8:128:128:8 c128-e64-w4:128:64:4 \
         c64-e64-w4-again:64:64:4; do
  IFS=: read -r name c e w <<<"$v"
  timeout 100 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 --iters 20 \
    --set methods.sea.favor.LINEAR_CHUNK=$c --set methods.sea.favor.LINEAR_BLOCK_E=$e \
    --set methods.sea.favor.LINEAR_WARPS=$w >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall|_chunk_output|_group_states|_scan_kernel" "$OUT/profile-$name.txt" \
    | cut -c1-100 | head -n 4
done
