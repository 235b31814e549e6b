"""Typed result rows: one per cell, whatever happened to it."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("ok", "unsupported", "oom", "timeout", "error", "wrong")


@dataclass(frozen=True)
class Row:
    # identity
    run_id: str
    cell_id: str
    method: str
    config: dict[str, Any]
    batch: int
    heads: int
    kv_heads: int
    seq_len: int
    head_dim: int
    dtype: str
    causal: bool
    mode: str
    device: str
    seed: int
    inputs: str
    # outcome
    status: str                                 # one of STATUSES
    reason: str = ""                            # refusal reasons, error message, why wrong
    impl: str = ""                              # what actually ran (backend, kernel, estimator state)
    device_name: str = ""
    # latency (milliseconds) of the timed region: forward, or forward + backward
    latency_ms: float | None = None
    latency_p20_ms: float | None = None
    latency_p80_ms: float | None = None
    n_timed: int | None = None
    timer: str = ""
    # memory: peak bytes above the inputs during one call
    memory_bytes: int | None = None
    memory_metric: str = ""
    # throughput, exact methods only
    tflops: float | None = None
    flops_formula: str = ""
    # error against exact softmax attention on the same inputs
    err_rel_l2: float | None = None
    err_max_abs: float | None = None
    grad_err_rel_l2: float | None = None
    attn_kl: float | None = None
    topk_recall: float | None = None
    ref: str = ""
    gate: str = ""                              # the correctness gate that was applied
    wall_s: float | None = None
    started_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, allow_nan=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Row":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def row_for(cell, run_id: str, status: str, **values) -> Row:
    """A Row carrying the cell's identity plus `values`."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} not in {STATUSES}")
    key = cell.key()
    return Row(run_id=run_id, cell_id=cell.cell_id, status=status, **key, **values)
