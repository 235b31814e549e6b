#!/usr/bin/env bash
# Issue 7, twenty-second session, call 6 (results/nvidia-h200/sea-key-pass-ncu/call6/). scripts/compile_sm90.py
# showed the bf16 roundings by integer arithmetic (written for the interpreter, whose cast truncates) on the GPU path
# too: ~5 integer instructions a value. Now the GPU path casts (round to nearest even) where that does not cost
# registers: the head's output (3160 -> 2840 SASS instructions a program, 125 registers either way; its z keeps the
# integer form: the cast there took 136 registers), the query pass's output (2365 -> 2237), the key pass's identity
# weights (the 128-feature loop 1169 -> 1132). This call: the GPU tests of the head and the identity columns, then
# SEA's 8k forward with the kernels of 7ad5978 (carried in .carry/oldk, in a copy of the tree) and as now, same run.
# Predictions (written before the run): tests pass; head 0.117 -> ~0.106 ms, query 0.082 -> ~0.080, key pass
# 0.102 -> ~0.100; kernels 0.626 -> ~0.61 ms.
set -u
export PYTHONUNBUFFERED=1
timeout 100 env PYTHONPATH=$PWD python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py \
  tests/test_favor_dense.py -k "head_and_tail or identity_columns or value_sums" -p no:cacheprovider -rA \
  > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 8
rm -rf /tmp/A && cp -r "$PWD" /tmp/A && cp .carry/oldk/*.py /tmp/A/kernels/
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel
for side in A B; do
  dir=$PWD; [ $side = A ] && dir=/tmp/A
  f=$OUT/profile-8192-$side.txt
  (cd "$dir" && timeout 60 env PYTHONPATH="$dir" python3 scripts/profile_sea.py --T 8192 --opts $o --top 10) > "$f" 2>&1
  ms() { grep -m1 " $1" "$f" | awk '{print $1}'; }
  echo "$side $(grep -m1 'kernels sum' "$f" | sed -E 's/.*kernels sum ([0-9.]+) ms.*/\1/')" \
    "key $(ms _key_pf_kernel) query $(ms _query_kernel) head $(ms _head_kernel)"
  grep -q 'kernels sum' "$f" || tail -n 3 "$f" | cut -c1-200
done
