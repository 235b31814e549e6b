#!/usr/bin/env bash
# Sweep wall time on 1 GPU and on N GPUs (torchrun, one rank per GPU) of one host, same grid, each with fresh
# Triton/Inductor caches so neither run inherits the other's compiled kernels.
#   bash scripts/device_scaling.sh NAME N [python -m harness run arguments...]
# Leaves $OUT/NAME-1/{meta.json,rows.jsonl}, $OUT/NAME-N/{meta.json,rows.jsonl}, $OUT/NAME-scaling.json and
# $OUT/NAME-walls.txt (each leg's wall time, written as the leg ends, so a call cut off later still has it).
# WORLDS="N" runs the N-GPU leg alone (when the 1-GPU leg came from an earlier call: its wall time is then read
# from its meta.json, created -> finished, by the reader of the results, not by this script).
set -u
name=$1; n=$2; shift 2
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
declare -A wall
for world in ${WORLDS:-1 $n}; do
  run=/tmp/scale-$name-$world
  rm -rf "$run" /tmp/cache-$world; mkdir -p /tmp/cache-$world
  export TRITON_CACHE_DIR=/tmp/cache-$world/triton TORCHINDUCTOR_CACHE_DIR=/tmp/cache-$world/inductor
  t0=$(date +%s.%N)
  if [ "$world" = 1 ]; then
    CUDA_VISIBLE_DEVICES=0 python3 -m harness run --out "$run" --quiet "$@"
  else
    python3 -m torch.distributed.run --standalone --nproc-per-node "$world" -m harness run --out "$run" --quiet "$@"
  fi
  echo "exit $? (world $world)"
  wall[$world]=$(python3 -c "import time; print(round(time.time() - $t0, 2))")
  echo "world $world: ${wall[$world]} s"
  echo "world $world: ${wall[$world]} s" >>"$OUT/$name-walls.txt"     # kept even if a later leg is cut off
  mkdir -p "$OUT/$name-$world"; cp "$run"/meta.json "$run"/rows.jsonl "$OUT/$name-$world"/
done
[ -n "${wall[1]:-}" ] && [ -n "${wall[$n]:-}" ] || exit 0
python3 - "$name" "$n" "${wall[1]}" "${wall[$n]}" "$OUT" <<'PY'
import collections, json, sys
name, n, w1, wn, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
res = {"name": name, "gpus": n, "wall_s_1": w1, f"wall_s_{n}": wn, "speedup": round(w1 / wn, 3)}
for world in (1, n):
    rows = [json.loads(l) for l in open(f"{out}/{name}-{world}/rows.jsonl") if l.strip()]
    res[f"rows_{world}"] = len(rows)
    res[f"status_{world}"] = dict(collections.Counter(r["status"] for r in rows))
    res[f"cell_wall_s_{world}"] = round(sum(r.get("wall_s") or 0 for r in rows), 2)
json.dump(res, open(f"{out}/{name}-scaling.json", "w"), indent=1)
print(json.dumps(res))
PY
