"""Sweeps over several GPUs (or CPU processes) with torch.distributed, launched by torchrun:

    torchrun --nproc-per-node 4 -m harness run ...

Every rank runs its share of the grid in its own isolated worker (on GPU `LOCAL_RANK`) and appends its
rows to `rows.rank<R>.jsonl` in the shared run directory; when all ranks are done, rank 0 merges them into
`rows.jsonl`, so `report` and `compare` read the run exactly like a single-process one. A rank that dies
loses only its unfinished cells: its rows so far stay in its file and `--resume` (with any number of
processes) runs the rest. Coordination uses the gloo backend (barriers and one broadcast), so it works for
CPU and GPU sweeps alike; multi-node runs use torchrun's usual rendezvous flags (--nnodes, --rdzv-endpoint).

Two schedules. `static` (default): a deterministic cost-balanced assignment made before any cell runs (the same
grid and world size always give the same ranks the same cells). `dynamic`: ranks walk the cells in the same
order (most expensive first) and each takes the next cell nobody has claimed, by creating a claim file in the
run directory (O_CREAT | O_EXCL, atomic on one host and on shared file systems that honour it); a rank that
finishes early keeps taking work, so mispriced cells (kernel compilation, methods whose time is not T^2) do not
leave a GPU idle. Which rank ran a cell then varies between runs; the rows do not.
"""
from __future__ import annotations

import os
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.grid import Cell

SCHEDULES = ("static", "dynamic")


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int


def from_env() -> Dist | None:
    """The torchrun environment, or None for a single-process run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return Dist(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init(dist: Dist) -> None:
    import datetime

    import torch.distributed as td

    if not td.is_initialized():
        td.init_process_group("gloo", timeout=datetime.timedelta(hours=12))


def barrier() -> None:
    import torch.distributed as td

    td.barrier()


def broadcast(obj, src: int = 0):
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=src)
    return box[0]


def finish() -> None:
    import torch.distributed as td

    if td.is_initialized():
        td.destroy_process_group()


def cell_cost(cell: Cell) -> float:
    """Expected relative cost: the exact-attention work of the cell (a forward+backward counts 3.5 forwards),
    plus a constant for setup so that many small cells also spread out."""
    work = cell.batch * cell.heads * cell.seq_len ** 2 * cell.head_dim * (3.5 if cell.backward else 1.0)
    return work + 1e8


def shard(cells: list[Cell], world: int) -> list[list[Cell]]:
    """Deterministic cost-balanced assignment (longest-processing-time first); each rank keeps grid order."""
    order = sorted(range(len(cells)), key=lambda i: (-cell_cost(cells[i]), i))
    loads = [0.0] * world
    owner = [0] * len(cells)
    for i in order:
        r = min(range(world), key=lambda j: (loads[j], j))
        owner[i] = r
        loads[r] += cell_cost(cells[i])
    return [[c for i, c in enumerate(cells) if owner[i] == r] for r in range(world)]


def cost_order(cells: list[Cell]) -> list[Cell]:
    """Most expensive first (ties in grid order): the order in which the dynamic schedule hands out cells."""
    return [cells[i] for i in sorted(range(len(cells)), key=lambda i: (-cell_cost(cells[i]), i))]


class Claims:
    """Cells claimed by ranks of one sweep invocation: one empty file per cell under `root/token/`."""

    def __init__(self, root: Path, token: str):
        self.dir = Path(root) / token
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def reset(root: Path) -> None:
        """Forget the claims of earlier invocations (rank 0, before the ranks start)."""
        shutil.rmtree(root, ignore_errors=True)

    def take(self, cell_id: str) -> bool:
        """True for exactly one caller per cell, whichever process or rank asks."""
        name = hashlib.sha1(cell_id.encode()).hexdigest() + ".claim"
        try:
            fd = os.open(self.dir / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(cell_id + "\n")
        return True
