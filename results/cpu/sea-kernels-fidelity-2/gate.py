"""Issue 7's gate from a fidelity run's rows: per layer, the relative change of the output's rel L2 error (vs exact
attention) of each SEA variant against the run's first variant (SEA's tensor ops), as in ../sea-kernels-fidelity/.
Usage: python gate.py RUN_DIR [RUN_DIR ...]"""
import json
import sys

for run in sys.argv[1:]:
    rows = [json.loads(line) for line in open(f"{run}/rows.jsonl")]
    by = {}                                                   # variant (config as json) -> {layer: row}
    for r in rows:
        by.setdefault(json.dumps(r["config"], sort_keys=True), {})[r["extra"]["layer"]] = r
    variants = list(by)
    base = by[variants[0]]
    for v in variants:
        cfg = json.loads(v)
        diff = {k: cfg[k] for k in cfg if cfg[k] != json.loads(variants[0])[k]} or "baseline"
        layers = [l for l in by[v] if l != "mean"]
        bad = [l for l in layers if by[v][l]["status"] != "ok"]
        ch = [(by[v][l]["err_rel_l2"] - base[l]["err_rel_l2"]) / base[l]["err_rel_l2"] for l in layers if l not in bad]
        print(json.dumps({"run": run, "variant": diff, "layers": len(layers), "not_ok": bad,
                          "mean_err_rel_l2": round(by[v]["mean"]["err_rel_l2"], 6),
                          "max_abs_change": max(map(abs, ch)), "max_worse": max(ch),
                          "layers_changed": sum(c != 0 for c in ch), "layers_worse_1pct": sum(c > 0.01 for c in ch)}))
