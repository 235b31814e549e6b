#!/usr/bin/env bash
# Issue 7, twenty-fourth session, call 3 (results/nvidia-h200/sea-conv3x3/call3/).
# methods/sea/estimator.py CONV_TAIL (new, off): the bidirectional decoder's last convolution (parity form, 64 -> 32
# channels) and kernels/sea_bidir_tail.py's softmax + block sums as one Triton kernel (kernels/sea_conv3x3.py
# conv_pooled_scores), the parity-form output (16.7 MB at 8k) never written; cuDNN keeps conv1 / conv2. Calls 1-2:
# the Triton convolution alone 51 us against cuDNN's 54-55 for this conv at 8k (graphs of 20 calls); the tail 0.017
# ms. Predictions (before the run): GPU tests pass; at 8k the fused kernel ~0.045-0.055 ms against conv3 ~0.048 +
# tail 0.017 (+ a memset and cast), kernels 0.605 -> ~0.585-0.59 with the best TAIL_SPLIT (1 part: 128 programs, one
# wave, latency-bound, slower; 4-8 parts best); at 64k conv3 ~0.33 + tail ~0.1 -> ~0.37, kernels ~3.90 -> ~3.85.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_sea_conv3x3.py -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 8
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel
run() {  # T name sets...
  local T=$1 name=$2; shift 2
  local f=$OUT/profile-$T-$name.txt
  timeout 80 python3 scripts/profile_sea.py --T $T --opts $o --top 30 --iters 20 "$@" > "$f" 2>&1
  echo "T=$T $name: kernels $(grep -m1 'kernels sum' "$f" | sed -E 's/.*kernels sum ([0-9.]+) ms.*/\1/')" \
    "fused $(grep -m1 '_conv_tail_kernel' "$f" | awk '{print $1}')" \
    "cudnn $(grep -m1 'sm90_xmma_fprop' "$f" | awk '{print $1, $2}')" "tail $(grep -m1 -E '[[:space:]]_tail_kernel' "$f" | awk '{print $1}')"
  grep -q 'kernels sum' "$f" || tail -n 3 "$f" | cut -c1-200
}
run 8192 off --set methods.sea.estimator.CONV_TAIL=False
for s in 1 2 4 8 16; do
  run 8192 split$s --set methods.sea.estimator.CONV_TAIL=True --set kernels.sea_conv3x3.TAIL_SPLIT=$s
done
best=$(for s in 1 2 4 8 16; do echo "$(grep -m1 'kernels sum' $OUT/profile-8192-split$s.txt | \
  sed -E 's/.*kernels sum ([0-9.]+) ms.*/\1/') $s"; done | sort -n | head -1 | awk '{print $2}')
echo "best split at 8k: ${best:=4}"
run 65536 off --set methods.sea.estimator.CONV_TAIL=False
run 65536 split$best --set methods.sea.estimator.CONV_TAIL=True --set kernels.sea_conv3x3.TAIL_SPLIT=$best
