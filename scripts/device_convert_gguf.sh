#!/usr/bin/env bash
# Convert a folder of GGUF parts (the shared SmolLM2 copy, sent in parts) to a transformers folder once, on a lent
# GPU machine whose image lacks gguf (.gw/*.whl is installed into /tmp/site when carried).
#   source scripts/device_convert_gguf.sh SRC     ->  sets MODEL=/tmp/model-<basename SRC> and PYTHONPATH
# A folder that is already converted (config.json present) is reused.
src=$1
export HF_HUB_OFFLINE=1
if ls .gw/*.whl >/dev/null 2>&1 && [ ! -d /tmp/site/gguf ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gw/*.whl
fi
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
MODEL=$src
if ls "$src"/*.gguf.part-* >/dev/null 2>&1; then
  MODEL=/tmp/model-$(basename "$src")
  if [ ! -f "$MODEL/config.json" ]; then
    python3 - "$src" "$MODEL" <<'PY' || return 1
import sys
from harness.models.load import load_model
model, tok = load_model(sys.argv[1])
model.hf_quantizer = None                  # weights are dequantised already; drop the GGUF marker so it saves
if hasattr(model.config, "quantization_config"):
    delattr(model.config, "quantization_config")
model.save_pretrained(sys.argv[2]); tok.save_pretrained(sys.argv[2])
print("converted", sys.argv[1], "->", sys.argv[2])
PY
  fi
fi
export MODEL
