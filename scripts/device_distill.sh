#!/usr/bin/env bash
# Distil several methods into one model on a lent GPU machine: the same recipe, data and step budget for each,
# one process per method (several share a GPU; methods are dealt round-robin over the visible GPUs), then pack
# the run directories (checkpoints left out) into $OUT/NAME.tgz and print each run's last lines.
#   bash scripts/device_distill.sh NAME MODEL METHODS SECONDS [python -m harness distill arguments...]
# MODEL: anything --model takes; a folder of GGUF parts is converted once to a transformers folder in /tmp so
# that every process loads it quickly. METHODS: comma-separated. SECONDS: each run's --time-limit. A run
# directory left in /tmp/distill-NAME by an earlier call on the same (still warm) machine is resumed.
set -u
name=$1; model=$2; methods=$3; secs=$4; shift 4
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
source scripts/device_convert_gguf.sh "$model" || exit 1
model=$MODEL
root=/tmp/distill-$name
mkdir -p "$root"
ngpu=$(nvidia-smi -L | wc -l)
i=0
for m in ${methods//,/ }; do
  g=$((i % ngpu)); i=$((i + 1))
  tag=${m//[:=]/_}
  resume=""; [ -f "$root/$tag/meta.json" ] && resume="--resume"
  CUDA_VISIBLE_DEVICES=$g python3 -m harness distill --model "$model" --method "$m" --out "$root/$tag" $resume \
    --time-limit "$secs" --quiet "$@" >>"$root/$tag.log" 2>&1 &
done
wait
for log in "$root"/*.log; do echo "== $log"; grep -v -i "warn" "$log" | tail -n 4; done
tar czf "$OUT/$name.tgz" -C "$root" --exclude checkpoints .
ls -la "$OUT"
