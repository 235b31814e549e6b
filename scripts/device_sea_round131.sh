#!/usr/bin/env bash
# Issue 7, twenty-fifth session, call 2 (results/nvidia-h200/sea-rows/call2/): the estimator in blocks of rows
# (query_blocks with shared_keys) replayed as CUDA graphs by the harness (--cuda-graph: every method captured on the
# harness's own q, k, v, so no static copies; memory is the eager call's peak). Call 1 (sea-rows/call1/): in eager
# mode 16 blocks are host-bound at 64k (13.9 ms against 4.07 ms of kernels); the method's cuda_graph option copies q,
# k, v and o into static buffers (4x flash's memory at 8k-16k); peak memory 1.47x SDPA-flash's at 64k and 256k with 16
# and 32 blocks alike (the sparse attention stage's peak, not the blocks').
# Predictions (before the run): peak memory / SDPA-flash: whole 15x (8k), 9.8x (64k, 256k); 4 blocks ~1.9x (8k),
# ~1.5x (64k, 256k); 8 and 16 blocks ~1.5x at every T. Latency / cuDNN, both replayed: whole 8k ~0.97x, 64k ~0.09x;
# 4 blocks 8k ~1.15x, 64k ~0.095x; 8 blocks 8k ~1.3x, 16k ~0.55x, 64k ~0.10x, 256k ~0.021x; 16 blocks 8k ~1.6x,
# 64k ~0.11x. The 64k profile of 8 blocks: ~3.6 ms of kernels (16 blocks: 4.07).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
g=$g:shared_keys=64:encoder_operands=bf16:identity_values=kernel:nbf=8
bash scripts/device_sweep.sh table 420 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --cuda-graph \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$g,$g:query_blocks=4,$g:query_blocks=8,$g:query_blocks=16 \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 8
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl" | cut -c1-150
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel,nbf=8,query_blocks=8
f=$OUT/profile-65536-qb8.txt
timeout 60 python3 scripts/profile_sea.py --T 65536 --opts $o --top 16 --iters 20 > "$f" 2>&1
grep -m1 'kernels sum' "$f"
grep -q 'kernels sum' "$f" || tail -n 3 "$f" | cut -c1-200
