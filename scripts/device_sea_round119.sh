#!/usr/bin/env bash
# Issue 7, twenty-third session, call 5 (results/nvidia-h200/sea-graph-call/call3/): existing knobs re-swept at
# this session's kernels, SEA's bidirectional 8k forward (and 64k for the block-size knobs), no code change:
# favor_dense KEY_DIAG=tile (|k'|^2 summed in the key pass instead of _key_sqnorm_kernel's 0.007 ms launch; "pre"
# was chosen when the key pass's loop was ~1.4x longer), KEY_PF_PROGRAMS 256 / 512, the radix select's tile
# (sea_topk_global BLOCK 4096 -> 1024 / 2048: 64 programs a pass at 8k; its four count-and-pick launches take 0.024
# ms) and warps, the tail's HEAD_GROUPS 2 / 8. Predictions (before the run): KEY_DIAG=tile -0.004 ms (sqnorm gone,
# key pass +0.003); PROGRAMS within 2 %; BLOCK 1024 count-and-pick 0.024 -> ~0.016; tail within 0.002.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel
F=kernels.favor_dense
G=kernels.sea_topk_global
run() {   # name T sets...
  local name=$1 T=$2; shift 2
  local f=/tmp/p-$name.txt sets=()
  for s in "$@"; do sets+=(--set "$s"); done
  timeout 90 python3 scripts/profile_sea.py --T $T --opts $o --top 14 --iters 20 "${sets[@]}" > "$f" 2>&1
  k() { grep -m1 " $1" "$f" | awk '{print $1}'; }
  echo "$name: kernels $(grep -m1 'kernels sum' "$f" | sed -E 's/.*kernels sum ([0-9.]+) ms.*/\1/')" \
    "key $(k _key_pf_kernel) sqnorm $(k _key_sqnorm_kernel) pick $(k _count_pick_kernel) mark $(k _mark_kernel)" \
    "tail $(k _tail_kernel) combine $(k _combine_kernel)"
  grep -q 'kernels sum' "$f" || tail -n 3 "$f" | cut -c1-200
  cat "$f" >> "$OUT/profiles.txt"
}
run base 8192
run diag-tile 8192 $F.KEY_DIAG=tile
run programs256 8192 $F.KEY_PF_PROGRAMS=256
run programs512 8192 $F.KEY_PF_PROGRAMS=512
run topk-block1024 8192 $G.BLOCK=1024
run topk-block2048 8192 $G.BLOCK=2048
run topk-block1024-w4 8192 $G.BLOCK=1024 $G.NUM_WARPS=4
run tail-groups2 8192 kernels.sea_bidir_tail.HEAD_GROUPS=2
run tail-groups8 8192 kernels.sea_bidir_tail.HEAD_GROUPS=8
run base-64k 65536
run diag-tile-64k 65536 $F.KEY_DIAG=tile
run topk-block1024-64k 65536 $G.BLOCK=1024
