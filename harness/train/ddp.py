"""Data-parallel distillation under torchrun: process group, per-rank batch slices, exact global loss weights.

Every rank holds a full replica of the teacher and the student (DistributedDataParallel averages the student's
gradients), or with `distill --fsdp` a shard of the student (harness.train.fsdp: FSDP2 averages the gradients
the same way, so everything below applies unchanged). The global batch of a step is a
function of (seed, step) only; rank r trains on its contiguous slice of it (`rank_slice`). So that the result
does not depend on the number of ranks, each loss term is weighted on every rank by its share of the term's
global normaliser (`term_counts`: real query rows, real tokens, targets or sequences of the local slice), so
DDP's mean over ranks of the gradients equals the gradient of the single-process loss on the whole global
batch (up to floating-point reduction order), padding or uneven slices included.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int
    backend: str

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str) -> DistEnv | None:
    """Under torchrun (WORLD_SIZE > 1): pin this rank's GPU (LOCAL_RANK) when `device` is cuda and join the
    process group (NCCL on CUDA, gloo on CPU). None for a single-process run."""
    import torch.distributed as td

    world = world_from_env()
    if world <= 1:
        return None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(local)            # "cuda" now means this rank's GPU
        backend = "nccl"
    if not td.is_initialized():
        # long timeout: rank 0 evaluates and writes checkpoints while the others wait in the next collective
        td.init_process_group(backend, timeout=datetime.timedelta(hours=12))
    return DistEnv(rank=rank, world=world, local_rank=local, backend=backend)


def finish(env: DistEnv | None) -> None:
    import torch.distributed as td

    if env is not None and td.is_initialized():
        td.barrier()
        td.destroy_process_group()


def barrier(env: DistEnv | None) -> None:
    if env is not None:
        import torch.distributed as td

        td.barrier()


def broadcast(env: DistEnv | None, obj, src: int = 0):
    """`obj` of rank `src` on every rank (picklable)."""
    if env is None:
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=src)
    return box[0]


def rank_slice(n: int, rank: int, world: int) -> slice:
    """Rows of a global batch of n taken by `rank`: contiguous, disjoint, sizes differing by at most one."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def term_counts(kind: str, batch: dict) -> dict[str, float]:
    """The local normaliser of every loss term (losses.py): each term is a mean over these units.

    Per-layer terms and hidden/logits terms of token models: real tokens (query rows); logits_kl and task of a
    classifier: sequences; causal task: next-token targets that are not padding."""
    ids = batch["input_ids"]                                                 # [b, T]
    mask = batch.get("attention_mask")
    b, T = ids.shape
    tokens = float(mask.sum()) if mask is not None else float(b * T)
    counts = {k: tokens for k in ("out_mse", "est_kl", "est_mse", "attn_kl", "attn_mse", "hidden", "logits_kl")}
    if kind == "causal":
        counts["task"] = float(mask[:, 1:].sum()) if mask is not None else float(b * (T - 1))
    else:
        counts["task"] = float(b)
        if kind == "classification":
            counts["logits_kl"] = float(b)                                   # [b, classes] logits: a mean over b
    return counts


def all_reduce_sum(values: list[float], device) -> list[float]:
    """Element-wise sum over ranks (float64 on the process group's device)."""
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(t, op=td.ReduceOp.SUM)
    return t.tolist()
