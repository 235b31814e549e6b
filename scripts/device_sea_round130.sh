#!/usr/bin/env bash
# Issue 7, twenty-fifth session, call 1 (results/nvidia-h200/sea-rows/call1/): the bidirectional estimator in blocks
# of query rows (sea query_blocks with shared_keys: Estimator._forward_rows, the fused Performer's key summary made
# once, then per block its query pass, head, convolutions and block sums on the block plus 6 halo rows a side), beside
# the whole call, in the table's fast configuration at nbf=8.
# Predictions (before the run): GPU tests pass (blocked block sums within ~1e-2 of the whole call's at 8k: cuDNN may
# pick other algorithms for other lengths). Peak memory / SDPA-flash: whole 14.5x (8k), 9.8x (64k, 256k); 16 blocks
# ~2.0x at 8k (the key pass's partial sums weigh most there) and ~1.7x at 64k-256k; 32 blocks ~1.7x / ~1.4x.
# Latency / cuDNN: whole 8k ~0.98x, 64k ~0.09x, 256k ~0.020x; 16 blocks 8k ~1.7x (~150 more small launches,
# replayed), 64k ~0.11x, 256k ~0.022x; 32 blocks 8k ~2.5x, 64k ~0.13x. Errors against exact equal to the whole
# call's to ~3 digits. The 64k profile of 16 blocks: ~8 launches a block, ~3.6-4.2 ms of kernels.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_sea_estimator_rows.py tests/test_sea_bidir_head_tail.py \
  tests/test_sea_shared.py -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 6
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
g=$g:shared_keys=64:cuda_graph=16384:encoder_operands=bf16:identity_values=kernel:nbf=8
bash scripts/device_sweep.sh table 330 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g,$g:query_blocks=16,$g:query_blocks=32 \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 8
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel,nbf=8,query_blocks=16
f=$OUT/profile-65536-qb16.txt
timeout 60 python3 scripts/profile_sea.py --T 65536 --opts $o --top 16 --iters 20 > "$f" 2>&1
grep -m1 'kernels sum' "$f"; grep -o 'query_blocks=[^,]*' "$f" | head -1
grep -q 'kernels sum' "$f" || tail -n 3 "$f" | cut -c1-200
