#!/usr/bin/env bash
# Issue 7, sixteenth session, call 4 (results/nvidia-h200/sea-fewer-launches/call4/): the 8k bidirectional profile at
# the session's defaults (KEY_TAIL, the Triton combine with 4 features a program, POOLED_SCORES; the front and the
# in-kernel identity columns off), and the (off) front kernel with smaller tiles than call 3's 64 rows on 8 warps.
# Predictions (written before the run): 8k kernels ~1.09 ms (call 3's all-off 1.152); the front with 32- or 16-row
# tiles on 4 warps faster than call 3's 1.62 ms but still slower than the launches it replaces (~0.24 ms).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
f1="--set methods.sea.estimator.BIDIR_FRONT=True"; f="--set kernels.sea_bidir_front"
for v in new f32w4 f16w4 f32w8 f16w2; do
  case $v in new) extra="";; f32w4) extra="$f1 $f.NUM_WARPS=4 $f.BLOCK_T=32";; f16w4) extra="$f1 $f.NUM_WARPS=4 $f.BLOCK_T=16";;
    f32w8) extra="$f1 $f.NUM_WARPS=8 $f.BLOCK_T=32";; f16w2) extra="$f1 $f.NUM_WARPS=2 $f.BLOCK_T=16 $f.ROW_CHUNK=32";; esac
  timeout 100 python3 scripts/profile_sea.py --T 8192 --opts $o --top 40 $extra > "$OUT/profile-8192-$v.txt" 2>&1
  echo "T=8192 $v: $(grep -m1 'kernels sum' "$OUT/profile-8192-$v.txt")"
  grep -E "_key_kernel|_combine_kernel|_query_kernel|_front_kernel|_encoder_fwd" "$OUT/profile-8192-$v.txt" | cut -c1-90
done
