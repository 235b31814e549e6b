"""CUDA-graph replay of the SEA layer's inference forward (the layer's `cuda_graph` option).

Why: at short sequences SEA's eager forward is bound by the host, not the GPU: ~100 kernel launches from Python
(on an H200 at 16k causal, 1.6 ms of kernels took 2.6-3.1 ms of wall; replayed as one graph the same work was
1.19x cuDNN, results/nvidia-h200/sea-front/call4/). A `GraphCache` captures the layer's whole-sequence forward once
per call signature and replays it afterwards.

What a replayed call does, in order: the finite-input check on the caller's q, k, v, which copies them into the
graph's static inputs as it reads them (one kernel; the host reads the flags after the replay is queued, as the
eager forward does; with `validate_inputs` off, three plain copies), copies the padding mask, replays, and returns a
copy of the graph's output (the next replay overwrites it). So a replay costs four copies of a [B, H, T, D] tensor
on top of the kernels: cheap where launches dominate, a loss where the kernels do, hence the cap on T (`max_len`).
At 8k bidirectional on an H200 the check took 0.018 ms and the three copies 0.025 (results/nvidia-h200/
sea-graph-call/call1/). Measured on an H200 (bf16, B=1, H=16, D=64, SEA fast, against cuDNN in
the same run, results/nvidia-h200/sea-graph-replay/): causal 8k 6.7-11.5x eager -> 2.9x, 16k 2.2-3.2x -> 1.28-1.30x,
32k 0.50-0.83x -> 0.52-0.54x; bidirectional 8k 8.7-13.7x -> 3.2-3.4x, 16k 1.6-3.5x -> 1.36-1.48x (the eager walls vary
with the lent host, the replayed ones do not); at 64k the replay was 0.1-0.2 ms slower than eager.

Which calls replay: CUDA, no gradient needed (no_grad / inference, or nothing requiring grad), not inside another
graph capture, T <= max_len, and the whole-sequence path (query blocks run eagerly). A signature's first call runs
eagerly (it compiles and autotunes); the second captures and replays. The signature: shapes, dtypes, device,
causal, padding-mask shape, scale, train / eval, autocast state and the storage of the layer's parameters and
buffers (so `module.to(...)` or a replaced parameter captures again; in-place updates are read by the replay). The
layer's other attributes are read at capture: changing them later needs `reset()`. A capture that fails (an
operation that cannot be captured) leaves that signature eager, and `last` says why.

Memory: the graphs of one layer share one private pool, which stays reserved while the graphs live; `retained_bytes`
reports it (plus the static inputs and outputs), and the harness adds it to the layer's peak memory. At most `size`
signatures are kept (least recently used dropped). Replays run on the caller's current stream; calls of one layer
on two streams at once are not supported.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

# signatures kept per layer (least recently used dropped)
CACHE_SIZE = 4
# A replay's finite-input check copies q, k, v into the graph's inputs as it reads them (one pass; False: the check,
# then three copies, the A/B switch).
COPY_IN_CHECK = True
# signatures remembered as seen once (their second call captures); the set is cleared when it reaches this size
SEEN_LIMIT = 1024


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    inputs: tuple            # static q, k, v, mask (or None)
    out: torch.Tensor        # the graph's output (overwritten by each replay)

    def input_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.inputs if t is not None)


class GraphCache:
    """Per-layer cache of captured forwards. `max_len` 0: off. `last` names what the last call did: replay,
    capture, or eager (why)."""

    def __init__(self, max_len: int, size: int = CACHE_SIZE):
        if max_len < 0:
            raise ValueError(f"cuda_graph={max_len}: longest sequence to replay (>= 1), or 0 for off")
        if size < 1:
            raise ValueError(f"graph cache size {size}: must be >= 1")
        self.max_len, self.size = int(max_len), int(size)
        self.entries: OrderedDict[tuple, _Graph | str] = OrderedDict()   # str: why the capture failed
        self.seen: set[tuple] = set()
        self.pool = None
        self.pool_ids: set = set()        # the allocator's id(s) of that pool, as its snapshot names them
        self.last = "off" if self.max_len == 0 else "not-run"

    def reset(self) -> None:
        """Drop every captured graph (and its pool): the next calls run eagerly, then capture again."""
        self.entries.clear()
        self.seen.clear()
        self.pool, self.pool_ids = None, set()

    # --- which calls replay --------------------------------------------------------------------------------
    def refusal(self, layer, q, k, v, key_padding_mask) -> str | None:
        """Why this call runs eagerly (None: it may replay)."""
        if self.max_len == 0:
            return "off"
        if not q.is_cuda:
            return f"device {q.device.type}"
        if torch.cuda.is_current_stream_capturing():
            return "inside a capture"
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, *layer.parameters())):
            return "gradient needed"
        if q.shape[2] > self.max_len:
            return f"T={q.shape[2]} > cuda_graph={self.max_len}"
        return None

    @staticmethod
    def signature(layer, q, k, v, key_padding_mask, causal, scale) -> tuple:
        mask = None if key_padding_mask is None else (tuple(key_padding_mask.shape), key_padding_mask.dtype)
        autocast = (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))
        storage = tuple(t.data_ptr() for t in (*layer.parameters(), *layer.buffers()))
        return (tuple(q.shape), tuple(k.shape), tuple(v.shape), q.dtype, k.dtype, v.dtype, q.device, bool(causal),
                mask, scale, layer.training, autocast, storage)

    # --- the call --------------------------------------------------------------------------------------------
    def __call__(self, layer, eager, q, k, v, *, causal, key_padding_mask, scale):
        """The layer's forward: `eager(q, k, v, causal=, key_padding_mask=, scale=)` runs it without a graph."""
        why = self.refusal(layer, q, k, v, key_padding_mask)
        if why is not None:
            self.last = f"eager ({why})"
            return eager(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
        key = self.signature(layer, q, k, v, key_padding_mask, causal, scale)
        entry = self.entries.get(key)
        if isinstance(entry, str):
            self.entries.move_to_end(key)
            self.last = f"eager (capture failed: {entry})"
            return eager(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
        if entry is None and key not in self.seen:            # first call: compile, autotune, check the inputs
            out = eager(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
            if len(self.seen) >= SEEN_LIMIT:                      # calls of ever new shapes: forget the oldest ones
                self.seen.clear()
            self.seen.add(key)
            self.last = "eager (first call of this shape)"
            return out
        check, copied = None, False
        if layer.validate_inputs:
            from methods.sea.layer import PendingFiniteCheck

            copied = COPY_IN_CHECK and entry is not None                 # a replay: q, k, v into its inputs
            check = PendingFiniteCheck(q=q, k=k, v=v, copy_to=entry.inputs[:3] if copied else None)
        if entry is None:
            entry = self._capture(layer, eager, key, q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                                  scale=scale)
            if isinstance(entry, str):
                self.last = f"eager (capture failed: {entry})"
                out = eager(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
                if check is not None:
                    check.resolve()
                return out
            self.last = "capture"
        else:
            self.entries.move_to_end(key)
            self.last = "replay"
        first = 3 if copied else 0                                       # q, k, v copied by the check already
        for static, t in zip(entry.inputs[first:], (q, k, v, key_padding_mask)[first:]):
            if static is not None:
                static.copy_(t)
        entry.graph.replay()
        out = entry.out.clone()
        layer.last_aux = {}                  # nothing of the replay is kept for distillation (it needs gradients)
        if check is not None:
            check.resolve()
        return out

    def _capture(self, layer, eager, key, q, k, v, *, causal, key_padding_mask, scale) -> _Graph | str:
        # filled before each replay (the capture records kernels, it runs none)
        inputs = tuple(None if t is None else torch.empty(t.shape, dtype=t.dtype, device=t.device)
                       for t in (q, k, v, key_padding_mask))
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        before = _pool_ids(q.device)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                out = eager(inputs[0], inputs[1], inputs[2], causal=causal, key_padding_mask=inputs[3],
                            scale=scale)
        except Exception as e:                                   # an operation that cannot be captured
            torch.cuda.synchronize()
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            try:
                release_generator(q.device)
            except Exception as e2:                              # said in the reason; the call still runs eagerly
                why += f"; the CUDA generator was not given back ({type(e2).__name__})"
            self._store(key, why)
            return why
        finally:
            layer.last_aux = {}
        self.pool_ids |= _pool_ids(q.device) - before        # segments the capture added (none: nothing new)
        entry = _Graph(graph, inputs, out)
        self._store(key, entry)
        return entry

    def _store(self, key, value) -> None:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            old, _ = self.entries.popitem(last=False)
            self.seen.discard(old)

    def retained_bytes(self) -> int:
        """Device memory these graphs hold between calls: the segments of their private pool (read from the
        allocator's snapshot) plus the static inputs; 0 when nothing is captured."""
        graphs = [e for e in self.entries.values() if isinstance(e, _Graph)]
        if not graphs:
            return 0
        static = sum(e.input_bytes() for e in graphs)                     # the output lives in the pool
        pool = sum(s["total_size"] for s in torch.cuda.memory_snapshot() if _seg_pool(s) in self.pool_ids)
        return int(pool + static)


def release_generator(device) -> None:
    """Give the device's default CUDA generator back after a capture that failed. torch puts the generator in
    capture mode when a capture begins and takes it out only when the capture ends cleanly, so after a failed one
    every random draw outside a capture raises "Offset increment outside graph capture encountered unexpectedly"
    (measured on an H200 after a padded call's capture: results/nvidia-h200/sea-floor/call1/padded-capture.txt).
    A trivial capture that ends cleanly runs the missing epilogue (tests/test_sea_graphs.py: the padded calls' test
    draws on the device afterwards; it passed on an H200, results/nvidia-h200/sea-floor/call3/)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.device(device):
        x = torch.zeros(1, device=device)
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            x.add_(1)
    del graph


def _seg_pool(segment: dict):
    pid = segment.get("segment_pool_id")
    return None if pid is None else tuple(pid)


def _pool_ids(device) -> set:
    idx = torch.device(device).index
    idx = torch.cuda.current_device() if idx is None else idx
    return {_seg_pool(s) for s in torch.cuda.memory_snapshot() if s.get("device") == idx and _seg_pool(s) != (0, 0)}
