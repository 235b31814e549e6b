#!/usr/bin/env bash
# Issue 7, twenty-third session, call 7 (results/nvidia-h200/sea-graph-call/call5/ and sea-vs-dense-13/): round120's
# steps again (GPU tests, SEA's 8k and 64k forwards with CONTEXT_KERNEL on / off, the bidirectional table) after the
# context kernel's second form. Call 6 measured the first at 0.017 ms at 8k (1024 programs of 2 cells, column sums
# gathered cell by cell, the last program summing 64 partial rows one by one), against ~0.020 of tensor ops: kernels
# 0.608 -> 0.605, 64k 3.888 -> 3.886; the table 8k 1.133x cuDNN. Now 256 programs of 8 cells, the column sums as
# [128, 8] tiles, the partial rows summed as one tile. Predictions (before the run): context kernel 0.017 -> ~0.008
# ms at 8k, ~0.071 -> ~0.045 at 64k; 8k kernels ~0.596; table 8k ~1.12x, 64k ~0.105x.
exec bash scripts/device_sea_round120.sh
