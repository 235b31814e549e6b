"""Non-finite (NaN / Inf) flags of several tensors in small Triton kernel launches, no host sync.

What: `nonfinite_flags(*tensors)` -> int32 [len(tensors)] on the tensors' device, 1 where the tensor holds a NaN or
an Inf, 0 where every value is finite. Floating tensors of any dtype (16-bit ones tested in float32, float64 in its
own dtype, so large finite float64 values are not mistaken for Inf); contiguous tensors on CUDA (or CPU under
TRITON_INTERPRET=1) take the kernel, others the PyTorch form (aminmax: the smallest and largest value are finite
exactly when every value is, as NaN propagates).

Why: SEA checks q, k, v for NaN / Inf before attending (a non-finite input would otherwise turn into an attention
mask built on garbage). One program reads ITERS x BLOCK consecutive values, keeps a per-lane flag and adds one atomic
max per program into the tensor's flag; contiguous tensors go in groups of up to three (SEA's q, k, v: one launch)
whose program ranges cover them in turn (in SEA's 8k bidirectional forward on an H200 three launches took 0.025 ms
for 50 MB, one launch 0.014: results/nvidia-h200/sea-decoder-ends/call7/). Predicted on an H200 (32k, bf16, B=1,
H=16, D=64) before either: ~0.06 ms for the three tensors, against aminmax's ~0.26 ms (a guess that took a 0.26 ms
reduction of the training step for the check; it was another reduction). Measured (one launch a tensor then,
results/nvidia-h200/sea-train/call16/, call17/): alone 0.107 against aminmax's 0.335 ms (L2 flushed); inside a 64k
causal forward 0.109 against 0.160 ms; in the 32k training step within the spread.
"""
from __future__ import annotations

import torch

from kernels._buffers import triton_runs_on

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton missing: the PyTorch form runs
    triton = None
    tl = None

# values per load step and steps per program (BLOCK * ITERS values per program)
BLOCK = 4096
ITERS = 8
ONE_LAUNCH = True                # up to three contiguous tensors a launch (False: one launch each; the A/B switch)


if triton is not None:

    @triton.jit
    def _scan(X, Y, n, pid, FLAG, BLOCK: tl.constexpr, ITERS: tl.constexpr, COPY: tl.constexpr):
        # program `pid` of one tensor: ITERS x BLOCK consecutive values, one atomic max into its flag; COPY: each
        # value also stored to Y (the same position), so a copy costs no second read
        base = pid.to(tl.int64) * (BLOCK * ITERS)
        bad = tl.zeros([BLOCK], dtype=tl.int32)
        for i in range(ITERS):
            offs = base + i * BLOCK + tl.arange(0, BLOCK)
            x = tl.load(X + offs, mask=offs < n, other=0.0)
            if COPY:
                tl.store(Y + offs, x, mask=offs < n)
            if X.dtype.element_ty != tl.float64:                         # 16-bit: NaN / Inf survive the cast
                x = x.to(tl.float32)
            bad = bad | ((x != x) | (tl.abs(x) == float("inf"))).to(tl.int32)
        tl.atomic_max(FLAG, tl.max(bad, axis=0))

    @triton.jit
    def _nonfinite3_kernel(X0, X1, X2, Y0, Y1, Y2, n0, n1, n2, p0, p1, FLAG, f0, f1, f2, BLOCK: tl.constexpr,
                           ITERS: tl.constexpr, COPY: tl.constexpr):
        # up to three tensors in one launch: programs [0, p0) read X0 (flag f0), [p0, p0 + p1) X1 (f1), the rest X2
        # (f2); a group of fewer tensors launches fewer programs, so the missing slots are never reached. COPY:
        # X0 .. X2 also copied to Y0 .. Y2
        pid = tl.program_id(0)
        if pid < p0:
            _scan(X0, Y0, n0, pid, FLAG + f0, BLOCK, ITERS, COPY)
        elif pid < p0 + p1:
            _scan(X1, Y1, n1, pid - p0, FLAG + f1, BLOCK, ITERS, COPY)
        else:
            _scan(X2, Y2, n2, pid - p0 - p1, FLAG + f2, BLOCK, ITERS, COPY)


def _torch_flag(t: torch.Tensor) -> torch.Tensor:
    if t.numel() == 0:
        return torch.zeros((), dtype=torch.int32, device=t.device)
    lo, hi = torch.aminmax(t)
    return (~(torch.isfinite(lo) & torch.isfinite(hi))).to(torch.int32)


def nonfinite_flags(*tensors: torch.Tensor, backend: str = "auto", copy_to=None) -> torch.Tensor:
    """int32 [len(tensors)]: 1 where a tensor holds NaN / Inf. All tensors floating and on one device. backend:
    auto (the kernel for contiguous tensors where Triton runs, PyTorch otherwise), triton or torch. copy_to: one
    destination per tensor (same shape and dtype, on the same device), filled with the tensor's values on the way
    (the kernel stores what it reads: SEA's CUDA-graph replay copies q, k, v into the graph's inputs and checks them
    in one pass; other paths copy after checking)."""
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend={backend!r}: expected auto, triton or torch")
    if not tensors:
        raise ValueError("nonfinite_flags needs at least one tensor")
    dev = tensors[0].device
    for i, t in enumerate(tensors):
        if not t.is_floating_point():
            raise ValueError(f"nonfinite_flags: tensor {i} is {t.dtype}, not floating")
        if t.device != dev:
            raise ValueError(f"nonfinite_flags: tensor {i} is on {t.device}, tensor 0 on {dev}")
    if copy_to is not None:
        copy_to = tuple(copy_to)
        if len(copy_to) != len(tensors):
            raise ValueError(f"nonfinite_flags: {len(copy_to)} destinations for {len(tensors)} tensors")
        for i, (t, y) in enumerate(zip(tensors, copy_to)):
            if not isinstance(y, torch.Tensor) or (y.shape, y.dtype, y.device) != (t.shape, t.dtype, t.device):
                raise ValueError(f"nonfinite_flags: destination {i} must be a {t.dtype} tensor of shape "
                                 f"{tuple(t.shape)} on {t.device}")
    runs = triton_runs_on(dev, triton is not None)
    if backend == "triton" and not runs:
        raise RuntimeError(f"nonfinite_flags: Triton cannot run on {dev} (CUDA, or TRITON_INTERPRET=1 on CPU)")
    if backend == "torch" or (backend == "auto" and not runs):
        flags = torch.stack([_torch_flag(t) for t in tensors])
        for t, y in zip(tensors, copy_to or ()):
            y.copy_(t)
        return flags
    flags = torch.zeros(len(tensors), dtype=torch.int32, device=dev)
    per = BLOCK * ITERS
    todo = []                                                            # contiguous, non-empty: the kernel's
    for i, t in enumerate(tensors):
        y = None if copy_to is None else copy_to[i]
        if not t.is_contiguous() or (y is not None and not y.is_contiguous()):
            if backend == "triton":
                raise ValueError(f"nonfinite_flags: tensor {i} or its destination is not contiguous "
                                 f"(backend=triton)")
            flags[i] = _torch_flag(t)
            if y is not None:
                y.copy_(t)
        elif t.numel():
            todo.append(i)
    group = 3 if ONE_LAUNCH else 1
    for g in range(0, len(todo), group):                                 # q, k, v: one launch
        real = todo[g:g + group]
        progs = [triton.cdiv(tensors[i].numel(), per) for i in real] + [0] * (3 - len(real))
        idx = real + [real[0]] * (3 - len(real))                         # unused slots: no programs reach them
        ts = [tensors[i] for i in idx]
        ys = ts if copy_to is None else [copy_to[i] for i in idx]
        _nonfinite3_kernel[(sum(progs),)](*ts, *ys, *(t.numel() for t in ts), progs[0], progs[1], flags, *idx,
                                          BLOCK=BLOCK, ITERS=ITERS, COPY=copy_to is not None, num_warps=8)
    return flags
