#!/usr/bin/env bash
# Issue 7, fourteenth session, call 3 (results/nvidia-h200/sea-flex-blocks/call3/ .. and sea-bidir-mix/call3/):
# shared_span=blocks (a selected cell brings every key of its 64-aligned key blocks) computed by FlexAttention on a
# BlockMask built from the selection in the forward (methods/sea/flex_shared.py), against the strided span on the
# shared kernel; and the bidirectional table again with the key pass on 128 features / 4 warps.
# 1. GPU tests. 2. Causal 8k, 16k, 64k: cuDNN, shared strided, shared blocks (cuda_graph=16384) -> $OUT/causal/.
# 3. Bidirectional, the same columns -> $OUT/bidir/. 4. Profile of the causal 16k blocks row.
# Predictions (written before the run): causal blocks 16k ~0.80x (Flex ~0.10 ms for the shared kernel's 0.195, the
# BlockMask ~0.03), 64k ~0.165-0.17x (Flex 0.39 against 0.49 ms, the BlockMask's NB x NB passes ~0.1); strided as in
# call 2 of sea-shared-keys (0.86x / 0.168x). Bidirectional strided 64k ~0.193x (key pass -0.09 ms), blocks ~0.23x
# (8 key blocks a 512-key cell, no mix epilogue), 16k ~1.0x, 8k ~2.3x.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -q -m gpu tests/test_sea_flex_shared.py tests/test_sea_shared.py tests/test_favor_dense.py \
  -k "flex or shared or sea_widths" -p no:cacheprovider 2>&1 | tail -n 4 | tee "$OUT/gpu-tests.txt"
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
m=sdpa:backend=cudnn,$g:shared_keys=64:cuda_graph=16384,$g:shared_keys=64:shared_span=blocks:cuda_graph=16384
for dir in causal bidirectional; do
  bash scripts/device_sweep.sh $dir 200 --device cuda --method-args sea.max_len=65536 --batch 1 --heads 16 \
    --head-dim 64 --dtype bf16 --methods $m --seq-lens 8192,16384,65536 --$dir --mode fwd --rep-ms 50 \
    --timeout 100 | tail -n 1
  python3 scripts/ratio_table.py "$OUT/$dir/rows.jsonl"
done
f=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
timeout 60 python3 scripts/profile_sea.py --T 16384 --causal --opts "$f,shared_span=blocks" --top 16 --iters 20 \
  >"$OUT/profile-16384-causal-blocks.txt" 2>&1
echo "profile exit $?"; sed -n 3,18p "$OUT/profile-16384-causal-blocks.txt" | cut -c1-120
