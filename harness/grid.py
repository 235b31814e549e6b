"""Sweep specification: presets, the grid of cells, and each cell's stable identity."""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

MODES = ("fwd", "fwd+bwd")


@dataclass(frozen=True)
class Cell:
    """One measurement: a method with its resolved config on one problem."""

    method: str
    config: tuple[tuple[str, Any], ...]      # resolved options, sorted (hashable)
    batch: int
    heads: int
    kv_heads: int
    seq_len: int
    head_dim: int
    dtype: str
    causal: bool
    mode: str                                # "fwd" or "fwd+bwd"
    device: str                              # "cpu" or "cuda"
    seed: int
    inputs: str = "gaussian"                 # "gaussian" or a path to captured q/k/v (safetensors)

    @property
    def config_dict(self) -> dict[str, Any]:
        return dict(self.config)

    @property
    def backward(self) -> bool:
        return self.mode == "fwd+bwd"

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = dict(self.config)
        return d

    @property
    def cell_id(self) -> str:
        blob = json.dumps(self.key(), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def label(self) -> str:
        direction = "causal" if self.causal else "bidir"
        gqa = f"/{self.kv_heads}kv" if self.kv_heads != self.heads else ""
        return (f"{self.method} T={self.seq_len} B={self.batch} H={self.heads}{gqa} D={self.head_dim} "
                f"{self.dtype} {direction} {self.mode}")


@dataclass
class SweepSpec:
    """The axes of a sweep; `expand` turns it into cells (one per method x axis combination)."""

    methods: list[str]                       # entries: NAME or NAME:key=value[:key=value] (a variant)
    seq_lens: list[int]
    batch: list[int] = field(default_factory=lambda: [1])
    heads: list[int] = field(default_factory=lambda: [8])
    kv_heads: list[int | None] = field(default_factory=lambda: [None])   # None: same as heads
    head_dim: list[int] = field(default_factory=lambda: [64])
    dtype: list[str] = field(default_factory=lambda: ["fp32"])
    causal: list[bool] = field(default_factory=lambda: [True])
    mode: list[str] = field(default_factory=lambda: ["fwd"])
    device: str = "cpu"
    seed: int = 0
    inputs: str = "gaussian"


@dataclass(frozen=True)
class Preset:
    name: str
    help: str
    device: str                      # the device it is meant for
    axes: dict[str, Any]


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("cpu-smoke", "seconds on 2 CPU cores: tiny shapes, both directions, fwd", "cpu",
           dict(seq_lens=[128, 256], batch=[1], heads=[4], head_dim=[32], dtype=["fp32"], causal=[True, False],
                mode=["fwd"])),
    Preset("cpu", "default on CPU: T = 256 ... 2048, causal, fp32, fwd", "cpu",
           dict(seq_lens=[256, 512, 1024, 2048], batch=[1], heads=[8], head_dim=[64], dtype=["fp32"],
                causal=[True], mode=["fwd"])),
    Preset("gpu", "default on CUDA: T = 1k ... 64k, bf16, B=1, H=16, D=64, causal, fwd", "cuda",
           dict(seq_lens=[1024, 2048, 4096, 8192, 16384, 32768, 65536], batch=[1], heads=[16], head_dim=[64],
                dtype=["bf16"], causal=[True], mode=["fwd"])),
    Preset("gpu-full", "T = 1k ... 64k, bf16, D = 64 and 128, causal and bidirectional, fwd and fwd+bwd", "cuda",
           dict(seq_lens=[1024, 2048, 4096, 8192, 16384, 32768, 65536], batch=[1], heads=[16], head_dim=[64, 128],
                dtype=["bf16"], causal=[True, False], mode=["fwd", "fwd+bwd"])),
    Preset("gpu-long", "T = 16k ... 256k, bf16, B=1, H=16, D=64, causal, fwd", "cuda",
           dict(seq_lens=[16384, 32768, 65536, 131072, 262144], batch=[1], heads=[16], head_dim=[64],
                dtype=["bf16"], causal=[True], mode=["fwd"])),
)}


def default_preset(device: str) -> str:
    return "gpu" if device == "cuda" else "cpu"


def spec_from_preset(name: str, methods: list[str], device: str, seed: int = 0) -> SweepSpec:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; presets: {', '.join(PRESETS)}")
    return SweepSpec(methods=methods, device=device, seed=seed, **PRESETS[name].axes)


def expand(spec: SweepSpec, variants: list[tuple[str, dict[str, Any]]]) -> list[Cell]:
    """Cells in a stable order: by method variant, then shape axes, then T ascending (small first)."""
    cells = []
    for method, config in variants:
        cfg = tuple(sorted(config.items()))
        for b, h, hkv, d, dt, causal, mode in itertools.product(spec.batch, spec.heads, spec.kv_heads,
                                                               spec.head_dim, spec.dtype, spec.causal, spec.mode):
            for t in sorted(spec.seq_lens):
                cells.append(Cell(method=method, config=cfg, batch=b, heads=h, kv_heads=hkv or h, seq_len=t,
                                  head_dim=d, dtype=dt, causal=causal, mode=mode, device=spec.device,
                                  seed=spec.seed, inputs=spec.inputs))
    return cells


def validate_spec(spec: SweepSpec) -> list[str]:
    """Every problem with the spec's axes, in words (empty when fine)."""
    errors = []
    if not spec.methods:
        errors.append("no methods given")
    for name, values in (("--seq-lens", spec.seq_lens), ("--batch", spec.batch), ("--heads", spec.heads),
                         ("--head-dim", spec.head_dim)):
        if not values:
            errors.append(f"{name} is empty")
        bad = [v for v in values if not isinstance(v, int) or v <= 0]
        if bad:
            errors.append(f"{name} must be positive integers (got {', '.join(map(str, bad))})")
    for hkv in spec.kv_heads:
        if hkv is not None and (hkv <= 0 or any(h % hkv for h in spec.heads)):
            errors.append(f"--kv-heads {hkv} must be positive and divide every --heads value {spec.heads}")
    for m in spec.mode:
        if m not in MODES:
            errors.append(f"--mode {m!r}: expected one of {', '.join(MODES)}")
    if spec.device not in ("cpu", "cuda"):
        errors.append(f"--device {spec.device!r}: expected cpu or cuda")
    return errors
