"""Registry: lazy listing, did-you-mean, option validation, third-party entry points."""
import json
import subprocess
import sys

import pytest

import methods
from methods.base import MethodConfigError, Problem, parse_method_args
from tests.helpers import ROOT, run_cli


def test_listing_imports_no_heavy_packages():
    code = ("import sys, methods; ms = methods.all_methods(); "
            "[m.availability('cpu') for m in ms.values()]; "
            "print(sorted(ms)); print([p for p in ('triton', 'flash_attn', 'xformers', 'kernels.sea_sparse_attention')"
            " if p in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    names, heavy = out.stdout.strip().splitlines()
    assert "exact" in names and "flash" in names
    assert heavy == "[]", f"listing imported {heavy}"


def test_list_command_shows_availability_and_reasons():
    res = run_cli("list", "--json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    by = {m["name"]: m for m in data["methods"]}
    assert by["exact"]["available"] and by["exact"]["why_not"] == []
    assert data["load_errors"] == {}, data["load_errors"]
    for m in data["methods"]:
        # every unavailable method says why
        assert m["available"] or m["why_not"], m


def test_unknown_method_did_you_mean(tmp_path):
    out = tmp_path / "run"
    res = run_cli("run", "--methods", "flsh", "--device", "cpu", "--out", str(out))
    assert res.returncode == 2
    assert "unknown method 'flsh'; did you mean 'flash'?" in res.stderr
    assert not out.exists()


def test_unknown_option_is_an_error(tmp_path):
    out = tmp_path / "run"
    res = run_cli("run", "--methods", "sdpa", "--method-args", "sdpa.backnd=math", "--device", "cpu",
                  "--out", str(out))
    assert res.returncode == 2
    assert "unknown option 'sdpa.backnd'" in res.stderr and "backend" in res.stderr
    assert not out.exists()


def test_option_parsing_and_choices():
    cls = methods.get("sdpa")
    assert cls.resolve_config({"backend": "math"})["backend"] == "math"
    with pytest.raises(MethodConfigError, match="expected one of"):
        cls.resolve_config({"backend": "fastest"})
    assert parse_method_args(["sea.k=64", "sdpa.backend=math"]) == {"sea": {"k": "64"}, "sdpa": {"backend": "math"}}
    with pytest.raises(MethodConfigError, match="NAME.key=value"):
        parse_method_args(["k=64"])
    assert methods.get("flex").resolve_config({"compile": "false", "block": "64"}) == {"compile": False, "block": 64}


def test_refusals_name_every_reason():
    cls = methods.get("flex")
    p = Problem(batch=1, heads=4, kv_heads=4, seq_len=64, head_dim=24, dtype="fp16", device="cpu", backward=True)
    reasons = cls.supports(p, cls.resolve_config({}))
    text = " | ".join(reasons)
    assert "backward" in text and "fp16" in text and "head_dim=24" in text, reasons
    p2 = Problem(batch=1, heads=6, kv_heads=4, seq_len=64, head_dim=32)
    assert any("multiple" in r for r in methods.get("exact").supports(p2, {"precision": "native"}))


def test_entry_point_plugin_is_discovered():
    res = run_cli("list", "--json", "--device", "cpu", plugin=True)
    assert res.returncode == 0, res.stderr
    names = {m["name"] for m in json.loads(res.stdout)["methods"]}
    assert {"fault-oom", "fault-hang", "fault-none"} <= names
