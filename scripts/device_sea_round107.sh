#!/usr/bin/env bash
# Issue 7, twenty-first session, call 2 of the levers in round105's header (results/nvidia-h200/sea-bf16-encoder/
# call2/). round105 (call1) measured: 8k kernels 0.759 ms as committed (0.814 in sea-offsets/call3: predicted ~0.78);
# encoder_operands=bf16 made the head 0.145 -> 0.220 ms (the fp32 weight rounded to bf16 in every program: the
# eighteenth session's 0.218 again); performer_dash=fp16 left the key pass at 0.146 -> 0.148 (the pass is not bound by
# its dash products); identity_values=kernel 0.759 -> 0.749 (concatenation 0.014 gone, key pass +0.004); the GPU
# identity test's bit-equality failed for the narrow accumulator (order of tensor-core sums; the test now states
# what holds); the 64k profile with all three options aborted (which option: this call says).
# This call: the new identity test and the head's GPU tests; 8k profiles of the committed form, identity, the head
# with lin_w rounded once on the host (bf16), bf16 + identity; 64k profile lines of each option alone (errors shown);
# fidelity of the committed form and each option on all-MiniLM-L6's q/k/v (carry .carry/capbi).
# Predictions (written before the run): tests pass; 8k head with a bf16 weight 0.145 -> ~0.11 ms, query pass 0.092 ->
# ~0.082 (bf16 c stored), kernels 0.759 -> ~0.71, bf16 + identity ~0.70; fidelity: bf16 operands +0.0 .. +0.5 %
# relative error, dash within 0.1 %, identity the committed numbers within 1e-5 relative.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py tests/test_favor_dense.py \
  -k "identity_columns or head_and_tail" -p no:cacheprovider -rA > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|rel L2" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 8
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
prof() {  # file, T, extra options, extra profile_sea arguments...
  local f=$1 T=$2 extra=$3; shift 3
  timeout 60 python3 scripts/profile_sea.py --T $T --opts $o$extra --top 45 "$@" > "$f" 2>&1
  echo "$T ${extra:-as committed} $*: $(grep -m1 'kernels sum' "$f" | cut -c1-100)"
  grep -E "_head_kernel|_key_pf|_query_kernel|cat_0" "$f" | cut -c1-60
  grep -q 'kernels sum' "$f" || grep -v "^ *File\|^  " "$f" | tail -n 4 | cut -c1-200
}
prof "$OUT/profile-8192-committed.txt" 8192 ""
prof /tmp/p-ident.txt 8192 ",identity_values=kernel"
prof "$OUT/profile-8192-bf16.txt" 8192 ",encoder_operands=bf16"
prof /tmp/p-bf16-ident.txt 8192 ",encoder_operands=bf16,identity_values=kernel"
prof /tmp/p64-ident.txt 65536 ",identity_values=kernel"
prof /tmp/p64-dash.txt 65536 ",performer_dash=fp16"
prof /tmp/p64-bf16.txt 65536 ",encoder_operands=bf16"
M=sea:shared_keys=64:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:sparse_pieces=1
timeout 150 python3 -m harness fidelity --capture-in .carry/capbi/minilm-512x2.safetensors --device cuda \
  --dtype bf16 --out "$OUT/fidelity" --quiet \
  --methods $M,$M:encoder_operands=bf16,$M:performer_dash=fp16,$M:identity_values=kernel 2>&1 | tail -n 8
