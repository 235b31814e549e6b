"""Distributed sweeps on CPU with the gloo backend: sharding, merge, a killed rank resumed."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from harness.distributed import cell_cost, shard
from harness.grid import SweepSpec, expand
from tests.helpers import PLUGIN_DIR, ROOT, read_rows

ARGS = ["--batch", "1", "--heads", "2", "--head-dim", "16", "--dtype", "fp32", "--both-directions",
        "--device", "cpu", "--quiet", "--cpu-budget", "0.02", "--threads", "1"]


def _torchrun(*args, plugin=False, popen=False):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([str(PLUGIN_DIR)] if plugin else []))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "harness", "run", *args]
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _rank_pid(rank: int) -> int:
    """The pid of the harness process of `rank` (found through /proc: its environment names the rank)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"harness" in cmd and b"run" in cmd and b"torch.distributed.run" not in cmd \
                and f"RANK={rank}".encode() in env:
            return int(entry)
    raise AssertionError(f"no process of rank {rank}")


def test_shard_covers_every_cell_once_and_balances_cost():
    spec = SweepSpec(methods=["a", "b", "c"], seq_lens=[256, 1024, 4096, 16384], causal=[True, False],
                     mode=["fwd", "fwd+bwd"])
    cells = expand(spec, [("a", {}), ("b", {"x": 1}), ("c", {})])
    for world in (1, 2, 3, 4):
        parts = shard(cells, world)
        ids = [c.cell_id for p in parts for c in p]
        assert sorted(ids) == sorted(c.cell_id for c in cells)
        loads = [sum(cell_cost(c) for c in p) for p in parts]
        biggest = max(cell_cost(c) for c in cells)
        assert max(loads) - min(loads) <= biggest          # LPT bound
        assert shard(cells, world) == parts                 # deterministic


def test_two_ranks_merge_into_one_run_directory(tmp_path):
    out = tmp_path / "run"
    res = _torchrun("--methods", "exact,sdpa", "--seq-lens", "32,48,64", "--out", str(out), *ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_rows(out)
    assert len(rows) == 2 * 3 * 2 and len({r["cell_id"] for r in rows}) == len(rows)
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["extra"]["rank"] for r in rows} == {0, 1}      # both ranks did work
    assert not list(out.glob("rows.rank*.jsonl"))           # merged
    meta = json.loads((out / "meta.json").read_text())
    assert meta["world_size"] == 2 and "finished" in meta
    assert res.stdout.count("| exact |") == 1               # only rank 0 reports


def test_killed_rank_loses_only_unfinished_cells(tmp_path):
    out = tmp_path / "run"
    methods = "exact,sdpa,fault-hang"
    proc = _torchrun("--methods", methods, "--seq-lens", "32,48", "--out", str(out), "--timeout", "300", *ARGS,
                     plugin=True, popen=True)
    try:
        deadline = time.time() + 240
        # wait until both ranks have written rows and the hang cells have them stuck
        while time.time() < deadline:
            files = list(out.glob("rows.rank*.jsonl"))
            lines = sum(len(f.read_text().splitlines()) for f in files)
            if len(files) == 2 and lines >= 6:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("ranks did not write rows in time")
        time.sleep(1.0)
        os.kill(_rank_pid(1), signal.SIGKILL)          # rank 1 dies; torchrun then stops rank 0
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    before = Counter(r["cell_id"] for f in out.glob("rows.rank*.jsonl")
                     for r in map(json.loads, filter(None, f.read_text().splitlines())))
    assert len(before) >= 6 and max(before.values()) == 1
    # resume in one process; the hung cells now time out quickly
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(PLUGIN_DIR)]))
    res = subprocess.run([sys.executable, "-m", "harness", "run", "--methods", methods, "--seq-lens", "32,48",
                          "--out", str(out), "--resume", "--timeout", "5", *ARGS], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_rows(out)
    counts = Counter(r["cell_id"] for r in rows)
    assert len(counts) == 3 * 2 * 2 and max(counts.values()) == 1
    by_id = {r["cell_id"]: r for r in rows}
    for cid in before:                                      # finished rows survived the kill unchanged
        assert by_id[cid]["extra"].get("rank") in (0, 1)
    assert {r["status"] for r in rows if r["method"] == "fault-hang"} == {"timeout"}
    assert not list(out.glob("rows.rank*.jsonl"))


def test_claims_hand_each_cell_to_exactly_one_taker(tmp_path):
    from harness.distributed import Claims, cost_order

    spec = SweepSpec(methods=["a"], seq_lens=[64, 4096, 256], causal=[True, False])
    cells = expand(spec, [("a", {})])
    assert [c.seq_len for c in cost_order(cells)][:2] == [4096, 4096]           # most expensive first
    first, second = Claims(tmp_path / "claims", "x"), Claims(tmp_path / "claims", "x")   # two ranks
    taken = [(c.cell_id, first.take(c.cell_id), second.take(c.cell_id)) for c in cells]
    assert all(a and not b for _, a, b in taken)
    Claims.reset(tmp_path / "claims")
    assert Claims(tmp_path / "claims", "x").take(cells[0].cell_id)              # a new invocation starts clean


def test_dynamic_schedule_runs_every_cell_once(tmp_path):
    out = tmp_path / "run"
    res = _torchrun("--methods", "exact,sdpa", "--seq-lens", "32,48,64", "--out", str(out), "--schedule",
                    "dynamic", *ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_rows(out)
    assert len(rows) == 2 * 3 * 2 and len({r["cell_id"] for r in rows}) == len(rows)
    assert {r["status"] for r in rows} == {"ok"} and {r["extra"]["rank"] for r in rows} <= {0, 1}
    assert not (out / "claims").exists() and not list(out.glob("rows.rank*.jsonl"))
    assert json.loads((out / "meta.json").read_text())["schedule"] == "dynamic"
