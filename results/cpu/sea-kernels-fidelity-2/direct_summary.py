"""Largest per-layer value of each field of direct_diff.py's lines, per variant. Usage: python direct_summary.py FILE"""
import json
import sys

agg = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    a = agg.setdefault(json.dumps(r["variant"]), {"layers": 0, "out_bitwise_equal": 0})
    a["layers"] += 1
    a["out_bitwise_equal"] += r["out_bitwise_equal"]
    for f in ("out", "logits", "s_prob", "s_mix"):
        a[f"max_{f}"] = max(a.get(f"max_{f}", 0.0), r[f])
for v, a in agg.items():
    print(v, json.dumps({k: (f"{x:.2g}" if isinstance(x, float) else x) for k, x in a.items()}))
