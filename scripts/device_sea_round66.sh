#!/usr/bin/env bash
# Issue 7, thirteenth session, call 6: the shared-key kernel on its own (scripts/probe_shared_kernel.py): launch
# settings (BLOCK_N 32 / 64 / 128 x 2 / 4 / 8 warps), the rows kernel on the same selection's per-row lists,
# FlexAttention on the selection's 64 x 64 block mask, dense cuDNN; the density rho for the issue's >= 0.8 / rho goal.
# Causal 16k and 64k, SEA fast + shared_keys=64 budget 2 -> $OUT/probe.txt.
# Predictions (written before the run): the present setting (64, 4 warps) within 15 % of the best; the shared kernel
# 2-3x faster than the rows kernel on the same lists (call 4: 0.32 vs 0.49 ms on per-row SEA's own lists at 16k);
# Flex on the block mask slower than the shared kernel (it computes whole 64-key blocks); speedup over cuDNN ~4x at
# 16k, ~20x at 64k, far below 0.8 / rho (rho ~0.01-0.02 at 16k).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 500 python3 scripts/probe_shared_kernel.py --T 16384 65536 2>&1 | grep -v Warning | tee "$OUT/probe.txt" | tail -n 40
