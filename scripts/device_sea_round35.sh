#!/usr/bin/env bash
# Issue 7, training step (one lent single-GPU machine, bf16, B=1, H=16, D=64, causal 32k, SEA fast + compile):
# the two fixes of the ninth session, A/B in one call, then the harness's fwd+bwd table.
#   1. GPU tests: the causal mix's backward kernel (gradients against SEA's torch path, times), the sparse
#      backward's variants (key-major lists now int32 keys + repeat_interleave rows), the layer on CUDA defaults
#      -> $OUT/gpu-tests.txt
#   2. profile_sea --backward at 32k: new defaults / AUTO_MIX_GRAD=False / DECODER_OWN_GRAPH=False /
#      BACKWARD=keys / new defaults again -> $OUT/profile-<name>.txt. Predictions (kernel sums, 21.4 ms before):
#      the decoder's own graph -3 ms +-1 (2.0 ms of convolution backward on zero gradients and its casts / norms),
#      the mix kernel's backward -1.5 ms +-0.5, keys vs row -1.5 +-1 (the sort on 32-bit keys).
#   3. the fwd+bwd table of round32 (one harness command) -> $OUT/fwdbwd/
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 200 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_causal_mix_grad.py \
  tests/test_sea_sparse_rows_bwd.py tests/test_sea_mix_kernel.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E " ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 8
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator
for v in new:methods.sea.layer.AUTO_MIX_GRAD=True nomix:methods.sea.layer.AUTO_MIX_GRAD=False \
         nobreak:methods.sea.estimator.DECODER_OWN_GRAPH=False keys:kernels.sea_sparse_rows_bwd.BACKWARD=keys \
         new2:methods.sea.layer.AUTO_MIX_GRAD=True; do
  name=${v%%:*}; set=${v#*:}; extra=()
  [ "$name" = new ] && extra=(--ops 60)
  timeout 200 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 --iters 10 \
    --set "$set" "${extra[@]}" >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall|^ +[0-9.]+ +1.0 .*(_bwd_kernel|_keys_bwd)" "$OUT/profile-$name.txt" | cut -c1-120
done
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh fwdbwd 200 --device cuda \
  --methods sdpa:backend=flash,sdpa:backend=cudnn,sea,$f --method-args sea.max_len=65536 \
  --seq-lens 16384,32768,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 \
  --timeout 150
