#!/usr/bin/env bash
# Issue 7, twenty-fourth session, call 4 (results/nvidia-h200/sea-nbf/call1/).
# SEA's Performer feature factor nbf (an existing option: m = int(d ln d / nbf) random features; bidirectional
# default 1, m = 266 at d = 64; causal default 8). At 8k the bidirectional key pass (0.093 ms), the combine (0.021)
# and the query pass (0.081) are latency-bound on instruction streams that loop over the m features; the head reads
# the Performer's output, whose width (2d) does not depend on m. Predictions (before the run): kernels 0.602 ms at
# nbf=1 -> ~0.55 at nbf=2 (m=133; key ~0.055, query ~0.050, combine ~0.012) -> ~0.52 at nbf=4 (m=66); 64k 3.89 ->
# ~3.5 / ~3.3. Quality is priced separately (the fidelity and accuracy tasks); this call measures time only.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
o=performer_dtype=bf16,estimator_precision=tf32,estimator_dtype=bf16,compile=estimator,sparse_pieces=1,shared_keys=64
o=$o,encoder_operands=bf16,identity_values=kernel
for T in 8192 65536; do
  for n in 1 2 4; do
    f=$OUT/profile-$T-nbf$n.txt
    timeout 80 python3 scripts/profile_sea.py --T $T --opts $o,nbf=$n --top 14 --iters 20 > "$f" 2>&1
    echo "T=$T nbf=$n: kernels $(grep -m1 'kernels sum' "$f" | sed -E 's/.*kernels sum ([0-9.]+) ms.*/\1/')" \
      "key $(grep -m1 '_key_pf_kernel' "$f" | awk '{print $1}') query $(grep -m1 '_query_kernel' "$f" | awk '{print $1}')" \
      "combine $(grep -m1 '_combine_kernel' "$f" | awk '{print $1}') $(grep -o 'nb_features=[0-9]*' "$f" | head -1)"
    grep -q 'kernels sum' "$f" || tail -n 3 "$f" | cut -c1-200
  done
done
