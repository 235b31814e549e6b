#!/usr/bin/env bash
# Issue 7, twenty-third session, call 6 (results/nvidia-h200/sea-graph-call/call4/ and sea-vs-dense-13/).
# methods/sea/layer.py CONTEXT_KERNEL (new, on by default on CUDA): the bidirectional forward's average context from
# the pooled block scores in one launch (kernels/sea_column_context.py) instead of the column sums in the top-k stage
# and ~5 tensor ops (at 8k: a float reduce 0.0055 ms, the cells' bf16 reduce 0.009, two divisions, a GEMV: ~0.020).
# Predictions (before the run): GPU tests pass; 8k kernels 0.603 -> ~0.590 ms (the context kernel ~0.006 + a memset),
# 64k 3.864 -> ~3.83; the table (sea-vs-dense-12's command) 8k ~1.13x cuDNN, 16k ~0.48x, 64k ~0.105x, 256k ~0.024x,
# errors against exact within 1e-5 relative of sea-vs-dense-12's.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_sea_column_context.py tests/test_sea_shared.py \
  -k "gpu" -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 8
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel
for T in 8192 65536; do
  for v in True False; do
    f=$OUT/profile-$T-context$v.txt
    timeout 80 python3 scripts/profile_sea.py --T $T --opts $o --top 30 --iters 20 \
      --set methods.sea.layer.CONTEXT_KERNEL=$v > "$f" 2>&1
    echo "T=$T CONTEXT_KERNEL=$v: kernels $(grep -m1 'kernels sum' "$f" | sed -E 's/.*kernels sum ([0-9.]+) ms.*/\1/')" \
      "context $(grep -m1 '_context_kernel' "$f" | awk '{print $1}')"
    grep -q 'kernels sum' "$f" || tail -n 3 "$f" | cut -c1-200
  done
done
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
g=$g:shared_keys=64:cuda_graph=16384:encoder_operands=bf16:identity_values=kernel
bash scripts/device_sweep.sh table 300 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 4
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
