#!/usr/bin/env bash
# Issue 7, twentieth session, call 1 (results/nvidia-h200/sea-bf16-encoder/call1/): the nineteenth session's last,
# untimed commit 1ccc848 (identity values inside the compiled estimator, cached cell widths, no average-context
# weights), and encoder_operands=bf16 (the Performer's output stored in bf16 by the query pass, the head kernel's
# encoder Linear on bf16 operands). GPU tests of the kernels and of CUDA-graph replay; SEA's 8k profile with
# encoder_operands fp32 (with the calling lines of the small launches) and bf16, one with the head's 8-row tiles;
# the fidelity task on all-MiniLM-L6's q/k/v, fp32 against bf16 encoder operands, in one run.
# Predictions (written before the run): tests pass; 8k kernels 0.814 (sea-offsets/call3) -> ~0.78 ms at fp32
# operands (1ccc848: ~25-30 fewer launches), then bf16 operands: query pass 0.091 -> ~0.080, head 0.143 -> ~0.10
# (half its input bytes, bf16 products at twice TF32's rate), so ~0.72-0.74 ms; fidelity error +0.1 .. +0.5 %
# relative (a bf16 rounding of the Performer output and of the encoder's inputs; the rule allows 1 %).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 200 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py tests/test_favor_dense.py \
  tests/test_sea_graphs.py -p no:cacheprovider -rA > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 8
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o --top 45 --sites 60 > "$OUT/profile-8192-fp32.txt" 2>&1
echo "8k fp32 operands: $(grep -m1 'kernels sum' "$OUT/profile-8192-fp32.txt" | cut -c1-100)"
timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o,encoder_operands=bf16 --top 45 \
  > "$OUT/profile-8192-bf16.txt" 2>&1
echo "8k bf16 operands: $(grep -m1 'kernels sum' "$OUT/profile-8192-bf16.txt" | cut -c1-100)"
for f in profile-8192-fp32 profile-8192-bf16; do
  grep -E "_head_kernel|_key_pf|_query_kernel|sm90_xmma|_shared_fwd" "$OUT/$f.txt" | cut -c1-60 | sed "s/^/$f /"
done
timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o,encoder_operands=bf16 --top 45 \
  --set kernels.sea_bidir_head.BLOCK_T=8 > /tmp/p8.txt 2>&1
echo "8k bf16 operands, head BLOCK_T=8: $(grep -m1 'kernels sum' /tmp/p8.txt | cut -c1-100)"
grep -E "_head_kernel" /tmp/p8.txt | cut -c1-60
M=sea:shared_keys=64:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:sparse_pieces=1
C=.carry/capbi/minilm-512x2.safetensors
timeout 120 python3 -m harness fidelity --capture-in $C --device cuda --dtype bf16 --out "$OUT/fidelity" --quiet \
  --methods $M,$M:encoder_operands=bf16 2>&1 | tail -n 6
timeout 60 python3 scripts/profile_sea.py --T 65536 --opts $o,encoder_operands=bf16 --top 30 \
  > "$OUT/profile-65536-bf16.txt" 2>&1
echo "64k bf16 operands: $(grep -m1 'kernels sum' "$OUT/profile-65536-bf16.txt" | cut -c1-100)"
grep -E "_head_kernel|_query_kernel" "$OUT/profile-65536-bf16.txt" | cut -c1-60
