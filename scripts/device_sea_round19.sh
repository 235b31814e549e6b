#!/usr/bin/env bash
# Issue 7, seventh session, first lease (one lent single-GPU machine, bf16, B=1, H=16, D=64):
#   1. quality gate of estimator_precision=tf32 now reaching the estimator's PyTorch matmuls and cuDNN
#      convolutions (the bidirectional decoder), on real bidirectional q/k/v (all-MiniLM-L6 capture carried in
#      .carry/capbi), run with both TF32 flags off first (as the harness worker sets them) -> $OUT/fidelity/
#   2. bidirectional 8k / 64k / 256k beside cuDNN, SEA fast with estimator_precision fp32 and tf32 -> $OUT/bidir/
#   3. launch constants of the bidirectional Performer kernel (kernels/favor_dense.py) at 64k -> $OUT/tune-favor.txt
#   4. kernel + host profiles: bidirectional SEA fast whole at 64k, bidirectional in 16 query blocks at 16k, causal
#      in 64 query blocks at 64k -> $OUT/profile-*.txt
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
cap=$(ls .carry/capbi/*.safetensors | head -n 1)
f=sea:performer_dtype=bf16
timeout 100 python3 -c "import sys, torch
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
from harness.cli import main
sys.exit(main(sys.argv[1:]))" fidelity --capture-in "$cap" --dtype bf16 --device cuda --out /tmp/fidelity --quiet \
  --methods $f,$f:estimator_precision=tf32 >"$OUT/fidelity.txt" 2>&1
echo "fidelity exit $?"; grep -E "mean|Error" "$OUT/fidelity.txt" | cut -c1-60 | tail -n 4
mkdir -p "$OUT/fidelity" && cp /tmp/fidelity/meta.json /tmp/fidelity/rows.jsonl "$OUT/fidelity/" 2>/dev/null
fast=sea:performer_dtype=bf16:compile=estimator
bash scripts/device_sweep.sh bidir 140 --device cuda \
  --methods sdpa:backend=cudnn,$fast:estimator_precision=tf32,$fast \
  --method-args sea.max_len=262144 --seq-lens 8192,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --bidirectional --mode fwd --rep-ms 200 --timeout 240
timeout 100 python3 scripts/tune_sea_kernels.py --T 65536 --only favor \
  --opts performer_dtype=bf16,estimator_precision=tf32 >"$OUT/tune-favor.txt" 2>&1
echo "tune exit $?"; grep -E "^\|" "$OUT/tune-favor.txt" | head -n 20
fast=performer_dtype=bf16,compile=estimator,estimator_precision=tf32
timeout 80 python3 scripts/profile_sea.py --T 65536 --iters 5 --warmup 2 --top 30 \
  --opts $fast >"$OUT/profile-bidir-64k.txt" 2>&1
echo "bidir profile exit $?"; grep -E "wall" "$OUT/profile-bidir-64k.txt"
timeout 90 python3 scripts/profile_sea.py --T 16384 --iters 1 --warmup 1 --host --top 30 \
  --opts $fast,query_blocks=16 >"$OUT/profile-bidir-blocks-16k.txt" 2>&1
echo "bidir blocks exit $?"; grep -E "wall" "$OUT/profile-bidir-blocks-16k.txt"
timeout 80 python3 scripts/profile_sea.py --T 65536 --causal --iters 2 --warmup 2 --host --top 30 \
  --opts $fast,query_blocks=64 >"$OUT/profile-causal-blocks-64k.txt" 2>&1
echo "causal blocks exit $?"; grep -E "wall" "$OUT/profile-causal-blocks-64k.txt"
