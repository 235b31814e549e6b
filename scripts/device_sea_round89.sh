#!/usr/bin/env bash
# Issue 7, seventeenth session, call 1 (results/nvidia-h200/sea-key-pass/call1/): the per-feature key pass
# (kernels/favor_dense.py KEY_FORM="per_feature": [features, keys] tiles, a running maximum per feature) against the
# per-program one, its GPU tests, its tile settings at 8k and 64k, and SEA's 8k bidirectional profile with each form.
# Predictions (written before the run): the GPU tests pass (both forms within the existing bounds); the whole
# favor_dense call (key pass + combine + query pass) at 8k from ~0.34 ms to ~0.24 ms (key pass 0.186 -> ~0.09 ms,
# combine 0.053 -> ~0.02 with ~4x fewer partials), at 64k ~2.3 -> ~1.6 ms; SEA's 8k kernels 1.084 -> ~0.95 ms.
# Uncertain: a transposed per-program pass was no faster in round 19 (the per-tile cross-warp maximum may not be
# what limits the pass).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_favor_dense.py tests/test_sea_bidir_front.py -p no:cacheprovider \
  -rA 2>&1 | grep -E "rel L2|passed|failed|Error" | tail -n 16 | tee "$OUT/gpu-tests.txt"
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
for T in 8192 65536; do
  timeout 150 python3 scripts/tune_sea_kernels.py --T $T --opts $o --only favor --rep-ms 60 > "$OUT/tune-favor-$T.txt" 2>&1
  tail -n 14 "$OUT/tune-favor-$T.txt"
done
for form in per_program per_feature; do
  timeout 100 python3 scripts/profile_sea.py --T 8192 --opts $o,shared_keys=64 --top 40 \
    --set kernels.favor_dense.KEY_FORM=$form > "$OUT/profile-8192-$form.txt" 2>&1
  echo "T=8192 $form: $(grep -m1 'kernels sum' "$OUT/profile-8192-$form.txt")"
  grep -E "_key_kernel|_key_pf_kernel|_combine_kernel|_query_kernel|direct_copy" "$OUT/profile-8192-$form.txt" | cut -c1-90
done
