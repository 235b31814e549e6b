#!/usr/bin/env bash
# Issue 7, sixteenth session, call 3 (results/nvidia-h200/sea-fewer-launches/call3/): the bidirectional front
# (kernels/sea_bidir_front.py: the Performer's query pass, the encoder and scaler head and the decoder's row
# projection in one kernel writing the first convolution's channels-last input) on top of calls 1-2's changes
# (IDENTITY_IN_KERNEL now off: call 2 measured it slower), against all of them switched off; and the combine's
# features per program.
# Predictions (written before the run): 8k kernels ~0.97 ms against ~1.15 with everything off (the front ~0.13 ms
# for the query pass 0.093 + encoder 0.07 + row projection 0.039 + permute copy 0.034); 64k ~6.0 against ~6.8 ms;
# COMBINE_BLOCK_F 2 or 4 faster than 8 at both lengths by ~0.02-0.03 ms; the GPU tests pass.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 170 python3 -m pytest -q -m gpu tests/test_sea_bidir_front.py tests/test_favor_dense.py tests/test_sea_shared.py \
  -p no:cacheprovider 2>&1 | tail -n 3 | tee "$OUT/gpu-tests.txt"
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
off="--set kernels.favor_dense.KEY_TAIL=False --set kernels.favor_dense.COMBINE=torch"
off="$off --set methods.sea.layer.POOLED_SCORES=False --set methods.sea.estimator.BIDIR_FRONT=False"
k="_key_kernel|_combine_kernel|_query_kernel|_front_kernel|_encoder_fwd|gemv|nvjet|softmax|clone_permute_view"
for T in 8192 65536; do
  for v in new old cb2 cb4; do
    case $v in new) extra="";; old) extra=$off;; cb2) extra="--set kernels.favor_dense.COMBINE_BLOCK_F=2";;
      cb4) extra="--set kernels.favor_dense.COMBINE_BLOCK_F=4";; esac
    timeout 150 python3 scripts/profile_sea.py --T $T --opts $o --top 40 $extra > "$OUT/profile-$T-$v.txt" 2>&1
    echo "T=$T $v: $(grep -m1 'kernels sum' "$OUT/profile-$T-$v.txt")"
    [ $v = new ] || [ $v = old ] && grep -E "$k" "$OUT/profile-$T-$v.txt" | cut -c1-100
    [ $v = cb2 ] || [ $v = cb4 ] && grep -E "_combine_kernel" "$OUT/profile-$T-$v.txt" | cut -c1-100
  done
done
