#!/usr/bin/env bash
# Issue 7, seventh session, second lease (one lent single-GPU machine, bf16, B=1, H=16, D=64, bidirectional):
#   1. bidirectional SEA fast in 64 query blocks (histograms now by scatter_add_) beside cuDNN and SDPA-flash:
#      latency and peak memory at 8k / 64k / 256k -> $OUT/bidir-blocks/
#   2. the same methods whole under CUDA-graph replay (harness --cuda-graph) at 8k / 16k / 64k -> $OUT/bidir-graphs/
#   3. launch constants of kernels/favor_dense.py with a bidirectional layer's m = 266 features -> $OUT/tune-favor.txt
#   4. the estimator_precision=tf32 quality gate again, all rows kept -> $OUT/fidelity/
#   5. kernel + host profile of bidirectional blocks at 16k -> $OUT/profile-bidir-blocks-16k.txt
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fast=sea:performer_dtype=bf16:compile=estimator:estimator_precision=tf32
bash scripts/device_sweep.sh bidir-blocks 150 --device cuda \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$fast:query_blocks=64 \
  --method-args sea.max_len=262144 --seq-lens 8192,65536,262144 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --bidirectional --mode fwd --rep-ms 100 --timeout 240
bash scripts/device_sweep.sh bidir-graphs 110 --device cuda --cuda-graph \
  --methods sdpa:backend=cudnn,$fast \
  --method-args sea.max_len=65536 --seq-lens 8192,16384,65536 --batch 1 --heads 16 --head-dim 64 \
  --dtype bf16 --bidirectional --mode fwd --rep-ms 100 --timeout 200
timeout 80 python3 scripts/tune_sea_kernels.py --T 65536 --only favor \
  --opts performer_dtype=bf16,estimator_precision=tf32 >"$OUT/tune-favor.txt" 2>&1
echo "tune exit $?"; grep -E "^\||m=" "$OUT/tune-favor.txt" | head -n 20
cap=$(ls .carry/capbi/*.safetensors | head -n 1)
f=sea:performer_dtype=bf16
timeout 80 python3 -c "import sys, torch
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
from harness.cli import main
sys.exit(main(sys.argv[1:]))" fidelity --capture-in "$cap" --dtype bf16 --device cuda --out /tmp/fidelity --quiet \
  --methods $f,$f:estimator_precision=tf32 >"$OUT/fidelity.txt" 2>&1
echo "fidelity exit $?"; ls /tmp/fidelity
mkdir -p "$OUT/fidelity" && cp -r /tmp/fidelity/. "$OUT/fidelity/"
fast=performer_dtype=bf16,compile=estimator,estimator_precision=tf32
timeout 70 python3 scripts/profile_sea.py --T 16384 --iters 1 --warmup 1 --host --top 30 \
  --opts $fast,query_blocks=16 >"$OUT/profile-bidir-blocks-16k.txt" 2>&1
echo "bidir blocks exit $?"; grep -E "wall" "$OUT/profile-bidir-blocks-16k.txt"
