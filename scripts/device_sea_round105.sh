#!/usr/bin/env bash
# Issue 7, twentieth session's levers (written without device time left in that session; to run first in the next
# one; results/nvidia-h200/sea-bf16-encoder/call1/): the nineteenth session's last, untimed commit 1ccc848 (identity
# values inside the compiled estimator, cached cell widths, no average-context weights), and three sea options:
# encoder_operands=bf16 (the Performer's output stored in bf16 by the query pass, the head kernel's encoder Linear on
# bf16 operands); performer_dash=fp16 (both Performer passes' dash as one fp16 product: TF32's 11-bit operand
# rounding, half its operand bytes, one product a key tile instead of bf16x2's two); identity_values=kernel (the
# identity value columns made in the key pass, their products in a narrow accumulator; kernels/favor_dense.py
# KEY_ID_SPARSE=False: the dense form, measured slower in the sixteenth session).
# This call: GPU tests of the kernels and of CUDA-graph replay; SEA's 8k profile in six forms (two kept as files: as
# committed, with the calling lines of the small launches, and all three options on), a 64k profile line. The next
# call (scripts/device_sea_round106.sh): fidelity and the bidirectional table. At most 8 files under $OUT.
# Predictions (written before the run): tests pass; 8k kernels 0.814 (sea-offsets/call3) -> ~0.78 ms as committed
# (1ccc848: ~25-30 fewer launches); bf16 operands: query pass 0.091 -> ~0.080, head 0.143 -> ~0.10 ms; fp16 dash:
# key pass 0.145 -> ~0.115 (two products a tile instead of three), query pass -> ~0.075 (fp16 dot instead of TF32's
# at half the operand bytes); identity values in the key pass: the 0.012 ms concatenation gone, key pass ~0.115 ->
# ~0.09 (its value product d columns wide instead of 2d); all three ~0.65 ms. Fidelity: bf16 operands +0.1 .. +0.5 %
# relative error (the CPU restatement measured +0.0033 %), fp16 dash within 0.1 % (CPU interpreter: -0.002 %).
# Table: 8k ~1.20x cuDNN with all three (1.528x in sea-vs-dense-9), 64k ~0.12x.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 200 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py tests/test_favor_dense.py \
  tests/test_sea_graphs.py -p no:cacheprovider -rA > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|rel L2" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 12
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
all=encoder_operands=bf16,performer_dash=fp16,identity_values=kernel
prof() {  # file (under $OUT, or /tmp/...), T, extra options, extra profile_sea arguments...
  local f=$1 T=$2 extra=$3; shift 3
  timeout 60 python3 scripts/profile_sea.py --T $T --opts $o$extra --top 45 "$@" > "$f" 2>&1
  echo "$T ${extra:-as committed} $*: $(grep -m1 'kernels sum' "$f" | cut -c1-100)"
  grep -E "_head_kernel|_key_pf|_query_kernel|sm90_xmma|_shared_fwd|cat_0" "$f" | cut -c1-60
}
prof "$OUT/profile-8192-committed.txt" 8192 "" --sites 60
prof /tmp/p-bf16.txt 8192 ",encoder_operands=bf16"
prof /tmp/p-dash.txt 8192 ",performer_dash=fp16"
prof /tmp/p-ident.txt 8192 ",identity_values=kernel"
prof "$OUT/profile-8192-all.txt" 8192 ",$all"
prof /tmp/p-dense.txt 8192 ",$all" --set kernels.favor_dense.KEY_ID_SPARSE=False
prof /tmp/p-64k.txt 65536 ",$all"
