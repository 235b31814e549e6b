#!/usr/bin/env bash
# Run (or resume) one harness sweep on a lent GPU machine and leave its run directory under $OUT/NAME.
#   bash scripts/device_sweep.sh NAME SECONDS [python -m harness run arguments...]
# A partial run carried in .carry/NAME (rows.jsonl + meta.json from an earlier call) is resumed, so a sweep
# longer than one call's limit finishes over several calls. Wheels in .whl/ (e.g. xformers) are installed
# into /tmp/site first. Stops the sweep gracefully (SIGINT) after SECONDS; finished rows are kept.
set -u
name=$1; secs=$2; shift 2
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
run=/tmp/run-$name
mkdir -p "$run"
if [ -d ".carry/$name" ]; then cp .carry/"$name"/meta.json .carry/"$name"/rows.jsonl "$run"/ 2>/dev/null; fi
resume=""; [ -f "$run/meta.json" ] && resume="--resume"
timeout -s INT "$secs" python3 -m harness run --out "$run" $resume --quiet "$@"
echo "harness exit: $?"
mkdir -p "$OUT/$name"
cp "$run"/meta.json "$run"/rows.jsonl "$OUT/$name"/
python3 - "$run" <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1] + "/rows.jsonl") if l.strip()]
c = collections.Counter((r["method"] + str(r["config"]), r["status"]) for r in rows)
print(len(rows), "rows")
for k, n in sorted(c.items()):
    print(f"{n:4d}  {k[1]:<11} {k[0]}")
PY
