"""The node agent's spill to disk: each table's rows written as rolling Parquet files per time
window, under a size cap, readable by ``pxq run --from DIR`` and by DuckDB directly.

Layout (``DIR`` is the config's ``spill_dir``)::

    DIR/spill.json                                   what the directory is (host, window, processes)
    DIR/<table>/<yyyymmddThhmmss>Z-<seq>.parquet     rows of <table> whose time_ lies in the window
                                                     starting then (UTC), <seq> = 1, 2, ... per flush
    DIR/_scheduled/<name>/<output>/<stamp>Z-<seq>.parquet   a scheduled script's output table
                                                     (:mod:`pxq.agent.schedule`), by the run's time

Every file has the catalog's schema (as ``pxq capture`` writes it, page checksums included) and is
written to a hidden temporary name then renamed: a reader never sees half a file, and a glob such
as ``read_parquet('DIR/http_events/*.parquet')`` never matches one. A window's rows may be in
several files (one per flush that had rows for it); each row is in exactly one file.

The cap (``spill_max_bytes``) counts every file under DIR; when a write takes the total over it,
the oldest windows (all their files, every table) are deleted, never the newest, and counted. A
full disk (ENOSPC) or another write error is counted and logged: the rows of that flush stay in
the agent's memory (nothing stored there is touched) and are written at the next flush, all or
nothing per table (files written before the failure in the same flush are removed again).
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pxq.replay.reader import SPILL_META

SPILL_FORMAT = "pxq-spill"
SCHEDULED_DIR = "_scheduled"
DEFAULT_SPILL_WINDOW_S = 60.0
DEFAULT_FLUSH_S = 10.0
_FILE_NAME = re.compile(r"^(\d{8}T\d{6})Z-(\d+)\.parquet$")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def window_stamp(start_ns: int) -> str:
    """A window's start as a file name's stamp: ``yyyymmddThhmmss`` (UTC)."""
    return datetime.fromtimestamp(start_ns // 1_000_000_000, UTC).strftime("%Y%m%dT%H%M%S")


@dataclass
class SpillCounters:
    files_written: int = 0
    rows_written: int = 0
    bytes_written: int = 0
    windows_deleted: int = 0  # by the size cap (oldest first)
    files_deleted: int = 0
    bytes_deleted: int = 0
    disk_full: int = 0  # flushes (or scheduled outputs) that met ENOSPC/EDQUOT
    write_errors: int = 0  # other write failures
    last_error: str | None = None


@dataclass
class _File:
    path: Path
    size: int
    window: str  # its stamp: the cap deletes by it


@dataclass
class Spiller:
    """Writes windows of rows under ``directory`` within ``max_bytes``; see the module docstring.
    ``flush`` (the tables' new rows) and ``write`` (one table of rows, e.g. a scheduled script's
    output) may be called from different threads."""

    directory: Path
    max_bytes: int
    window_s: float = DEFAULT_SPILL_WINDOW_S
    host: str = ""
    log: Callable[[str], None] = field(default=lambda line: print(f"pxq: agent: {line}", file=sys.stderr, flush=True))
    counters: SpillCounters = field(default_factory=SpillCounters)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self._lock = threading.Lock()
        self._files: list[_File] = []
        self._next_seq: dict[tuple[str, str], int] = {}  # (subdir, stamp) -> next seq
        self._cursor: dict[str, int] = {}  # table -> the store seq spilled up to
        self._store_id: int | None = None
        self._processes: dict[str, dict[str, Any]] = {}
        self._disk_full_said = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._index_existing()

    # -- what is there already (an agent restarted on its spill directory goes on from it)

    def _index_existing(self) -> None:
        for path in self.directory.rglob("*"):
            if not path.is_file():
                continue
            if path.name.startswith(".") and ".tmp-" in path.name:
                path.unlink(missing_ok=True)  # a write cut short by a crash: never renamed into place
                continue
            match = _FILE_NAME.match(path.name)
            if match is None:
                continue
            subdir = str(path.parent.relative_to(self.directory))
            self._files.append(_File(path, path.stat().st_size, match.group(1)))
            key = (subdir, match.group(1))
            self._next_seq[key] = max(self._next_seq.get(key, 1), int(match.group(2)) + 1)
        meta = self.directory / SPILL_META
        try:
            self._processes = dict(json.loads(meta.read_text()).get("processes", {}))
        except (OSError, ValueError, AttributeError):
            self._processes = {}

    def total_bytes(self) -> int:
        with self._lock:
            return sum(f.size for f in self._files)

    def status(self) -> dict[str, Any]:
        with self._lock:
            files = len(self._files)
            size = sum(f.size for f in self._files)
            windows = sorted({f.window for f in self._files})
        return {
            "dir": str(self.directory),
            "max_bytes": self.max_bytes,
            "window_s": self.window_s,
            "files": files,
            "bytes": size,
            "oldest_window": windows[0] if windows else None,
            "newest_window": windows[-1] if windows else None,
            **vars(self.counters),
        }

    # -- writing

    def flush(self, store: Any, tables: list[str]) -> int:
        """Write the rows ``store`` got since the last flush, per table and window; the rows written."""
        if self._store_id != id(store):
            # A new store (the first, or one the collectors were re-planned into, holding copies of
            # what was collected before): go on from its newest batch, its copies are spilled already.
            first = self._store_id is None
            self._store_id = id(store)
            self._cursor = {t: (0 if first else store.appended) for t in tables}
        written = 0
        for table in tables:
            pending = store.batches_since(table, self._cursor.get(table, 0))
            if not pending:
                continue
            data = pa.concat_tables([batch for _seq, batch in pending])
            if self._write_windows(table, data):
                self._cursor[table] = pending[-1][0]
                written += data.num_rows
        self._processes.update(store.processes)
        self._write_meta()
        return written

    def _write_windows(self, table: str, data: pa.Table) -> bool:
        """``data`` split by window, one new file each; all or nothing (False: nothing stays written)."""
        window_ns = int(self.window_s * 1e9)
        times = data.column("time_").cast(pa.int64()).fill_null(time.time_ns())
        windows = pc.multiply(pc.divide(times, pa.scalar(window_ns, pa.int64())), pa.scalar(window_ns, pa.int64()))
        done: list[_File] = []
        for start in sorted(pc.unique(windows).to_pylist()):
            rows = data.filter(pc.equal(windows, start))
            entry = self._write_file(table, start, rows, catalog_table=table)
            if entry is None:
                for written in done:  # the next flush writes them again with the rest
                    self._forget(written)
                    written.path.unlink(missing_ok=True)
                return False
            done.append(entry)
        self._written(data.num_rows)
        return True

    def write(self, subdir: str, when_ns: int, data: pa.Table) -> Path | None:
        """One file of ``data`` under ``DIR/subdir`` stamped with ``when_ns``'s window (the path;
        None when it could not be written: counted and logged)."""
        window_ns = int(self.window_s * 1e9)
        entry = self._write_file(subdir, when_ns // window_ns * window_ns, data, catalog_table=None)
        if entry is None:
            return None
        self._written(data.num_rows)
        return entry.path

    def _write_file(self, subdir: str, start_ns: int, data: pa.Table, *, catalog_table: str | None) -> _File | None:
        """``data`` as a new file of window ``start_ns`` under ``DIR/subdir`` (with ``catalog_table``'s
        schema, as a capture writes it, when given); None when it could not be written."""
        from pxq.replay.writer import conform, write_table_file

        stamp = window_stamp(start_ns)
        with self._lock:
            key = (subdir, stamp)
            seq = self._next_seq.get(key, 1)
            self._next_seq[key] = seq + 1
        folder = self.directory / subdir
        path = folder / f"{stamp}Z-{seq:06d}.parquet"
        tmp = folder / f".{path.name}.tmp-{os.getpid()}"
        try:
            if catalog_table is not None:
                data = conform(catalog_table, data)
            folder.mkdir(parents=True, exist_ok=True)
            write_table_file(data, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._count_failure(path, exc)
            return None
        entry = _File(path, path.stat().st_size, stamp)
        with self._lock:
            self._files.append(entry)
        self.counters.files_written += 1
        self.counters.bytes_written += entry.size
        return entry

    def _written(self, rows: int) -> None:
        """A whole write succeeded (a table's flush, or one output)."""
        self.counters.rows_written += rows
        if self._disk_full_said:
            self._disk_full_said = False
            self.log(f"spill: writing to {self.directory} again")
        self._enforce_cap()

    def _count_failure(self, path: Path, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        if exc.errno in _DISK_FULL:
            self.counters.disk_full += 1
            self.counters.last_error = f"{path}: disk full ({reason})"
            if not self._disk_full_said:  # said once per episode, counted every time
                self._disk_full_said = True
                self.log(
                    f"spill: {path}: the disk is full ({reason}); the rows stay in memory and are written "
                    "when there is room (the oldest are evicted from memory by retention meanwhile)"
                )
        else:
            self.counters.write_errors += 1
            self.counters.last_error = f"{path}: {reason}"
            self.log(f"spill: cannot write {path}: {reason}")

    def _forget(self, entry: _File) -> None:
        with self._lock:
            if entry in self._files:
                self._files.remove(entry)
        self.counters.files_written -= 1
        self.counters.bytes_written -= entry.size

    def _enforce_cap(self) -> None:
        """Delete the oldest windows (every file stamped so) until the total is within the cap;
        never the newest window."""
        with self._lock:
            while sum(f.size for f in self._files) > self.max_bytes:
                windows = sorted({f.window for f in self._files})
                if len(windows) <= 1:
                    break
                oldest = [f for f in self._files if f.window == windows[0]]
                for entry in oldest:
                    try:
                        entry.path.unlink()
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        self.counters.write_errors += 1
                        self.counters.last_error = f"{entry.path}: cannot delete: {exc.strerror or exc}"
                    self._files.remove(entry)
                    self.counters.files_deleted += 1
                    self.counters.bytes_deleted += entry.size
                self.counters.windows_deleted += 1

    def _write_meta(self) -> None:
        text = json.dumps(
            {
                "format": SPILL_FORMAT,
                "version": 1,
                "host": self.host,
                "window_s": self.window_s,
                "processes": self._processes,
            },
            sort_keys=True,
        )
        path = self.directory / SPILL_META
        tmp = self.directory / f".{SPILL_META}.tmp-{os.getpid()}"
        try:
            tmp.write_text(text + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._count_failure(path, exc)


__all__ = ["SCHEDULED_DIR", "SPILL_META", "Spiller", "SpillCounters", "window_stamp"]
