#!/usr/bin/env bash
# Issue 7, seventeenth session, call 2 (results/nvidia-h200/sea-key-pass/call2/): call 1 found the per-feature key
# pass no faster (0.213 against 0.186 ms at 8k; only the combine gained, 0.047 -> 0.021), so the per-tile maximum
# was not the limit. This call tests the next suspect: the key tile passes through registers (fp32 convert, x d^-1/4
# scale, the diagonal's sum) before the products, which keeps the loads out of the asynchronous pipeline. Variants:
# dash from two bf16 products of the raw bf16 keys (KEY_PF_DASH=bf16x2, finer than TF32) and the diagonal from a
# small pre-pass (KEY_DIAG=pre); values fp32 or bf16 (methods/sea/estimator.py VALS_BF16).
# Predictions (written before the run): the GPU tests pass, bf16x2 several times closer to ieee than TF32; the
# favor_dense call at 8k 0.366 -> ~0.26 ms with bf16x2 + pre and bf16 values (the key pass ~0.12 ms); at 64k
# 2.49 -> ~1.8 ms; SEA's 8k kernels 1.078 -> ~0.98 ms. If the loads still do not pipeline, no change (<5 %).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_favor_dense.py tests/test_sea_bidir_front.py -p no:cacheprovider \
  -rA 2>&1 | grep -E "rel L2|passed|failed|Error" | tail -n 18 | tee "$OUT/gpu-tests.txt"
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for T in 8192 65536; do
  timeout 200 python3 scripts/tune_sea_kernels.py --T $T --opts $o --only favor --rep-ms 50 > "$OUT/tune-favor-$T.txt" 2>&1
  grep -E "^\| |values|error" "$OUT/tune-favor-$T.txt" | grep -v -- "---" | cut -c1-100
done
f=--set; p=kernels.favor_dense
for v in old new; do
  case $v in old) extra="$f $p.KEY_FORM=per_program $f methods.sea.estimator.VALS_BF16=False";; new) extra="";; esac
  timeout 100 python3 scripts/profile_sea.py --T 8192 --opts $o,shared_keys=64 --top 40 $extra \
    > "$OUT/profile-8192-$v.txt" 2>&1
  echo "T=8192 $v: $(grep -m1 'kernels sum' "$OUT/profile-8192-$v.txt")"
  grep -E "_key_kernel|_key_pf_kernel|_key_sqnorm|_combine_kernel|_query_kernel|direct_copy|cat_0" \
    "$OUT/profile-8192-$v.txt" | cut -c1-90
done
