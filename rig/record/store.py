"""The run store: one SQLite file (``run.sqlite``) per run directory.

`RunStore` is the one object callers use; it composes the parts of the store, one job
each: `rig.record.schema` (tables, format version, row types, sample blobs),
`rig.record.writer` (creating the file, buffered appends, the commit thread: WAL,
committed every ``commit_interval_s``, so a SIGKILL loses at most about the last half
second), `rig.record.reader` (queries, samples, series, hashes, summary) and
`rig.record.listing` (the ``runs`` and ``show`` commands).
"""

from __future__ import annotations

import atexit
import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rig.record.listing import describe_size, list_runs, show
from rig.record.reader import READ_CHUNK, StoreReader
from rig.record.schema import (
    CODEC,
    FORMAT,
    SCHEMA,
    STORE_FILE,
    CommandRow,
    EventRow,
    SampleRow,
    VerdictRow,
    connect,
    connect_existing,
    decode_sample,
    encode_sample,
)
from rig.record.writer import (
    COMMIT_INTERVAL_S,
    FLUSH_ROWS,
    MAX_BUFFERED_ROWS,
    PACKAGES,
    StoreWriter,
    create_file,
    package_versions,
)
from twin.errors import RunStoreError

# Writable stores not yet closed; closed at interpreter exit. (Their commit threads keep
# them alive until then anyway.)
_open_stores: set[RunStore] = set()


@atexit.register
def _close_open_stores() -> None:
    """Commit whatever is buffered when the interpreter exits without `close()`."""
    for store in list(_open_stores):
        with contextlib.suppress(Exception):
            store.close()


class RunStore:
    """A run directory's store; create with `create`, read with `open`.

    All methods are thread-safe. Writers append to an in-memory buffer; a daemon thread
    commits it every ``commit_interval_s`` (wall). Readers see committed rows only, and
    a writable store commits its buffer before it reads.
    """

    def __init__(self, run_dir: Path, conn: sqlite3.Connection, *, writable: bool,
                 commit_interval_s: float = COMMIT_INTERVAL_S) -> None:
        """Use `create` or `open`."""
        self.run_dir = run_dir
        self.path = run_dir / STORE_FILE
        self.writable = writable
        self.commit_interval_s = commit_interval_s
        self._closed = False
        db_lock = threading.RLock()
        self._reader = StoreReader(run_dir, conn, db_lock)
        self.manifest: dict[str, Any] = self._reader.manifest
        self.points: list[dict[str, Any]] = self._reader.points
        self.point_index: dict[str, int] = self._reader.point_index
        last_t = self._reader.last_sample_time()
        self._writer: StoreWriter | None = None
        if writable:
            self._writer = StoreWriter(
                self.path, conn, db_lock, self.manifest, len(self.points),
                commit_interval_s=commit_interval_s, last_t=last_t,
                ties=self._reader.last_ties(), thread_name=f"heatrig-store-{run_dir.name}")
            self._reader.before_read = self._writer.flush
            _open_stores.add(self)

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: str | Path, manifest: Mapping[str, Any],
               points: Sequence[Mapping[str, Any]], *,
               commit_interval_s: float = COMMIT_INTERVAL_S,
               time_origin_ns: int | None = None) -> RunStore:
        """Create the store of a new run in ``run_dir`` (replacing an earlier one there).

        ``manifest``: site, scenario, seed, config hash, ... as the caller knows them;
        the store adds ``run_id`` (unless given), ``wall_start``, ``time_origin_ns``
        (epoch ns of simulated t = 0 in exports; default: the wall-clock start),
        ``packages`` and its format. ``points``: `twin.points.Point.describe()` dicts.
        """
        run_dir = Path(run_dir)
        create_file(run_dir, manifest, points, commit_interval_s=commit_interval_s,
                    time_origin_ns=time_origin_ns)
        return cls(run_dir, connect(run_dir, writable=True), writable=True,
                   commit_interval_s=commit_interval_s)

    @classmethod
    def open(cls, run_dir: str | Path, readonly: bool = True) -> RunStore:
        """Open an existing run's store; ``readonly=False`` to append (verdicts, KPIs)."""
        run_dir = Path(run_dir)
        return cls(run_dir, connect_existing(run_dir, writable=not readonly),
                   writable=not readonly)

    # -- identity ----------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        """The run's id (the ``run`` tag in InfluxDB)."""
        return self._reader.run_id

    @property
    def site(self) -> str:
        """The site's name, or ``""``."""
        return self._reader.site

    @property
    def time_origin_ns(self) -> int:
        """Epoch ns of simulated t = 0 in exports."""
        return self._reader.time_origin_ns

    @property
    def point_ids(self) -> list[str]:
        """Point ids in table order (the order of every sample array)."""
        return self._reader.point_ids

    # -- writing (see `StoreWriter`) ---------------------------------------------------

    def _writable(self) -> StoreWriter:
        if self._writer is None or self._closed:
            state = "closed" if self._closed else "read-only"
            raise RunStoreError(f"{self.path}: store is {state}")
        return self._writer

    def write_sample(self, t: float, measured: np.ndarray, truth: np.ndarray) -> None:
        """Buffer the values of every point at simulated time ``t`` (s, strictly increasing)."""
        self._writable().write_sample(t, measured, truth)

    def write_event(self, t: float, source: str, kind: str, message: str) -> None:
        """Buffer a plant event at simulated time ``t`` (s)."""
        self._writable().write_event(t, source, kind, message)

    def write_command(self, t: float, point: str, value: float, source: str) -> None:
        """Buffer an accepted external write (the replay log) at simulated time ``t`` (s)."""
        self._writable().write_command(t, point, value, source)

    def write_verdict(self, name: str, verdict: str, evidence: Any = None,
                      t: float | None = None) -> None:
        """Store a verdict now; ``t`` (s) defaults to the last sample's time."""
        self._writable().write_verdict(name, verdict, evidence, t)

    def write_kpis(self, kpis: Mapping[str, float], t: float | None = None) -> None:
        """Store the final KPIs, name -> value in the unit of `twin.kpis.REGISTRY` (the
        latest write wins); ``t`` as for verdicts."""
        self._writable().write_kpis(kpis, t)

    def update_manifest(self, **items: Any) -> None:
        """Set manifest entries now (values are JSON; secrets are scrubbed)."""
        self._writable().update_manifest(**items)

    def flush(self) -> None:
        """Commit everything buffered, now (one transaction)."""
        if self._writer is not None and not self._closed:
            self._writer.flush()

    def close(self) -> None:
        """Commit, record the end time, checkpoint the WAL into the file and close."""
        if self._closed:
            return
        writer = self._writer
        try:
            if writer is not None:
                writer.finish()
        finally:
            self._closed = True
            self._reader.closed = True
            if writer is not None:
                writer.stop()
                _open_stores.discard(self)
            self._reader.close()
        if writer is not None and writer.failure is not None:
            raise RunStoreError(f"{self.path}: writing failed: {writer.failure}")

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading (see `StoreReader`) ---------------------------------------------------

    def count_samples(self) -> int:
        """Number of committed samples (instants)."""
        return self._reader.count_samples()

    def last_sample_time(self) -> float | None:
        """Simulated time (s) of the last committed sample, or None."""
        return self._reader.last_sample_time()

    def max_ids(self) -> dict[str, int]:
        """The largest row id of each append-only table (0 when empty)."""
        return self._reader.max_ids()

    def sample_rows(self, after_id: int = 0, limit: int = READ_CHUNK, *,
                    t0: float | None = None, t1: float | None = None) -> list[SampleRow]:
        """Up to ``limit`` samples with id > ``after_id`` (and t0 <= t <= t1), by id."""
        return self._reader.sample_rows(after_id, limit, t0=t0, t1=t1)

    def samples(self, t0: float | None = None,
                t1: float | None = None) -> Iterator[tuple[float, np.ndarray, np.ndarray]]:
        """(t, measured, truth) of every sample with t0 <= t <= t1 (s), in time order."""
        return self._reader.samples(t0, t1)

    def series(self, point_id: str, t0: float | None = None,
               t1: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t, measured, truth) arrays of one point over [t0, t1] (s)."""
        return self._reader.series(point_id, t0, t1)

    def events(self, after_id: int = 0, limit: int = -1) -> list[EventRow]:
        """Stored events with id > ``after_id`` (all by default), in order."""
        return self._reader.events(after_id, limit)

    def commands(self) -> list[CommandRow]:
        """The replay log: every recorded external write, in order."""
        return self._reader.commands()

    def verdict_rows(self, after_id: int = 0) -> list[VerdictRow]:
        """Every stored verdict row with id > ``after_id`` (a rewritten name appears twice)."""
        return self._reader.verdict_rows(after_id)

    def verdicts(self) -> list[VerdictRow]:
        """The latest verdict of each name, in order of first appearance."""
        return self._reader.verdicts()

    def kpi_rows(self, after_id: int = 0) -> list[tuple[int, float, dict[str, float]]]:
        """(id, t, KPIs name -> value) rows with id > ``after_id``."""
        return self._reader.kpi_rows(after_id)

    def kpis(self) -> dict[str, float] | None:
        """The final KPIs (the latest written), name -> value, or None."""
        return self._reader.kpis()

    def content_hash(self) -> str:
        """SHA-256 of what was recorded (points, samples, events, commands), not wall times.

        Same site, scenario, seed and commands => same hash.
        """
        return self._reader.content_hash()

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result (``"ok"`` when sound)."""
        return self._reader.integrity_check()

    def summary(self) -> dict[str, Any]:
        """Manifest highlights and counts of a run (what `list_runs` shows)."""
        return self._reader.summary()


__all__ = [
    "CODEC", "COMMIT_INTERVAL_S", "FLUSH_ROWS", "FORMAT", "MAX_BUFFERED_ROWS", "PACKAGES",
    "READ_CHUNK", "SCHEMA", "STORE_FILE", "CommandRow", "EventRow", "RunStore", "SampleRow",
    "VerdictRow", "decode_sample", "describe_size", "encode_sample", "list_runs",
    "package_versions", "show",
]
