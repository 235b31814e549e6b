"""A run directory: meta.json (provenance, the exact command, the grid) and rows.jsonl (one row per cell).

Rows are appended one whole line per write and flushed to disk, so a crash loses at most the cell in
flight; a torn last line is ignored on read. meta.json is replaced atomically (write, fsync, rename).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from harness.rows import Row

META = "meta.json"
ROWS = "rows.jsonl"
RANK_ROWS = "rows.rank*.jsonl"     # one per rank of a distributed sweep, merged into rows.jsonl at its end


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: str | Path, rank: int | None = None):
        self.path = Path(path)
        self.rank = rank              # appends go to rows.rank<R>.jsonl when set
        self._tail_checked = False

    @property
    def meta_path(self) -> Path:
        return self.path / META

    @property
    def rows_path(self) -> Path:
        return self.path / (ROWS if self.rank is None else f"rows.rank{self.rank}.jsonl")

    def rank_files(self) -> list[Path]:
        return sorted(self.path.glob(RANK_ROWS))

    def exists(self) -> bool:
        return self.meta_path.exists()

    def create(self, meta: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.meta_path, json.dumps(meta, indent=1, sort_keys=True, default=str))

    def meta(self) -> dict[str, Any]:
        if not self.meta_path.exists():
            raise FileNotFoundError(f"{self.path} is not a run directory (no {META})")
        return json.loads(self.meta_path.read_text())

    def update_meta(self, **fields: Any) -> None:
        meta = self.meta()
        meta.update(fields)
        atomic_write(self.meta_path, json.dumps(meta, indent=1, sort_keys=True, default=str))

    def _torn_tail(self) -> bool:
        """True if rows.jsonl ends inside a line (a writer was killed mid-write)."""
        try:
            with open(self.rows_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    return False
                f.seek(-1, os.SEEK_END)
                return f.read(1) != b"\n"
        except FileNotFoundError:
            return False

    def append(self, row: Row) -> None:
        line = row.to_json() + "\n"
        if not self._tail_checked:
            if self._torn_tail():
                line = "\n" + line         # end the torn line so this row stands on its own
            self._tail_checked = True
        # One write of a whole line in append mode: concurrent appenders never interleave within a row.
        fd = os.open(self.rows_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def iter_rows(self) -> Iterator[Row]:
        """rows.jsonl, then any per-rank files (newer: a resume only re-runs cells missing from both)."""
        for path in [self.path / ROWS, *self.rank_files()]:
            if not path.exists():
                continue
            with open(path) as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        yield Row.from_dict(json.loads(line))
                    except json.JSONDecodeError:
                        continue        # a torn last line from a killed writer

    def rows(self) -> list[Row]:
        """Rows, the last one per cell winning (a resumed cell replaces its earlier attempt)."""
        latest: dict[str, Row] = {}
        for row in self.iter_rows():
            latest[row.cell_id] = row
        return list(latest.values())

    def finished_cells(self) -> set[str]:
        return {r.cell_id for r in self.rows()}

    def merge_rank_files(self) -> int:
        """Fold per-rank row files into rows.jsonl (atomically), one row per cell; returns rows merged."""
        files = self.rank_files()
        if not files:
            return 0
        rows = self.rows()
        atomic_write(self.path / ROWS, "".join(r.to_json() + "\n" for r in rows))
        for f in files:
            f.unlink()
        return len(rows)
