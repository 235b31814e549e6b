#!/usr/bin/env bash
# Issue 7, sixteenth session, call 4 (results/nvidia-h200/sea-fewer-launches/call4/ and sea-vs-dense-6/): the
# bidirectional table at the session's defaults (KEY_TAIL, the Triton combine with 4 features a program,
# POOLED_SCORES; the front and the in-kernel identity columns off), one harness command; before it, the 8k profile
# at those defaults and two smaller-tile settings of the (off) front kernel.
# Predictions (written before the run): 8k kernels ~1.09 ms (call 3's all-off 1.152); the front with 32- or 16-row
# tiles on 4 warps still slower than the launches it replaces (>= 0.3 ms); table: bidirectional 8k ~1.95x cuDNN
# (2.07x in sea-vs-dense-5), 16k ~0.83x, 64k ~0.175x, 256k ~0.04x; memory at 64k ~1.8 GiB (1944 MiB before).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
front="--set methods.sea.estimator.BIDIR_FRONT=True --set kernels.sea_bidir_front.NUM_WARPS=4"
for v in new front32 front16; do
  case $v in new) extra="";; front32) extra="$front --set kernels.sea_bidir_front.BLOCK_T=32";;
    front16) extra="$front --set kernels.sea_bidir_front.BLOCK_T=16 --set kernels.sea_bidir_front.ROW_CHUNK=32";; esac
  timeout 120 python3 scripts/profile_sea.py --T 8192 --opts $o --top 40 $extra > "$OUT/profile-8192-$v.txt" 2>&1
  echo "T=8192 $v: $(grep -m1 'kernels sum' "$OUT/profile-8192-$v.txt")"
  grep -E "_key_kernel|_combine_kernel|_query_kernel|_front_kernel|_encoder_fwd" "$OUT/profile-8192-$v.txt" | cut -c1-90
done
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
bash scripts/device_sweep.sh table "${1:-330}" --device cuda --method-args sea.max_len=262144 --batch 1 --heads 16 \
  --head-dim 64 --dtype bf16 --methods sdpa:backend=cudnn,sdpa:backend=flash,$g:shared_keys=64:cuda_graph=16384 \
  --seq-lens 8192,16384,65536,262144 --bidirectional --mode fwd --rep-ms 50 --timeout 120 | tail -n 6
python3 scripts/ratio_table.py "$OUT/table/rows.jsonl"
python3 -m harness report "$OUT/table" >/dev/null 2>&1; echo "report exit $?"
python3 scripts/plot_sea_stages.py "$OUT/table" --out "$OUT/stages-table.png" >/dev/null 2>&1; echo "stages exit $?"
