"""Sharded data parallelism for the distillation student (`distill --fsdp` under torchrun): PyTorch's FSDP2
(`torch.distributed.fsdp.fully_shard`, parameters become DTensors sharded on dim 0 over all ranks).

Units: every per-layer method module (`harness_attn`) is a unit of its own, nested in its transformer layer (the
element of the model's outermost ModuleList that holds the attention layer), which is a unit, then the root.
Method modules are units of their own because (a) FSDP2 needs one dtype for the trainable parameters of a unit
(a bf16 model with an fp32 estimator) and (b) the trainer calls `attention_probs` after the forward: their
parameters stay gathered from forward to backward (reshard_after_forward=False; they are small), while the
layers' own weights are freed after each layer's forward. Gradients are averaged over ranks by FSDP's
reduce-scatter exactly as DDP averages them, so the loss weights of harness.train.ddp apply unchanged.

Checkpoints keep the single-process format: every sharded tensor (parameters, AdamW moments) is gathered to
its full form (one tensor at a time, collectively) and rank 0 writes it; loading distributes full tensors
back to the shards. So any checkpoint can be resumed with or without FSDP and on any number of ranks.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def layer_units(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """For each module name (a method module), the element of the outermost ModuleList on its path: the
    transformer layer holding it (e.g. model.layers.3 of 'model.layers.3.self_attn.harness_attn')."""
    modules = dict(model.named_modules())
    units: dict[int, nn.Module] = {}
    for name in names:
        parts = name.split(".")
        found = None
        for i in range(1, len(parts)):
            parent = modules[".".join(parts[:i - 1])] if i > 1 else model
            if parts[i - 1].isdigit() and isinstance(parent, nn.ModuleList):
                found = modules[".".join(parts[:i])]
                break
        if found is None:
            raise ValueError(f"--fsdp: no transformer layer (element of an nn.ModuleList) holds {name!r}")
        units.setdefault(id(found), found)
    return list(units.values())


def shard_student(student: nn.Module, method_mods: list[tuple[str, nn.Module]], device: torch.device) -> None:
    """Rank 0's parameters and buffers to every rank (as DDP does), then fully_shard: method modules, layers,
    root. Call after requires_grad is set (FSDP2 checks the dtypes of trainable parameters per unit)."""
    import torch.distributed as td
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    with torch.no_grad():
        for t in [*student.parameters(), *student.buffers()]:
            td.broadcast(t.data, src=0)
    mesh = init_device_mesh(device.type, (td.get_world_size(),))
    for _, m in method_mods:
        fully_shard(m, mesh=mesh, reshard_after_forward=False)
    for unit in layer_units(student, [n for n, _ in method_mods]):
        fully_shard(unit, mesh=mesh)
    fully_shard(student, mesh=mesh)


def block_units(model: nn.Module) -> list[nn.Module]:
    """The elements of the model's outermost nn.ModuleList (its transformer layers), the shallowest one found."""
    best = None
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0:
            depth = name.count(".")
            if best is None or depth < best[0]:
                best = (depth, m)
    if best is None:
        raise ValueError("--fsdp-teacher shard: the teacher has no nn.ModuleList of layers to shard by")
    return list(best[1])


def teacher_bytes(teacher: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*teacher.parameters(), *teacher.buffers()])


def device_bytes(device: torch.device) -> int:
    """Total memory of one rank's device: the GPU's, or the host's physical memory for CPU ranks."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# auto shards the teacher when its weights take more than this share of one rank's device memory: the student's
# sharded weights, its optimizer state and both models' activations need the rest
TEACHER_SHARE = 0.25


def teacher_policy(choice: str, teacher: nn.Module, device: torch.device) -> tuple[str, str]:
    """('shard' or 'replicate', why) for --fsdp-teacher auto|shard|replicate."""
    if choice not in ("auto", "shard", "replicate"):
        raise ValueError(f"--fsdp-teacher {choice!r}: expected auto, shard or replicate")
    if choice != "auto":
        return choice, "asked for"
    need, have = teacher_bytes(teacher), device_bytes(device)
    why = f"teacher weights {need / 2**30:.2f} GiB vs {have / 2**30:.1f} GiB per rank (shard above {TEACHER_SHARE:.0%})"
    return ("shard" if need > TEACHER_SHARE * have else "replicate"), why


def shard_teacher(teacher: nn.Module, device: torch.device) -> None:
    """fully_shard the frozen teacher per transformer layer and at the root (parameters gathered for each layer's
    forward and freed after it). Every rank then takes part in each teacher forward (collective)."""
    import torch.distributed as td
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    with torch.no_grad():
        for t in [*teacher.parameters(), *teacher.buffers()]:
            td.broadcast(t.data, src=0)
    mesh = init_device_mesh(device.type, (td.get_world_size(),))
    for unit in block_units(teacher):
        fully_shard(unit, mesh=mesh)
    fully_shard(teacher, mesh=mesh)


def full_cpu(t: torch.Tensor, keep: bool) -> torch.Tensor | None:
    """The full tensor on the CPU (collective for a DTensor: every rank must call); None where not `keep`."""
    t = t.detach()
    if _is_dtensor(t):
        t = t.full_tensor()
    return t.cpu().contiguous().clone() if keep else None


def gather_named(named, keep: bool) -> dict[str, torch.Tensor]:
    """{name: full CPU tensor} on the rank that keeps it ({} elsewhere); same order on every rank."""
    out = {}
    for n, t in named:
        full = full_cpu(t, keep)
        if keep:
            out[n] = full
    return out


def gather_optimizer(optimizer: torch.optim.Optimizer, keep: bool) -> dict:
    """optimizer.state_dict() with every sharded state tensor gathered: the single-process format."""
    sd = optimizer.state_dict()                     # {'state': {index: {key: tensor}}, 'param_groups': [...]}
    state = {}
    for idx in sorted(sd["state"]):
        entry = {k: (full_cpu(v, keep) if isinstance(v, torch.Tensor) else v) for k, v in sd["state"][idx].items()}
        state[idx] = entry
    return {"state": state, "param_groups": sd["param_groups"]} if keep else {}


def shard_optimizer_state(sd: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A full (single-process) optimizer state dict with each state tensor of a sharded parameter distributed
    like that parameter, ready for optimizer.load_state_dict."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = {}
    for idx, entry in sd["state"].items():
        p = params[int(idx)]
        state[idx] = {k: (distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
                          if _is_dtensor(p) and k != "step" and isinstance(v, torch.Tensor) else v)
                      for k, v in entry.items()}
    return {"state": state, "param_groups": sd["param_groups"]}


@torch.no_grad()
def load_full(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy full tensors (model state_dict keys) into the model's sharded parameters and its buffers."""
    from torch.distributed.tensor import distribute_tensor

    targets = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name in sorted(tensors):                    # the same order on every rank (distribute_tensor is collective)
        if name not in targets:
            raise KeyError(f"checkpoint tensor {name!r} is not in the model")
        t = targets[name]
        full = tensors[name].to(t.device, t.dtype)
        t.copy_(distribute_tensor(full, t.device_mesh, t.placements) if _is_dtensor(t) else full)


def write_method_state(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """The file swap.save_method_state writes, from gathered full tensors (model state_dict keys) of the
    method modules: swap.load_method_state reads it with or without FSDP."""
    from harness.models import swap

    swap.write_method_state(swap.handle_of(model), tensors, path)


def read_method_state(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a method-state file after the checks swap.load_method_state makes (format, method,
    config), every stored layer being built in this model's attached method."""
    from safetensors.torch import load_file

    from harness.models import swap

    handle = swap.handle_of(model)
    meta = swap.check_method_state(handle, path)
    built = {info.name for info in handle.layers.values()}
    missing = set(json.loads(meta["layers"])) - built
    if missing:
        raise swap.SwapError(f"{path}: layers {sorted(missing)[:5]} are not built in this (sharded) student")
    return load_file(str(path))
