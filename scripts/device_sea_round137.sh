#!/usr/bin/env bash
# Issue 7, twenty-fifth session, call 8 (results/nvidia-h200/sea-rows/call8/): the shared-key kernel's cell geometry
# in int64 (kernels/sea_shared_attention.py: 2 c T passed 2^31 at T = 8M with 128 cells, so bidirectional SEA was
# refused at 8M in call 6). (a) GPU tests, one with blocks at T = 8M + 64 against key lists written out in int64;
# (b) the 8k and 64k profiles of the whole bidirectional call at nbf=8 (the kernel took 0.060 / 0.439 ms in
# sea-nbf/call4/); (c) the bidirectional fit probe of the 8-block configuration from 8M.
# Predictions (before the run): tests pass; the shared kernel 0.060 / 0.44 ms within 2 % (the table is made once a
# program on 128 lanes); 8M runs with ~24 GiB above the inputs, 16M out of memory.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
timeout 150 python3 -m pytest -q -m gpu tests/test_sea_shared.py -p no:cacheprovider -rA > "$OUT/gpu-tests.txt" 2>&1
grep -E "^FAILED|^ERROR|passed|failed|^E  " "$OUT/gpu-tests.txt" | cut -c1-160 | tail -n 6
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel,nbf=8
for T in 8192 65536; do
  f=$OUT/profile-$T-nbf8.txt
  timeout 60 python3 scripts/profile_sea.py --T $T --opts $o --top 6 --iters 20 > "$f" 2>&1
  echo "T=$T $(grep -m1 'kernels sum' "$f" | sed -E 's/.*(kernels sum [0-9.]+ ms).*/\1/') $(grep -m1 '_shared_fwd' "$f")"
done
g=sea:performer_dtype=bf16:estimator_precision=tf32:estimator_dtype=bf16:compile=estimator:sparse_pieces=1
g=$g:shared_keys=64:encoder_operands=bf16:identity_values=kernel:nbf=8:query_blocks=8
timeout 150 python3 scripts/fit_probe.py --methods $g --start 8388608 --stop 16777216 --max-sec 60 \
  --out "$OUT/fit-bidir.jsonl" 2>&1 | tail -n 3 | cut -c1-250
