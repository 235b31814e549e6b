"""Isolation: cells run in a worker process; a hang, crash or OOM there costs one row, never the sweep.

The parent sends one cell at a time over a pipe and waits at most `timeout_s` for its row. On a
timeout the worker is killed and the cell recorded `timeout`; if the worker dies (segfault, abort,
os._exit, the OOM killer) the cell is recorded `error` with the exit code or signal. A fresh worker is
started for the next cell. After an `oom` the worker is replaced too, so allocator state cannot leak
into the next cell.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import signal
import time
import traceback

from harness.grid import Cell
from harness.rows import Row, row_for

def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the sweep process dies, so an orphan never lingers
    holding a GPU (e.g. after a rank of a distributed sweep is killed)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn, settings: dict) -> None:
    """Worker loop: receive cell dicts, reply with row dicts, until None arrives."""
    _die_with_parent()
    import torch

    from harness.cell import run_cell
    from harness.measure import MMAP_THRESHOLD_TIMING, exact_fp32, set_mmap_threshold

    set_mmap_threshold(MMAP_THRESHOLD_TIMING)     # fixed, so one cell's frees don't change the next's timing

    threads = settings.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    if settings.get("cuda_device") is not None:
        torch.cuda.set_device(int(settings["cuda_device"]))     # this rank's GPU in a distributed sweep
    exact_fp32()
    device_name = settings.get("device_name", "")
    while True:
        msg = conn.recv()
        if msg is None:
            return
        cell = Cell(**msg["cell"])
        try:
            row = run_cell(cell, msg["run_id"], device_name=device_name, **settings.get("measure", {}))
            if settings.get("rank") is not None:
                row = dataclasses.replace(row, extra={**row.extra, "rank": settings["rank"]})
        except Exception as exc:  # noqa: BLE001 - e.g. a method whose supports() itself raises
            row = row_for(cell, msg["run_id"], "error", device_name=device_name,
                          reason=f"harness: {type(exc).__name__}: {exc}; {traceback.format_exc(limit=3)[-400:]}")
        conn.send(dataclasses.asdict(row))


def _cell_to_msg(cell: Cell) -> dict:
    d = dataclasses.asdict(cell)
    d["config"] = tuple(tuple(p) for p in cell.config)
    return d


class WorkerPool:
    """One worker process at a time, restarted after any failure that may have poisoned it."""

    def __init__(self, settings: dict, timeout_s: float):
        self.settings = settings
        self.timeout_s = timeout_s
        self.ctx = mp.get_context("spawn")
        self.proc = None
        self.conn = None

    def _start(self) -> None:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker_main, args=(child, self.settings), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def _kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.join(timeout=10)
        if self.conn is not None:
            self.conn.close()
        self.proc = None
        self.conn = None

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(timeout=10)
            except (OSError, BrokenPipeError):
                pass
        self._kill()

    def run(self, cell: Cell, run_id: str) -> Row:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        t0 = time.perf_counter()
        try:
            self.conn.send({"cell": _cell_to_msg(cell), "run_id": run_id})
            ready = self.conn.poll(self.timeout_s)
        except (OSError, BrokenPipeError):
            ready = False
        if not ready:
            alive = self.proc.is_alive()
            self._kill()
            if alive:
                return row_for(cell, run_id, "timeout", reason=f"no result within {self.timeout_s:g} s; worker killed",
                               wall_s=round(time.perf_counter() - t0, 3))
            return self._died(cell, run_id, t0)
        try:
            reply = self.conn.recv()
        except (EOFError, OSError):
            return self._died(cell, run_id, t0)
        row = Row.from_dict(reply)
        if row.status == "error" or (row.status == "oom" and cell.device == "cpu"):
            self._kill()              # a fresh process for the next cell (CUDA OOMs leave torch usable)
        return row

    def _died(self, cell: Cell, run_id: str, t0: float) -> Row:
        code = None
        if self.proc is not None:
            self.proc.join(timeout=10)          # reap it, so the exit code is known
            code = self.proc.exitcode
        self._kill()
        if code is not None and code < 0:
            try:
                how = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        status = "oom" if code == -signal.SIGKILL else "error"
        reason = f"worker process died ({how})" + (" - likely the kernel OOM killer" if status == "oom" else "")
        return row_for(cell, run_id, status, reason=reason, wall_s=round(time.perf_counter() - t0, 3))
