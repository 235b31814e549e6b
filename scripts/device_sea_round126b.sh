#!/usr/bin/env bash
# The second of round126's two calls (the model does not fit one call's 64 MiB beside the tracked files): the first
# call copied the first half of all-MiniLM-L6's model.safetensors to /tmp/mparts (`mkdir -p /tmp/mparts && cp
# .carry/m1/part0 /tmp/mparts/`); this one joins it with the second half and the model's other files in /tmp/minilm,
# checks the SHA-256 of the whole file, and runs round126 on it.
set -eu
mkdir -p /tmp/minilm
cat /tmp/mparts/part0 .carry/m2/part1 > /tmp/minilm/model.safetensors
cp -r .carry/m2/rest/* /tmp/minilm/
echo "$1  /tmp/minilm/model.safetensors" | sha256sum -c -
MODEL=/tmp/minilm NBFS="${2:-1 2 4}" exec bash scripts/device_sea_round126.sh
