#!/usr/bin/env bash
# Issue 7, for the twenty-second session's first call (written in the twenty-first without device time left;
# results/nvidia-h200/sea-key-pass-ncu/call1/). Two questions the twenty-first session's calls left:
# 1. The illegal memory access of SEA's bidirectional estimator at T=65536 with performer_dash=fp16,
#    identity_values=kernel and encoder_operands=bf16 (sea-bf16-encoder/call7/): favor_softmax_dense alone, all eight
#    combinations of the three at 8k and 64k, each in its own process (scripts/repro_dash_identity.py), then
#    compute-sanitizer's memcheck on the first failing case (which kernel, which access); if every case runs, on
#    SEA's 64k forward with the three (methods.sea.estimator.REFUSE_FP16_DASH_WITH_IDENTITY=False lets it build).
# 2. What binds the per-feature key pass (0.150 ms at 8k for ~0.02 ms of products and ~0.01 ms of reads, computed):
#    Nsight Compute (--clock-control none, as the device's METHOD.md asks) on the key pass, combine and query pass of
#    SEA's kept form (identity columns in the key pass, bf16 output) at 8k: speed of light, warp states, occupancy.
# 3. Registers and spills of every Triton kernel in SEA's kept 8k forward (profile_sea.py --kernel-stats): a key pass
#    holding [128 features, 128 keys] fp32 tiles for dash, p and the value accumulator on 8 warps may spill.
# 4. kernels/favor_dense.py KEY_VSUM_FIRST_BLOCK (A/B switch, off): the values' sums over the keys added up only by
#    the first feature block's programs, which store them (every program summed each key tile across its rows).
# Predictions (written before the run): 1. the crash reproduces with fp16 dash + identity columns at 64k whatever the
# output dtype, not at 8k, and memcheck names _key_pf_kernel; 2. the key pass's tensor pipe below 30 % and DRAM below
# 20 % of peak, one or two programs per SM (registers), the largest stall reasons the math pipes' and the barrier
# waits of the dot pipeline, not memory; 3. the key pass near 255 registers, the others well below; 4. GPU test
# passes (the same output bit for bit), key pass 0.150 -> ~0.140 ms at 8k.
# Order: 3 and 4 (short) first, then 2, then 1; ~600 s at most in all (a kill at the limit keeps what is done).
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o,encoder_operands=bf16,identity_values=kernel --top 12 \
  --kernel-stats > "$OUT/profile-8192-stats.txt" 2>&1
grep -A40 "compiled Triton kernels" "$OUT/profile-8192-stats.txt" | cut -c1-150
timeout 60 python3 -m pytest -q -m gpu tests/test_favor_dense.py -k value_sums -p no:cacheprovider 2>&1 | tail -n 3
timeout 60 python3 scripts/profile_sea.py --T 8192 --opts $o,encoder_operands=bf16,identity_values=kernel --top 12 \
  --set kernels.favor_dense.KEY_VSUM_FIRST_BLOCK=True > "$OUT/profile-8192-vsum.txt" 2>&1
echo "KEY_VSUM_FIRST_BLOCK: $(grep -m1 'kernels sum' "$OUT/profile-8192-vsum.txt" | cut -c60-100)"
grep -E "_key_pf_kernel" "$OUT/profile-8192-stats.txt" "$OUT/profile-8192-vsum.txt" | grep -v registers | cut -c1-120
timeout 150 ncu --clock-control none --kernel-name regex:"_key_pf_kernel|_combine_kernel|_query_kernel" \
  --launch-skip 0 --launch-count 6 --section SpeedOfLight --section WarpStateStats --section Occupancy \
  --section LaunchStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
  python3 scripts/repro_dash_identity.py --one 8192,0,1,1 > "$OUT/ncu-favor-8192.txt" 2>&1
keys="^  _|Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Achieved Occupancy|Registers Per"
keys="$keys|Block Limit|Stall|Warp Cycles Per Issued|Issue Slots Busy|Executed Ipc"
grep -E "$keys" "$OUT/ncu-favor-8192.txt" | cut -c1-150 | head -n 80
timeout 200 python3 scripts/repro_dash_identity.py --T 8192,65536 --timeout 40 | tee "$OUT/repro.txt"
pat='s/T= *([0-9]+) dash=([a-z0-9]+) identity=([a-z]+) out=([a-z0-9]+).*/\1 \2 \3 \4/'
bad=$(grep -m1 -v ": ok" "$OUT/repro.txt" | sed -E "$pat")
if [ -n "$bad" ]; then
  set -- $bad
  flag() { [ "$1" = "$2" ] && echo 1 || echo 0; }
  one="$1,$(flag "$2" fp16),$(flag "$3" kernel),$(flag "$4" bf16)"
  echo "memcheck on $one"
  timeout 120 compute-sanitizer --tool memcheck --print-limit 8 python3 scripts/repro_dash_identity.py --one "$one" \
    > "$OUT/memcheck.txt" 2>&1
else      # favor alone ran every case: the crash needs more of SEA's forward (the switch lets SEA build it)
  echo "memcheck on SEA's 64k forward with the three options"
  timeout 150 compute-sanitizer --tool memcheck --print-limit 8 python3 scripts/profile_sea.py --T 65536 \
    --opts $o,encoder_operands=bf16,performer_dash=fp16,identity_values=kernel --iters 1 --warmup 1 --top 5 \
    --set methods.sea.estimator.REFUSE_FP16_DASH_WITH_IDENTITY=False > "$OUT/memcheck.txt" 2>&1
fi
grep -E "Invalid|at 0x|by thread|Address|ERROR SUMMARY|_kernel" "$OUT/memcheck.txt" | head -n 24 | cut -c1-200
