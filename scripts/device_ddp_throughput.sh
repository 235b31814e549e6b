#!/usr/bin/env bash
# Distillation throughput on 1 GPU and on N GPUs (torchrun + DDP, one rank per GPU), same global batch/steps;
# with FSDP=1 also on N GPUs with `distill --fsdp` (FSDP2, student sharded).
#   [FSDP=1] bash scripts/device_ddp_throughput.sh NAME MODEL METHOD STEPS N [python -m harness distill arguments...]
# MODEL: a transformers folder or a folder of GGUF parts (converted once by scripts/device_convert_gguf.sh).
# Leaves $OUT/NAME-ddp.tgz (the run directories, checkpoints left out) and $OUT/NAME-ddp.json (sequences/s from
# step 3 on, so compilation and warm-up are excluded).
set -u
name=$1; model=$2; method=$3; steps=$4; n=$5; shift 5
export PYTHONUNBUFFERED=1
source scripts/device_convert_gguf.sh "$model" || exit 1
model=$MODEL
root=/tmp/ddp-$name; rm -rf "$root"; mkdir -p "$root"
legs="world1 world$n"; [ "${FSDP:-0}" = 1 ] && legs="$legs fsdp$n"
for leg in $legs; do
  args=(-m harness distill --model "$model" --method "$method" --steps "$steps" --out "$root/$leg"
        --quiet --eval-tokens 2048 "$@")
  case $leg in
    world1) CUDA_VISIBLE_DEVICES=0 python3 "${args[@]}" ;;
    world*) python3 -m torch.distributed.run --standalone --nproc-per-node "$n" "${args[@]}" ;;
    fsdp*) python3 -m torch.distributed.run --standalone --nproc-per-node "$n" "${args[@]}" --fsdp ;;
  esac >"$root/$leg.log" 2>&1
  echo "exit $? ($leg)"; grep -v -i warn "$root/$leg.log" | tail -n 6
done
python3 - "$root" "$OUT/$name-ddp.json" $legs <<'PY'
import json, os, sys
root, out, legs = sys.argv[1], sys.argv[2], sys.argv[3:]
res = {}
for leg in legs:
    try:
        meta = json.load(open(f"{root}/{leg}/meta.json"))
        batch = meta["setting"]["batch"]
        train = [json.loads(l) for l in open(f"{root}/{leg}/metrics.jsonl") if '"train"' in l]
        a, b = train[2], train[-1]                   # from the end of step 3: compilation and warm-up excluded
    except (OSError, KeyError, IndexError, ValueError) as exc:
        res[leg] = {"error": f"{type(exc).__name__}: {exc}"}
        continue
    res[leg] = {"steps_timed": b["step"] - a["step"], "seconds": round(b["elapsed_s"] - a["elapsed_s"], 3),
                "seq_per_s": round(batch * (b["step"] - a["step"]) / (b["elapsed_s"] - a["elapsed_s"]), 3),
                "final_loss": b["loss"], "global_batch": batch}
base = res.get("world1", {}).get("seq_per_s")
for leg in legs[1:]:
    if base and "seq_per_s" in res[leg]:
        res[f"speedup_{leg}"] = round(res[leg]["seq_per_s"] / base, 3)
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res))
PY
tar czf "$OUT/$name-ddp.tgz" -C "$root" --exclude checkpoints .
