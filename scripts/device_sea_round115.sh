#!/usr/bin/env bash
# Issue 7, for the twenty-third session's first call (written in the twenty-second without device time left;
# results/nvidia-h200/sea-key-pass-ncu/call7/). kernels/favor_dense.py KEY_EVEN_TILES (A/B switch, off): where no key
# row can be invalid (no padding mask, T a multiple of the 128-key tile, d and the value width powers of two) the
# per-feature key pass loads keys, |k'|^2 and values without masks and does not mask dash: its 128-feature loop
# 1132 -> 853 SASS instructions a tile, 98,816 -> 86,528 B shared (scripts/compile_sm90.py, sm_90a, triton 3.6);
# bit-equal on the CPU. QUERY_EVEN_STEPS (A/B switch, off): the query pass's full feature steps unmasked, the last
# partial one masked: its loop 283 -> 202 instructions a step (one masked step of 290 after eight unmasked at m=266).
# This call: the GPU tests (bit-equal at SEA's widths), SEA's 8k and 64k forwards with both off, each on, both on.
# Predictions (written before the run): tests pass; key pass at 8k 0.101 -> ~0.080 ms, query pass 0.080 -> ~0.065;
# kernels 0.621 -> ~0.585 with both; at 64k key ~0.69 -> ~0.55, query ~0.61 -> ~0.50.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 100 python3 -m pytest -q -m gpu tests/test_favor_dense.py -k "even_tiles or value_sums" -p no:cacheprovider \
  -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 8
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel
for T in 8192 65536; do
  for v in "False False" "True False" "False True" "True True"; do
    set -- $v
    f=$OUT/profile-$T-keys$1-queries$2.txt
    [ $T = 65536 ] && f=/tmp/profile-$T-keys$1-queries$2.txt                # (at most 8 files come back)
    timeout 60 python3 scripts/profile_sea.py --T $T --opts $o --top 10 --set kernels.favor_dense.KEY_EVEN_TILES=$1 \
      --set kernels.favor_dense.QUERY_EVEN_STEPS=$2 > "$f" 2>&1
    ms() { grep -m1 " $1" "$f" | awk '{print $1}'; }
    echo "T=$T KEY_EVEN_TILES=$1 QUERY_EVEN_STEPS=$2:" \
      "$(grep -m1 'kernels sum' "$f" | sed -E 's/.*kernels sum ([0-9.]+) ms.*/\1/')" \
      "key $(ms _key_pf_kernel) query $(ms _query_kernel)"
    grep -q 'kernels sum' "$f" || tail -n 3 "$f" | cut -c1-200
  done
done
