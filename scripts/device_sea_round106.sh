#!/usr/bin/env bash
# NOT RUN: superseded in the twenty-first session by round107.sh (its fidelity part, results/.../call2/) and
# round108.sh (the table without performer_dash=fp16, call3/) after round105 showed the head regression; kept as
# written, with the predictions it carried.
# Issue 7, twentieth session's levers, second call (after scripts/device_sea_round105.sh, whose header and
# predictions hold for both; results/nvidia-h200/sea-bf16-encoder/call2/): fidelity on all-MiniLM-L6's q/k/v for the
# committed form and each of the three options, in one run (carry .carry/capbi); the bidirectional table (the
# sea-vs-dense-9 command) with the committed SEA and SEA with all three options, in one run. At most 8 files.
# Predictions (written before the run): fidelity error changes within 0.1 % relative except encoder_operands=bf16
# (+0.1 .. +0.5 %); identity_values=kernel the same numbers as committed; table 8k ~1.50x committed and ~1.20x with the
# options (1.528x in sea-vs-dense-9), 16k ~0.62x / ~0.52x, 64k ~0.137x / ~0.12x, 256k ~0.032x / ~0.029x.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
M=sea:shared_keys=64:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:sparse_pieces=1
C=.carry/capbi/minilm-512x2.safetensors
timeout 150 python3 -m harness fidelity --capture-in $C --device cuda --dtype bf16 --out "$OUT/fidelity" --quiet \
  --methods $M,$M:encoder_operands=bf16,$M:performer_dash=fp16,$M:identity_values=kernel 2>&1 | tail -n 6
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
g=$g:shared_keys=64:cuda_graph=16384
a=encoder_operands=bf16:performer_dash=fp16:identity_values=kernel
bash scripts/device_sweep.sh table 300 --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 \
  --methods sdpa:backend=cudnn,sdpa:backend=flash,$g,$g:$a \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 3
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
