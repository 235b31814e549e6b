#!/usr/bin/env bash
# Issue 7, eighteenth session, call 4 (results/nvidia-h200/sea-decoder-ends/call4/ and ../sea-vs-dense-8/): the GPU
# tests with cuDNN's fused convolution + ReLU (CONV_RELU, a custom op inside the compiled estimator) and the head on by
# default; SEA's profile at 8k with everything, without the fused ReLU, without the head, and at 64k; then the
# bidirectional table (the same harness command as sea-vs-dense-7).
# Predictions (written before the run): tests pass; 8k kernels 0.914 (call 3, head + tail) -> ~0.86 ms with the fused
# ReLU (two ReLU kernels ~0.03-0.05 gone, the fused convolutions ~equal to the plain ones in the pipeline); 64k
# 5.51 -> ~5.2 ms. Table: 8k ~1.60x (from 1.865x), 16k ~0.70x, 64k ~0.150x, 256k ~0.035x; errors within 1e-4 relative.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py tests/test_sea_bidir_blocks.py \
  tests/test_sea_bidir_front.py tests/test_sea_encoder.py tests/test_sea_estimator_precision.py \
  tests/test_sea_method.py -p no:cacheprovider -rA > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 14
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
E=methods.sea.estimator
for run in 8192:all 8192:noconvrelu 8192:nohead 65536:all; do
  T=${run%%:*}; v=${run##*:}
  case $v in
    all) extra=();;
    noconvrelu) extra=(--set $E.CONV_RELU=False);;
    nohead) extra=(--set $E.BIDIR_HEAD=False);;
  esac
  timeout 60 python3 scripts/profile_sea.py --T $T --opts $o --top 40 "${extra[@]}" > "$OUT/profile-$T-$v.txt" 2>&1
  echo "T=$T $v: $(grep -m1 'kernels sum' "$OUT/profile-$T-$v.txt" | cut -c1-100)"
  grep -E "_head_kernel|_tail_kernel|_encoder_fwd|xmma|triton_poi|triton_red|conv" \
    "$OUT/profile-$T-$v.txt" | cut -c1-100 | head -n 8
done
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh table "${1:-220}" --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g:shared_keys=64:cuda_graph=16384 \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 2
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
