#!/usr/bin/env bash
# Issue 7, twenty-third session, call 3 (results/nvidia-h200/sea-graph-call/call2/). Two untimed changes:
# (a) methods/sea/graphs.py COPY_IN_CHECK: a replay's finite check copies q, k, v into the graph's inputs as it reads
#     them (kernels/finite_check.py copy_to), one kernel instead of the check (0.018 ms at 8k) and three copies (0.025).
#     Predicted: the graph call's kernels 0.660 -> ~0.640 ms, its wall 0.693 -> ~0.675.
# (b) kernels/sea_bidir_head.py PERSISTENT: programs that load the bf16 weights once (wgmma, 1 program an SM by its
#     shared memory: 200 KB at 2 stages, 147 KB at 1) and walk the time blocks. Predicted: head 0.110 -> ~0.08 ms at
#     8k (the weights' 230 MB of L2 reads gone), 64k ~0.82 -> ~0.6.
# GPU tests first (head, graphs, finite check), then SEA's 8k profiles.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_sea_bidir_head_tail.py tests/test_sea_graphs.py \
  tests/test_finite_check.py -k "head_and_tail or replay or gpu_flags" -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 8
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel
H=kernels.sea_bidir_head
run() {   # name T opts sets...
  local name=$1 T=$2 opts=$3; shift 3
  local f=/tmp/p-$name.txt sets=()
  for s in "$@"; do sets+=(--set "$s"); done
  timeout 90 python3 scripts/profile_sea.py --T $T --opts $opts --top 12 --iters 20 "${sets[@]}" > "$f" 2>&1
  echo "$name: $(grep -m1 'forward wall' "$f" | sed -E 's/forward wall ([0-9.]+) ms.*kernels sum ([0-9.]+) ms.*/wall \1 kernels \2/')" \
    "head $(grep -m1 -E ' _head(_persistent)?_kernel' "$f" | awk '{print $1}')" \
    "check $(grep -m1 '_nonfinite3_kernel' "$f" | awk '{print $1}') memcpy $(grep -m1 'Memcpy DtoD' "$f" | awk '{print $1}')"
  grep -q 'kernels sum' "$f" || tail -n 3 "$f" | cut -c1-200
  cat "$f" >> "$OUT/profiles.txt"
}
run graph-copycheck 8192 $o,cuda_graph=16384
run graph-plain 8192 $o,cuda_graph=16384 methods.sea.graphs.COPY_IN_CHECK=False
run head-base 8192 $o
run head-p1s2 8192 $o $H.PERSISTENT=True $H.PERSISTENT_PER_SM=1
run head-p2s2 8192 $o $H.PERSISTENT=True $H.PERSISTENT_PER_SM=2
run head-p1s1 8192 $o $H.PERSISTENT=True $H.PERSISTENT_PER_SM=1 $H.PERSISTENT_STAGES=1
run head-p1s3 8192 $o $H.PERSISTENT=True $H.PERSISTENT_PER_SM=1 $H.PERSISTENT_STAGES=3
run head-p2w4 8192 $o $H.PERSISTENT=True $H.PERSISTENT_PER_SM=2 $H.NUM_WARPS=4
run head-base-64k 65536 $o
run head-p1s2-64k 65536 $o $H.PERSISTENT=True $H.PERSISTENT_PER_SM=1
