#!/usr/bin/env bash
# Issue 7, eighteenth session, call 6 (results/nvidia-h200/sea-decoder-ends/fidelity/): the session's four changes to
# the bidirectional estimator (parity-form last convolution, fused tail, fused head, cuDNN's fused convolution + ReLU)
# priced together on real q/k/v on the card: the fidelity task on all-MiniLM-L6's captured q/k/v (.carry/capbi, 2 x 512
# tokens of WikiText-2 test, 6 layers, 12 heads, D = 32) in bf16, SEA with the fast options and shared keys (eager:
# each layer's compile would cost more device time than the call has), with the changes and with all four off.
# Predictions (written before the run): errors, KL and recall equal within 1e-3 relative.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
M=sea:shared_keys=64:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:sparse_pieces=1
C=.carry/capbi/minilm-512x2.safetensors
timeout 120 python3 -m harness fidelity --capture-in $C --device cuda --dtype bf16 --out "$OUT/new" --quiet \
  --methods $M 2>&1 | tail -n 12
timeout 120 python3 -c "import sys, methods.sea.estimator as e; e.PARITY_CONV3 = False; e.BIDIR_TAIL = False; \
e.BIDIR_HEAD = False; e.CONV_RELU = False; from harness.cli import main; sys.exit(main(sys.argv[1:]))" \
  fidelity --capture-in $C --device cuda --dtype bf16 --out "$OUT/old" --quiet --methods $M 2>&1 | tail -n 12
