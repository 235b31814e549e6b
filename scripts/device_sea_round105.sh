#!/usr/bin/env bash
# Issue 7, twentieth session's levers (written without device time left in that session; to run first in the next
# one; results/nvidia-h200/sea-bf16-encoder/call1/): the nineteenth session's last, untimed commit 1ccc848 (identity
# values inside the compiled estimator, cached cell widths, no average-context weights); encoder_operands=bf16 (the
# Performer's output stored in bf16 by the query pass, the head kernel's encoder Linear on bf16 operands); the
# Performer's dash as one fp16 product in both passes (kernels/favor_dense.py KEY_PF_DASH / QUERY_DASH = "fp16":
# TF32's 11-bit operand rounding, half its operand bytes, one product a key tile instead of bf16x2's two).
# The identity values made in the key pass (methods.sea.estimator.IDENTITY_IN_KERNEL: no concatenation kernel).
# GPU tests of the kernels and of CUDA-graph replay; SEA's 8k profile in four forms, two more printed only (the first
# with the calling lines of the small launches); fidelity on all-MiniLM-L6's q/k/v for the three forms in two runs;
# 64k profile lines.
# At most 8 files under $OUT.
# Predictions (written before the run): tests pass; 8k kernels 0.814 (sea-offsets/call3) -> ~0.78 ms as committed
# (1ccc848: ~25-30 fewer launches); bf16 operands: query pass 0.091 -> ~0.080, head 0.143 -> ~0.10 ms; fp16 dash:
# key pass 0.145 -> ~0.115 (two products a tile instead of three), query pass -> ~0.075 (fp16 dot instead of
# TF32's at half the operand bytes); both: ~0.68 ms. Fidelity error: bf16 operands +0.1 .. +0.5 % relative; fp16
# dash within 0.1 % (the same operand rounding as the one-pass TF32 products it replaces). Identity values in the key
# pass: the cat kernel's 0.012 ms gone, the key pass unchanged or a little faster (half its value bytes).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 200 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py tests/test_favor_dense.py \
  tests/test_sea_graphs.py -p no:cacheprovider -rA > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|rel L2" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 12
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
dash="--set kernels.favor_dense.KEY_PF_DASH=fp16 --set kernels.favor_dense.QUERY_DASH=fp16"
prof() {  # name, extra options, extra profile_sea arguments...
  local name=$1 extra=$2; shift 2
  timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o$extra --top 45 "$@" > "$OUT/profile-8192-$name.txt" 2>&1
  echo "8k $name: $(grep -m1 'kernels sum' "$OUT/profile-8192-$name.txt" | cut -c1-100)"
  grep -E "_head_kernel|_key_pf|_query_kernel|sm90_xmma|_shared_fwd" "$OUT/profile-8192-$name.txt" | cut -c1-60
}
prof fp32 "" --sites 60
prof bf16 ",encoder_operands=bf16"
prof dash "" $dash
prof both ",encoder_operands=bf16" $dash
M=sea:shared_keys=64:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:sparse_pieces=1
C=.carry/capbi/minilm-512x2.safetensors
timeout 120 python3 -m harness fidelity --capture-in $C --device cuda --dtype bf16 --out "$OUT/fidelity" --quiet \
  --methods $M,$M:encoder_operands=bf16 2>&1 | tail -n 6
timeout 120 python3 -c "import sys, kernels.favor_dense as f; f.KEY_PF_DASH = f.QUERY_DASH = 'fp16'; \
from harness.cli import main; sys.exit(main(sys.argv[1:]))" \
  fidelity --capture-in $C --device cuda --dtype bf16 --out /tmp/fid-dash --quiet \
  --methods $M,$M:encoder_operands=bf16 2>&1 | tail -n 6
mkdir -p "$OUT/fidelity-dash" && cp /tmp/fid-dash/rows.jsonl "$OUT/fidelity-dash/"
timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o,encoder_operands=bf16 --top 45 $dash \
  --set methods.sea.estimator.IDENTITY_IN_KERNEL=True > /tmp/p8id.txt 2>&1
echo "8k both + identity values in the key pass: $(grep -m1 'kernels sum' /tmp/p8id.txt | cut -c1-100)"
grep -E "_key_pf|cat_0" /tmp/p8id.txt | cut -c1-60
timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o,encoder_operands=bf16 --top 45 $dash \
  --set methods.sea.estimator.IDENTITY_IN_KERNEL=True --set kernels.favor_dense.KEY_ID_SPARSE=False \
  > /tmp/p8idd.txt 2>&1
echo "8k the same, identity columns in the dense value tile: $(grep -m1 'kernels sum' /tmp/p8idd.txt | cut -c1-100)"
grep -E "_key_pf" /tmp/p8idd.txt | cut -c1-60
timeout 60 python3 scripts/profile_sea.py --T 65536 --opts $o,encoder_operands=bf16 --top 30 $dash > /tmp/p64.txt 2>&1
echo "64k both: $(grep -m1 'kernels sum' /tmp/p64.txt | cut -c1-100)"
grep -E "_head_kernel|_query_kernel|_key_pf" /tmp/p64.txt | cut -c1-60
