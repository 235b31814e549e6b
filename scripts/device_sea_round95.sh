#!/usr/bin/env bash
# Issue 7, eighteenth session, call 1 (results/nvidia-h200/sea-decoder-ends/call1/): the bidirectional decoder's two
# ends. Head: the encoder, scaler head and the decoder's row projection in one kernel with every head of a block of
# rows per program, stored whole into the channels-last conv input (kernels/sea_bidir_head.py, BIDIR_HEAD). Tail: the
# last convolution at half resolution with the x2 upsampling folded into its weights (PARITY_CONV3), the row softmax
# and the block sums read from it by one kernel (kernels/sea_bidir_tail.py, BIDIR_TAIL). GPU tests, then SEA's 8k
# profile with both, neither, each alone, and 64k with both / neither.
# Predictions (written before the run): tests pass. 8k kernels 0.98 -> ~0.87 ms: encoder 0.071 + row GEMM 0.038 +
# permute copy 0.034 -> head kernel ~0.06-0.08; the upsample-relu kernel 0.026 -> a relu ~0.012; softmax + sums
# 0.036 + 0.026 -> ~0.01; conv3 at 32 channels x half rows ~equal to 16 x full rows. 64k: ~ -0.8 ms of ~6.1.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py tests/test_sea_bidir_front.py \
  tests/test_sea_encoder.py tests/test_sea_bidir_blocks.py -p no:cacheprovider -rA > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 14
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
E=methods.sea.estimator
for run in 8192:both 8192:neither 8192:head 8192:tail 65536:both 65536:neither; do
  T=${run%%:*}; v=${run##*:}
  case $v in
    both) extra=();;
    neither) extra=(--set $E.BIDIR_HEAD=False --set $E.BIDIR_TAIL=False --set $E.PARITY_CONV3=False);;
    head) extra=(--set $E.BIDIR_TAIL=False --set $E.PARITY_CONV3=False);;
    tail) extra=(--set $E.BIDIR_HEAD=False);;
  esac
  timeout 60 python3 scripts/profile_sea.py --T $T --opts $o --top 40 "${extra[@]}" > "$OUT/profile-$T-$v.txt" 2>&1
  echo "T=$T $v: $(grep -m1 'kernels sum' "$OUT/profile-$T-$v.txt")"
  grep -E "_head_kernel|_tail_kernel|_encoder_fwd|nvjet|clone_permute|xmma|softmax|triton_poi|triton_red" \
    "$OUT/profile-$T-$v.txt" | cut -c1-110 | head -n 12
done
