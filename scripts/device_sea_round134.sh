#!/usr/bin/env bash
# Issue 7, twenty-fifth session, call 5 (results/nvidia-h200/sea-rows/call5/): which operation fails in SEA's
# bidirectional 8-block configuration at T = 4M (call 3: an illegal memory access; call 4: the probe died again after
# the decoder's blocks were cut below 2^31 elements). At 4M, q, k, v and the output hold exactly 2^32 elements each, so
# a kernel computing an element offset in 32 bits over them fails there and not at 2M (2^31: the largest offset
# 2^31 - 1 still fits). Prediction: the traceback names one of the whole-sequence kernels (key pass, context,
# shared attention) or a torch operation over q, k, v.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1
o=$o,shared_keys=64,encoder_operands=bf16,identity_values=kernel,nbf=8,query_blocks=8
CUDA_LAUNCH_BLOCKING=1 timeout 240 python3 scripts/diag_long_bidir.py --T 4194304 --opts $o > "$OUT/diag-4M.txt" 2>&1
echo "rc $?"; grep -v "^frame #" "$OUT/diag-4M.txt" | tail -n 30 | cut -c1-220
