#!/usr/bin/env bash
# Issue 7's table, one call on a lent single-GPU machine (bf16, B=1, H=16, D=64):
#   1. sea-vs-dense: SEA beside cuDNN and SDPA-flash at T = 4k, 16k, 64k, 256k, both directions, forward:
#      sea (defaults: fp32 Performer, kernels where they serve), sea fastest (bf16 Performer operands + compiled
#      estimator), sea in 32 query blocks (memory) -> $OUT/sea-vs-dense/{meta.json,rows.jsonl}
#   2. sea-fwdbwd: forward+backward at 32k causal beside SDPA-flash and cuDNN, SEA's backward per stage
#   3. a kernel profile of the query-block forward at 64k (host-bound or not: wall vs kernel sum)
#   bash scripts/device_sea_vs_dense.sh [SECONDS for the sweep, default 420]
# Run with HARNESS_GIT_COMMIT=<commit> so the run directory names the tree. A partial sweep carried in
# .carry/sea-vs-dense is resumed (scripts/device_sweep.sh).
set -u
secs=${1:-420}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
bash scripts/device_sweep.sh sea-vs-dense "$secs" --device cuda \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,sea,sea:performer_dtype=bf16:compile=estimator,sea:query_blocks=32 \
  --method-args sea.max_len=262144 --seq-lens 4096,16384,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --both-directions --mode fwd --rep-ms 20 --timeout 240
bash scripts/device_sweep.sh sea-fwdbwd 100 --device cuda --methods sdpa:backend=flash,sdpa:backend=cudnn,sea \
  --seq-lens 32768 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --causal --mode fwd+bwd --rep-ms 20 --timeout 90
timeout 60 python3 scripts/profile_sea.py --T 65536 --causal --opts query_blocks=32 >"$OUT/profile-qb32.txt" 2>&1
echo "profile exit $?"; grep -v -i warn "$OUT/profile-qb32.txt" | head -n 12
