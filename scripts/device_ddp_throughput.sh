#!/usr/bin/env bash
# Distillation throughput on 1 GPU and on N GPUs (torchrun + DDP, one rank per GPU), same global batch/steps.
#   bash scripts/device_ddp_throughput.sh NAME MODEL METHOD STEPS N [python -m harness distill arguments...]
# MODEL must be a transformers folder (scripts/device_distill.sh leaves one in /tmp). Leaves $OUT/NAME-ddp.tgz
# (both run directories, checkpoints left out) and $OUT/NAME-ddp.json (sequences/s from step 3 on).
set -u
name=$1; model=$2; method=$3; steps=$4; n=$5; shift 5
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ls .gw/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gw/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
root=/tmp/ddp-$name; rm -rf "$root"; mkdir -p "$root"
for world in 1 "$n"; do
  args=(-m harness distill --model "$model" --method "$method" --steps "$steps" --out "$root/world$world"
        --quiet --eval-tokens 2048 "$@")
  if [ "$world" = 1 ]; then CUDA_VISIBLE_DEVICES=0 python3 "${args[@]}"
  else python3 -m torch.distributed.run --standalone --nproc-per-node "$world" "${args[@]}"; fi
  echo "exit $? (world $world)"
done
python3 - "$root" "$n" "$OUT/$name-ddp.json" <<'PY'
import json, sys
root, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
res = {}
for world in (1, n):
    meta = json.load(open(f"{root}/world{world}/meta.json"))
    batch = meta["setting"]["batch"]
    train = [json.loads(l) for l in open(f"{root}/world{world}/metrics.jsonl") if '"train"' in l]
    a, b = train[2], train[-1]                       # from the end of step 3: compilation and warm-up excluded
    res[f"world{world}"] = {"steps_timed": b["step"] - a["step"], "seconds": round(b["elapsed_s"] - a["elapsed_s"], 3),
                            "seq_per_s": round(batch * (b["step"] - a["step"]) / (b["elapsed_s"] - a["elapsed_s"]), 3),
                            "final_loss": b["loss"], "global_batch": batch}
res["speedup"] = round(res[f"world{n}"]["seq_per_s"] / res["world1"]["seq_per_s"], 3)
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res))
PY
tar czf "$OUT/$name-ddp.tgz" -C "$root" --exclude checkpoints .
