#!/usr/bin/env bash
# Issue 7, eighteenth session, call 3 (results/nvidia-h200/sea-decoder-ends/call3/): GPU tests of the files the parity
# convolution and the head / tail kernels touch; cuDNN's options for the decoder's convolutions (benchmark mode, the
# fused convolution + ReLU) at 8k and 64k; SEA's profile with cudnn.benchmark on, with the tail (HEAD_GROUPS=4, the
# default now) and with the head too (NUM_WARPS=4, call 2's 64k best), the compiled graph's code saved for the head
# run (call 2: its two ReLU kernels took 0.055 against 0.029 ms without the head).
# Predictions (written before the run): tests pass; benchmark mode moves each convolution by <= 10 %; the fused
# convolution + ReLU either errors (bf16 unsupported) or saves the ReLU's ~0.015 ms per convolution at 8k; SEA 8k
# kernels 0.898 ms (call 2, tail) -> within 0.02 with benchmark mode.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 240 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py tests/test_sea_bidir_blocks.py \
  tests/test_sea_bidir_front.py tests/test_sea_encoder.py tests/test_sea_estimator_precision.py \
  tests/test_sea_method.py -p no:cacheprovider -rA > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 14
for T in 8192 65536; do
  # (call 3 ran this as scripts/tune_bidir_convs.py, since merged into tune_bidir_ends.py: the same code)
  timeout 100 python3 scripts/tune_bidir_ends.py --T $T --only convs > "$OUT/tune-convs-$T.txt" 2>&1
  echo "T=$T"; grep -E "^\| |rror" "$OUT/tune-convs-$T.txt" | grep -v -- "---" | cut -c1-120
done
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
E=methods.sea.estimator
for run in 8192:bench 8192:head 65536:bench 65536:head; do
  T=${run%%:*}; v=${run##*:}
  case $v in
    bench) extra=(--set torch.backends.cudnn.benchmark=True);;
    head) extra=(--set torch.backends.cudnn.benchmark=True --set $E.BIDIR_HEAD=True
                 --set kernels.sea_bidir_head.NUM_WARPS=4);;
  esac
  if [ "$run" = "8192:head" ]; then
    TORCH_LOGS=output_code timeout 60 python3 scripts/profile_sea.py --T $T --opts $o --top 40 "${extra[@]}" \
      > "$OUT/profile-$T-$v.txt" 2> "$OUT/output-code-$T-$v.txt"
    gzip "$OUT/output-code-$T-$v.txt"
  else
    timeout 60 python3 scripts/profile_sea.py --T $T --opts $o --top 40 "${extra[@]}" > "$OUT/profile-$T-$v.txt" 2>&1
  fi
  echo "T=$T $v: $(grep -m1 'kernels sum' "$OUT/profile-$T-$v.txt" | cut -c1-100)"
  grep -E "_head_kernel|_tail_kernel|_encoder_fwd|nvjet|clone_permute|xmma|triton_poi|triton_red" \
    "$OUT/profile-$T-$v.txt" | cut -c1-100 | head -n 8
done
