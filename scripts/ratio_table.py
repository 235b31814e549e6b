"""Print a harness run's rows as latency ratios against one reference method of the same run (device scripts).

    python scripts/ratio_table.py RUN/rows.jsonl [--ref sdpa]

One line per row: method, its cuda_graph option, direction, T, status, median ms, ratio to the reference's median
at the same (T, direction), error against exact attention, peak memory (with what the module keeps between calls,
"kept") and the end of its impl string."""
from __future__ import annotations

import argparse
import json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows")
    ap.add_argument("--ref", default="sdpa", help="the reference method's name")
    a = ap.parse_args(argv)
    rows = [json.loads(line) for line in open(a.rows) if line.strip()]
    ref = {(r["seq_len"], r["causal"]): r["latency_ms"] for r in rows if r["method"] == a.ref and r["status"] == "ok"}
    nan = float("nan")
    for r in rows:
        lat = r.get("latency_ms") or nan
        base = ref.get((r["seq_len"], r["causal"])) or nan
        print(f"{r['method']:5} graph={r['config'].get('cuda_graph', '-')!s:6} causal={r['causal']!s:5} "
              f"T={r['seq_len']:6} {r['status']:6} {lat:8.3f} ms {lat / base:6.3f}x "
              f"err {r.get('err_rel_l2') or nan:.6f} mem {(r.get('memory_bytes') or 0) / 2**20:7.1f} MiB "
              f"kept {(r.get('extra') or {}).get('retained_memory_bytes', 0) / 2**20:7.1f} "
              f"{(r.get('impl') or '')[-36:]} {r.get('reason') or ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
