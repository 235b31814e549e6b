"""Where a number came from: git commit, package versions, device, driver, CPU, threads."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ("torch", "triton", "transformers", "numpy", "pandas", "flash-attn", "flash_attn_3", "xformers",
            "attention-harness")
ROOT = Path(__file__).resolve().parents[1]


def git_info() -> dict:
    def run(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    # A copy of the tree sent elsewhere (e.g. to a lent GPU machine) may carry no git history, or a stale one
    # (the checkout's .git as it was when the session began): the sender names the commit, and that wins.
    sent = os.environ.get("HARNESS_GIT_COMMIT", "")
    commit = run("rev-parse", "--verify", "-q", "HEAD")
    local = len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
    if sent:
        info = {"commit": sent, "dirty": "unknown (named by the sender in HARNESS_GIT_COMMIT)"}
        if local:
            info["local_git"] = {"commit": commit, "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}
        return info
    if local:
        return {"commit": commit, "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}
    return {"commit": "unknown", "dirty": "unknown"}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str) -> dict:
    import torch

    info = {"device": device, "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=props.name, device_memory_bytes=props.total_memory,
                    compute_capability=f"{props.major}.{props.minor}", sm_count=props.multi_processor_count,
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
            info["driver"] = smi[0] if smi else ""
        except (OSError, subprocess.SubprocessError):
            info["driver"] = ""
    else:
        info["device_name"] = f"cpu: {info['cpu']}"
    return info


def device_kind(meta: dict) -> str:
    """A folder-friendly name for the kind of device a run used (compare refuses mixing kinds)."""
    name = meta.get("device_info", {}).get("device_name", "unknown")
    if name.startswith("cpu"):
        return "cpu"
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return slug


def run_meta(device: str, argv: list[str] | None = None) -> dict:
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m harness", *(argv if argv is not None else sys.argv[1:])]),
        "git": git_info(),
        "versions": versions(),
        "device_info": device_info(device),
        "platform": platform.platform(),
    }
