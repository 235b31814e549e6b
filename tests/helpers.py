"""Shared test helpers: run the CLI in a fresh process, with the test plugin installed on demand."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "tests" / "fixtures" / "fault_plugin"


def run_cli(*args: str, plugin: bool = False, timeout: float = 600, cwd: Path | None = None,
            env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    paths = [str(ROOT)] + ([str(PLUGIN_DIR)] if plugin else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT, env=env)


def read_rows(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "rows.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
