#!/usr/bin/env bash
# Issue 7, nineteenth session, call 2 (results/nvidia-h200/sea-offsets/call2/ and ../sea-vs-dense-9/): the head
# kernel with the encoder's row operations written out again (call 1 found it at 0.213 ms instead of 0.145 at 8k
# after the shared-helper refactor), the query offset from the combine's block maxima (call 1's one-program max in
# the key pre-pass cost 0.007 ms); GPU tests; SEA's 8k profile with the calling lines of every aten launch (--sites);
# the bidirectional table (the same harness command as sea-vs-dense-8); the fidelity task on MiniLM's q/k/v with the
# offsets on and off; 64k profile.
# Predictions (written before the run): tests pass; 8k kernels 0.912 -> ~0.84 ms (head 0.213 -> ~0.145, pre-pass
# 0.015 -> ~0.008); table 8k ~1.60x (1.637x in sea-vs-dense-8), 16k ~0.65x, 64k ~0.138x, 256k ~0.032x; fidelity
# errors with / without the offsets equal within 1e-4 relative (the same function).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
cp .carry/r103/sea_topk_global.py kernels/sea_topk_global.py        # the committed select (a helper edits it here)
cp .carry/r103/test_sea_topk_global.py tests/test_sea_topk_global.py
timeout 120 python3 -m pytest -q -m gpu tests/test_favor_dense.py tests/test_sea_bidir_head_tail.py \
  tests/test_sea_encoder.py -p no:cacheprovider -rA > "$OUT/gpu-tests-full.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed" "$OUT/gpu-tests-full.txt" | cut -c1-160 | tail -n 8
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
timeout 50 python3 scripts/profile_sea.py --T 8192 --opts $o --top 40 --sites 45 > "$OUT/profile-8192-new.txt" 2>&1
echo "8k: $(grep -m1 'kernels sum' "$OUT/profile-8192-new.txt" | cut -c1-100)"
grep -E "_head_kernel|_key_pf|_query_kernel|_key_sqnorm|_combine" "$OUT/profile-8192-new.txt" | cut -c1-60 | head -n 5
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh table 220 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g:shared_keys=64:cuda_graph=16384 \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 2
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
M=sea:shared_keys=64:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:sparse_pieces=1
C=.carry/r103/minilm-512x2.safetensors
timeout 70 python3 -m harness fidelity --capture-in $C --device cuda --dtype bf16 --out "$OUT/fidelity/new" --quiet \
  --methods $M 2>&1 | tail -n 3
timeout 70 python3 -c "import sys, kernels.favor_dense as f; f.KEY_OFFSET = f.QUERY_OFFSET = 'running'; \
from harness.cli import main; sys.exit(main(sys.argv[1:]))" \
  fidelity --capture-in $C --device cuda --dtype bf16 --out "$OUT/fidelity/old" --quiet --methods $M 2>&1 | tail -n 3
timeout 40 python3 scripts/profile_sea.py --T 65536 --opts $o --top 40 > "$OUT/profile-65536-new.txt" 2>&1
echo "64k: $(grep -m1 'kernels sum' "$OUT/profile-65536-new.txt" | cut -c1-100)"
