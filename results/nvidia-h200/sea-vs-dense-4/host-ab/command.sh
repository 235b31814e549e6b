export PYTHONUNBUFFERED=1
o=performer_dtype=bf16,compile=estimator,estimator_precision=tf32
for tree in new old; do
  d=.; [ $tree = old ] && d=.carry/old
  (cd $d && timeout 70 python3 scripts/profile_sea.py --T 16384 --causal --iters 20 --warmup 3 --host --top 22 --opts $o > $OUT/prof16k-$tree.txt 2>&1; echo "$tree exit $?")
  grep -E "wall|function calls" $OUT/prof16k-$tree.txt
done
