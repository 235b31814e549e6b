#!/usr/bin/env bash
# Issue 7, twenty-sixth session, call 7 (results/nvidia-h200/sea-presets/call7/): call 6's launch sites showed the
# causal blocks' three copies a block into the whole call's scores and scalers (24 launches, 0.039 ms at 16k in 8
# blocks); they are now kept per block and joined once (torch.cat: three launches a call), and the bidirectional
# blocks' scalers likewise (8 copies -> 1). A/B against e0537a1 (.carry/base) in one harness table each, same card,
# preset=lean in both directions.
# Predictions (before the run): GPU tests pass. Causal 16k in 8 blocks 1.168 -> ~1.135 ms (0.956x -> ~0.93x cuDNN),
# 8k -0.03 ms, 64k -0.03 ms; bidirectional 8k -0.01 ms; memory unchanged to the MiB.
set -u
export PYTHONUNBUFFERED=1
base=$1
timeout 200 python3 -m pytest -q -m gpu tests/test_sea_estimator_rows.py -p no:cacheprovider -rA \
  > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 6
args="--device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 --head-dim 64 --dtype bf16 --cuda-graph
  --seq-lens 8192,16384,65536 --both-directions --mode fwd --rep-ms 50 --timeout 120"
(cd .carry/base && HARNESS_GIT_COMMIT=$base bash scripts/device_sweep.sh base 200 $args \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,sea:preset=lean) 2>&1 | grep -E "exit|rows$"
bash scripts/device_sweep.sh new 200 $args --methods sdpa:backend=cudnn,sdpa:backend=flash,sea:preset=lean \
  2>&1 | grep -E "exit|rows$"
