"""End to end on CPU: a small sweep, its provenance, the report, regression compare, bad input."""
import json
import shutil

import pytest

from tests.helpers import read_rows, run_cli

SMALL = ["--seq-lens", "32,48", "--batch", "2", "--heads", "4", "--kv-heads", "2", "--head-dim", "16",
         "--dtype", "fp32", "--both-directions", "--mode", "fwd,fwd+bwd", "--device", "cpu", "--quiet",
         "--cpu-budget", "0.05"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    res = run_cli("run", "--methods", "exact,sdpa,flash", "--method-args", "sdpa.backend=math", "--out", str(out),
                  *SMALL)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_rows_and_provenance(small_run):
    out, res = small_run
    rows = read_rows(out)
    assert len(rows) == 3 * 2 * 2 * 2          # methods x T x direction x mode
    assert {r["status"] for r in rows} == {"ok"}
    for r in rows:
        assert r["latency_p20_ms"] <= r["latency_ms"] <= r["latency_p80_ms"]
        assert r["memory_bytes"] is not None and r["memory_metric"].startswith("cpu peak RSS")
        assert r["err_rel_l2"] < 1e-5 and r["ref"].startswith("cpu float64")
        assert r["tflops"] > 0 and "4*B*H*T^2*D" in r["flops_formula"]
        if r["mode"] == "fwd+bwd":
            assert r["grad_err_rel_l2"] < 1e-5
    sdpa = [r for r in rows if r["method"] == "sdpa"]
    assert all(r["config"] == {"backend": "math"} and r["impl"] == "torch.sdpa[math]" for r in sdpa)
    assert all(r["impl"] == "torch.sdpa[flash]" for r in rows if r["method"] == "flash")
    meta = json.loads((out / "meta.json").read_text())
    for key in ("git", "versions", "device_info", "command", "run_id", "spec", "cells"):
        assert key in meta
    assert meta["versions"]["torch"].startswith("2.")
    assert "--methods exact,sdpa,flash" in meta["command"]
    assert "| exact | 8 | 8 |" in res.stdout      # the summary table


def test_report_writes_tables_and_plots(small_run, tmp_path):
    out, _ = small_run
    res = run_cli("report", str(out), "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    md = (tmp_path / "report.md").read_text()
    assert "## Summary" in md and "sdpa[backend=math]" in md and "Latency, median ms" in md
    assert (tmp_path / "rows.csv").read_text().count("\n") == 1 + 24
    assert len(list(tmp_path.glob("plot_*.png"))) == 4


def test_report_of_untimed_rows(small_run, tmp_path):
    """Rows that time nothing (a fidelity run's: status ok, latency None) are tabulated as untimed, not a crash."""
    out, _ = small_run
    run = tmp_path / "untimed"
    run.mkdir()
    (run / "meta.json").write_text((out / "meta.json").read_text())
    rows = read_rows(out)
    for r in rows[:4]:
        r.update(latency_ms=None, latency_p20_ms=None, latency_p80_ms=None)
    (run / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run_cli("report", str(run), "--out", str(tmp_path / "rep"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ok (untimed)" in (tmp_path / "rep" / "report.md").read_text()


def test_compare_same_run_passes_and_doctored_slowdown_fails(small_run, tmp_path):
    out, _ = small_run
    res = run_cli("compare", str(out), str(out), "--reference-method", "exact")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 regressions" in res.stdout
    slow = tmp_path / "slow"
    shutil.copytree(out, slow)
    lines = []
    for line in (slow / "rows.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["method"] == "flash" and r["seq_len"] == 48:
            r["latency_ms"] *= 3
            r["latency_p20_ms"] *= 3
            r["latency_p80_ms"] *= 3
            r["err_rel_l2"] *= 10
        lines.append(json.dumps(r))
    (slow / "rows.jsonl").write_text("\n".join(lines) + "\n")
    res = run_cli("compare", str(out), str(slow), "--reference-method", "exact", "--abs-floor-ms", "0",
                  "--error-abs-floor", "0")
    assert res.returncode == 1
    assert res.stdout.count("REGRESSION") == 8        # 4 flash cells at T=48, latency and error each
    # a uniformly slower machine is not a regression when latency is compared as ratios
    uniform = tmp_path / "uniform"
    shutil.copytree(out, uniform)
    rows = [json.loads(x) for x in (uniform / "rows.jsonl").read_text().splitlines()]
    for r in rows:
        r["latency_ms"] *= 2
    (uniform / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert run_cli("compare", str(out), str(uniform), "--reference-method", "exact").returncode == 0
    assert run_cli("compare", str(out), str(uniform), "--abs-floor-ms", "0").returncode == 1


def test_compare_error_floor_ignores_rounding_noise_not_real_growth(small_run, tmp_path):
    """--error-abs-floor (default 1e-6): an exact method's error growing by 5e-7 (rounding noise between CPUs) is
    not a regression, by 5e-6 it is; 0 restores the relative rule alone; a negative floor is refused."""
    out, _ = small_run
    for bump, floor, want in ((5e-7, None, 0), (5e-6, None, 4), (5e-7, "0", 4)):
        run = tmp_path / f"err{bump}{floor}"
        shutil.copytree(out, run)
        rows = [json.loads(x) for x in (run / "rows.jsonl").read_text().splitlines()]
        for r in rows:
            if r["method"] == "flash" and r["seq_len"] == 48:
                r["err_rel_l2"] += bump
        (run / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        extra = [] if floor is None else ["--error-abs-floor", floor]
        res = run_cli("compare", str(out), str(run), "--metrics", "error", *extra)
        assert res.stdout.count("REGRESSION") == want, res.stdout
        assert res.returncode == (1 if want else 0)
    res = run_cli("compare", str(out), str(out), "--error-abs-floor", "-1")
    assert res.returncode == 2 and "error-abs-floor" in res.stderr


def test_compare_refuses_other_device_kind(small_run, tmp_path):
    out, _ = small_run
    other = tmp_path / "gpu"
    shutil.copytree(out, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["device_info"]["device_name"] = "NVIDIA H100 80GB HBM3"
    (other / "meta.json").write_text(json.dumps(meta))
    res = run_cli("compare", str(out), str(other))
    assert res.returncode == 2 and "different device kinds" in res.stderr


def test_dry_run_writes_nothing(tmp_path):
    out = tmp_path / "dry"
    res = run_cli("run", "--methods", "exact,sdpa", "--out", str(out), "--dry-run", *SMALL)
    assert res.returncode == 0
    assert res.stdout.startswith("# 16 cells on cpu")
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--seq-lens", "0,64"], "--seq-lens must be positive"),
    (["--kv-heads", "3"], "--kv-heads 3 must be positive and divide"),
    (["--mode", "fwd,bwd"], "--mode 'bwd'"),
    (["--dtype", "fp8"], "--dtype 'fp8'"),
    (["--method-args", "sea.k=4"], "--method-args names 'sea'"),
])
def test_bad_input_one_message_nothing_written(tmp_path, args, message):
    out = tmp_path / "bad"
    res = run_cli("run", "--methods", "exact", "--device", "cpu", "--out", str(out), *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()


def test_method_variants_inline_options(tmp_path):
    res = run_cli("run", "--methods", "sdpa:backend=math,sdpa:backend=flash,exact", "--dry-run", *SMALL)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("# 24 cells")
    assert "{'backend': 'math'}" in res.stdout and "{'backend': 'flash'}" in res.stdout
    res = run_cli("run", "--methods", "sdpa:backend=math,sdpa:backend=math", "--dry-run", *SMALL)
    assert res.returncode == 2 and "twice" in res.stderr
    res = run_cli("run", "--methods", "sdpa:backend", "--dry-run", *SMALL)
    assert res.returncode == 2 and "NAME:key=value" in res.stderr


def test_compare_matches_cells_across_a_new_default_option(small_run, tmp_path):
    """A method that gains an option (recorded in new rows with its default) still matches its baseline; a
    non-default value is a different cell."""
    out, _ = small_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    rows = [json.loads(x) for x in (old / "rows.jsonl").read_text().splitlines()]
    for r in rows:
        if r["method"] == "sdpa":
            r["config"] = {}                                # as written before `backend` existed
            r["cell_id"] = "old-" + r["cell_id"]
    (old / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = run_cli("compare", str(old), str(out), "--reference-method", "exact")
    # the baseline's sdpa rows (backend absent = default 'auto') do not match the new run's backend=math rows
    assert res.returncode == 1 and "missing in new run" in res.stdout
    for r in rows:
        if r["method"] == "sdpa":
            r["config"] = {"backend": "math"}
    (old / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = run_cli("compare", str(old), str(out), "--reference-method", "exact")
    assert res.returncode == 0, res.stdout
    assert "compared 24 cells" in res.stdout


def test_git_info_prefers_the_commit_named_by_the_sender(monkeypatch):
    from harness import provenance

    monkeypatch.delenv("HARNESS_GIT_COMMIT", raising=False)
    local = provenance.git_info()
    monkeypatch.setenv("HARNESS_GIT_COMMIT", "abc1234")
    sent = provenance.git_info()
    assert sent["commit"] == "abc1234" and "sender" in sent["dirty"]
    if len(local["commit"]) == 40:                       # a checkout with history: its own view is kept beside
        assert sent["local_git"]["commit"] == local["commit"]


def test_plot_legend_of_long_variant_labels_stays_in_the_figure_below_the_panels():
    """Variant labels carry every option; the report's legend must neither leave the figure nor cover a panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report import legend_below

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    long = "sea[" + ",".join(f"option_{i}=value_{i}" for i in range(25)) + "]"
    for i in range(4):
        axes[0].plot([1, 2], [i, i + 1], label=f"{long}{i}")
    legend_below(fig, axes[0])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert len(fig.legends) == 1
    box, frame = fig.legends[0].get_window_extent(renderer), fig.bbox
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
    assert box.y1 <= min(ax.get_tightbbox(renderer).y0 for ax in axes) + 1      # under every panel and its labels
    plt.close(fig)
