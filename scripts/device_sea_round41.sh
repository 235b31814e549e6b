#!/usr/bin/env bash
# Issue 7, tenth session (one lent single-GPU machine, bf16, B=1, H=16, D=64, SEA fast + compile):
# sparse_backward=auto is now keys_rows for 16-bit inputs (timed in round 40), and the new sparse_pieces option
# (kernels/sea_sparse_rows.py PIECES: 16-bit pieces of P / dS in the rows kernels' products; 1 = FlashAttention's
# rounding). Prediction for pieces=1 at 32k causal fwd+bwd: rows forward 1.11 -> ~0.85 ms, dq pass 0.83 -> ~0.65,
# key pass 1.42 -> ~1.0 (four of its eight small products per step gone); the step -0.8 +-0.4 ms.
#   1. GPU tests of kernels/sea_sparse_rows_bwd.py (gradients against the row kernel's; times at 8k, pieces=1 too)
#   2. quality gate on real causal q/k/v (SmolLM2-135M capture carried in .carry/cap): SEA fast with sparse_pieces
#      3 / 2 / 1 -> $OUT/fidelity.txt
#   3. profile_sea --backward at 32k, PIECES 3 / 1 / 3 (A/B/A) -> $OUT/profile-p*.txt
#   4. the fwd+bwd table (SDPA-flash, SEA fast, SEA fast + sparse_pieces=1) and the causal forward table (cuDNN,
#      SEA fast, SEA fast + sparse_pieces=1), one harness command each -> $OUT/fwdbwd/, $OUT/fwd/
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -s -rA --tb=short -m gpu tests/test_sea_sparse_rows_bwd.py >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tests exit $?"; grep -E " ms|passed|failed|Error" "$OUT/gpu-tests.txt" | tail -n 4
cap=$(ls .carry/cap/*.safetensors | head -n 1)
f=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16
timeout 150 python3 -c "import sys, torch
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
from harness.cli import main
sys.exit(main(sys.argv[1:]))" fidelity --capture-in "$cap" --dtype bf16 --device cuda --out /tmp/fidelity --quiet \
  --methods $f,$f:sparse_pieces=2,$f:sparse_pieces=1 >"$OUT/fidelity.txt" 2>&1
echo "fidelity exit $?"; grep -E "mean|Error" "$OUT/fidelity.txt" | cut -c1-100 | tail -n 6
fast=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator
for v in p3:3 p1:1 p3b:3; do
  name=${v%%:*}; pieces=${v#*:}
  timeout 150 python3 scripts/profile_sea.py --T 32768 --causal --backward --opts "$fast" --top 30 --iters 20 \
    --set kernels.sea_sparse_rows.PIECES=$pieces >"$OUT/profile-$name.txt" 2>&1
  echo "profile $name exit $?"; grep -E "wall|_bwd_kernel|_fwd_kernel" "$OUT/profile-$name.txt" | cut -c1-120
done
f=$f:compile=estimator
bash scripts/device_sweep.sh fwdbwd 200 --device cuda \
  --methods sdpa:backend=flash,$f,$f:sparse_pieces=1 \
  --method-args sea.max_len=65536 --seq-lens 16384,32768,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 \
  --causal --mode fwd+bwd --rep-ms 20 --timeout 150
bash scripts/device_sweep.sh fwd 150 --device cuda \
  --methods sdpa:backend=cudnn,$f,$f:sparse_pieces=1 \
  --method-args sea.max_len=65536 --seq-lens 16384,65536 --batch 1 --heads 16 --head-dim 64 --dtype bf16 \
  --causal --mode fwd --rep-ms 50 --timeout 150
