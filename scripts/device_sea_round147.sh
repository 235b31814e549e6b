#!/usr/bin/env bash
# Issue 7, twenty-sixth session, call 9 (results/nvidia-h200/sea-presets/call9/): the presets' quality on real q/k/v
# on the card (every kernel as the latency tables ran them: TF32, key blocks on FlexAttention, the fused fronts, the
# estimator in blocks), against SEA's paper configuration: SmolLM2-135M (causal; WikiText-2 test, T = 2048, layers
# 0, 6, .., 24, bf16) and all-MiniLM-L6 (bidirectional; 2 x 512 tokens, layers 0, 3), captured on the CPU
# (commands in the folder's README) and carried in .carry/cap/.
# Predictions (before the run): train within 1 % of the paper configuration's mean relative error (SmolLM2 ~0.886,
# MiniLM ~0.778; the rule of issue 7); fast lower (shared keys: SmolLM2 ~0.75-0.78, MiniLM ~0.57); lean equal to fast
# up to summation order (the same selections).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
m=sea,sea:preset=train,sea:preset=fast,sea:preset=lean
timeout 250 python3 -m harness fidelity --capture-in .carry/cap/smollm2-2048-l6-bf16.safetensors --dtype bf16 \
  --device cuda --out "$OUT/smollm2" --quiet --methods $m 2>&1 | grep -E "mean|rows in|rror" | cut -c1-90
timeout 150 python3 -m harness fidelity --capture-in .carry/cap/minilm-512x2-l3.safetensors --dtype bf16 \
  --device cuda --out "$OUT/minilm" --quiet --methods $m 2>&1 | grep -E "mean|rows in|rror" | cut -c1-90
