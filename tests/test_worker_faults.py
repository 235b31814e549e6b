"""Isolation: every failure mode becomes its own typed row, the sweep continues, resume adds no duplicates."""
import json
from collections import Counter

import pytest

from tests.helpers import read_rows, run_cli

FAULTS = ["fault-hang", "fault-oom", "fault-raise", "fault-nan", "fault-crash", "fault-exit", "fault-wrong",
          "fault-none", "fault-second", "fault-keeps"]
EXPECTED = {"fault-oom": "oom", "fault-raise": "error", "fault-nan": "wrong", "fault-hang": "timeout",
            "fault-crash": "error", "fault-exit": "error", "fault-wrong": "wrong", "fault-none": "ok", "exact": "ok",
            "fault-second": "wrong", "fault-keeps": "ok"}
ARGS = ["--seq-lens", "32", "--batch", "1", "--heads", "2", "--head-dim", "16", "--dtype", "fp32", "--causal",
        "--device", "cpu", "--timeout", "10", "--quiet", "--cpu-budget", "0.05"]


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "run"
    res = run_cli("run", "--methods", ",".join(FAULTS + ["exact"]), "--out", str(out), *ARGS, plugin=True)
    return out, res


def test_each_fault_is_its_own_row(fault_run):
    out, res = fault_run
    assert res.returncode == 0, res.stderr[-2000:]
    rows = read_rows(out)
    got = {r["method"]: r for r in rows}
    assert len(rows) == len(EXPECTED), [r["method"] for r in rows]
    for name, status in EXPECTED.items():
        assert got[name]["status"] == status, (name, got[name]["status"], got[name]["reason"])
    assert "injected" in got["fault-oom"]["reason"]
    assert "ValueError: injected failure" in got["fault-raise"]["reason"]
    assert "SIGSEGV" in got["fault-crash"]["reason"]
    assert "exited with code 3" in got["fault-exit"]["reason"]
    assert "non-finite" in got["fault-nan"]["reason"]
    assert "rel L2 error" in got["fault-wrong"]["reason"] and got["fault-wrong"]["err_rel_l2"] > 0.1
    # a failed cell is never a number
    for name in ("fault-oom", "fault-raise", "fault-nan", "fault-hang", "fault-crash", "fault-wrong"):
        assert got[name]["latency_ms"] is None and got[name]["memory_bytes"] is None
    # the gate reads a warm call (the path the timing repeats), not only the first one
    assert "rel L2 error" in got["fault-second"]["reason"]
    # memory a module keeps between calls counts in its peak, and the row says so
    keeps, none = got["fault-keeps"], got["fault-none"]
    assert keeps["memory_bytes"] >= 3 << 30 and none["memory_bytes"] < 1 << 30
    assert keeps["extra"]["retained_memory_bytes"] == 3 << 30
    assert keeps["memory_metric"].endswith("+ memory the module keeps between calls")
    assert "keeps" not in none["memory_metric"]
    # the cells after the crashes still ran and were measured
    assert got["exact"]["latency_ms"] > 0 and got["exact"]["err_rel_l2"] < 1e-6


def test_resume_skips_finished_cells_without_duplicates(fault_run, tmp_path):
    out, _ = fault_run
    lines = (out / "rows.jsonl").read_text().splitlines()
    # A copy of the run that was killed after three rows, mid-way through writing the fourth.
    part = tmp_path / "partial"
    part.mkdir()
    (part / "meta.json").write_text((out / "meta.json").read_text())
    (part / "rows.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])
    res = run_cli("run", "--methods", ",".join(FAULTS + ["exact"]), "--out", str(part), "--resume", *ARGS,
                  plugin=True)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = read_rows_tolerant(part)
    counts = Counter(r["cell_id"] for r in rows)
    assert len(counts) == len(EXPECTED)
    assert max(counts.values()) == 1, counts
    first3 = [json.loads(x)["cell_id"] for x in lines[:3]]
    assert all(counts[c] == 1 for c in first3)
    # resuming a finished run runs nothing
    before = (part / "rows.jsonl").read_text()
    res = run_cli("run", "--methods", ",".join(FAULTS + ["exact"]), "--out", str(part), "--resume", *ARGS,
                  plugin=True)
    assert res.returncode == 0
    assert (part / "rows.jsonl").read_text() == before


def read_rows_tolerant(run_dir):
    rows = []
    for line in (run_dir / "rows.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def test_existing_run_without_resume_is_refused(fault_run):
    out, _ = fault_run
    before = (out / "rows.jsonl").read_text()
    res = run_cli("run", "--methods", "exact", "--out", str(out), *ARGS, plugin=True)
    assert res.returncode == 2 and "--resume" in res.stderr
    assert (out / "rows.jsonl").read_text() == before
