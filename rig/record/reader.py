"""Reading a run store: manifest, points, samples, series, events, verdicts, hashes."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rig.record.schema import (
    POINT_COLUMNS,
    STORE_FILE,
    CommandRow,
    EventRow,
    SampleRow,
    VerdictRow,
    connect_existing,
    decode_sample,
    dump_json,
)
from twin.errors import RunStoreError

READ_CHUNK = 256


class StoreReader:
    """Queries of one open store; sees committed rows only.

    ``before_read`` runs before every query (a writable store commits its buffer there).
    `open` gives a read-only reader of its own connection.
    """

    def __init__(self, run_dir: Path, conn: sqlite3.Connection, db_lock: threading.RLock,
                 before_read: Callable[[], None] | None = None) -> None:
        self.run_dir = run_dir
        self.path = run_dir / STORE_FILE
        self.before_read = before_read
        self.closed = False
        self._conn = conn
        self._db_lock = db_lock
        self.manifest: dict[str, Any] = {
            k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM manifest")}
        self.points: list[dict[str, Any]] = [
            dict(zip(POINT_COLUMNS, row, strict=True)) for row in conn.execute(
                f"SELECT {', '.join(POINT_COLUMNS)} FROM points ORDER BY idx")]
        for p in self.points:
            p["min"] = -math.inf if p["min"] is None else p["min"]
            p["max"] = math.inf if p["max"] is None else p["max"]
        self.point_index = {p["id"]: i for i, p in enumerate(self.points)}

    @classmethod
    def open(cls, run_dir: str | Path) -> StoreReader:
        """A read-only reader of an existing run's store (close it, or use ``with``)."""
        run_dir = Path(run_dir)
        return cls(run_dir, connect_existing(run_dir, writable=False), threading.RLock())

    def close(self) -> None:
        """Close the connection."""
        self.closed = True
        with self._db_lock:
            self._conn.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- identity ----------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        """The run's id (the ``run`` tag in InfluxDB)."""
        return str(self.manifest["run_id"])

    @property
    def site(self) -> str:
        """The site's name, or ``""``."""
        return str(self.manifest.get("site") or "")

    @property
    def time_origin_ns(self) -> int:
        """Epoch ns of simulated t = 0 in exports."""
        return int(self.manifest["time_origin_ns"])

    @property
    def point_ids(self) -> list[str]:
        """Point ids in table order (the order of every sample array)."""
        return [p["id"] for p in self.points]

    # -- queries -----------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one SQL query (after ``before_read``)."""
        if self.closed:
            raise RunStoreError(f"{self.path}: store is closed")
        if self.before_read is not None:
            self.before_read()
        with self._db_lock:
            return self._conn.execute(sql, params).fetchall()

    def last_ties(self) -> tuple[float | None, dict[tuple[str, str], int]]:
        """The last event time (s) and the highest ``tie`` of each (source, kind) there."""
        rows = self.query("SELECT t, source, kind, MAX(tie) FROM events "
                          "WHERE t = (SELECT MAX(t) FROM events) GROUP BY source, kind")
        if not rows:
            return None, {}
        return rows[0][0], {(s, k): tie for _, s, k, tie in rows}

    def count_samples(self) -> int:
        """Number of committed samples (instants)."""
        return int(self.query("SELECT COUNT(*) FROM samples")[0][0])

    def last_sample_time(self) -> float | None:
        """Simulated time (s) of the last committed sample, or None."""
        row = self.query("SELECT t FROM samples ORDER BY id DESC LIMIT 1")
        return float(row[0][0]) if row else None

    def max_ids(self) -> dict[str, int]:
        """The largest row id of each append-only table (0 when empty)."""
        tables = ("samples", "events", "commands", "verdicts", "kpis")
        sql = " UNION ALL ".join(f"SELECT COALESCE(MAX(id), 0) FROM {t}" for t in tables)
        return dict(zip(tables, (int(r[0]) for r in self.query(sql)), strict=True))

    def sample_rows(self, after_id: int = 0, limit: int = READ_CHUNK, *,
                    t0: float | None = None, t1: float | None = None) -> list[SampleRow]:
        """Up to ``limit`` samples with id > ``after_id`` (and t0 <= t <= t1), by id."""
        rows = self.query(
            "SELECT id, t, measured, truth FROM samples WHERE id > ? AND t >= ? AND t <= ? "
            "ORDER BY id LIMIT ?",
            (after_id, -math.inf if t0 is None else t0, math.inf if t1 is None else t1, limit))
        return [SampleRow(i, t, *decode_sample(m, r)) for i, t, m, r in rows]

    def samples(self, t0: float | None = None,
                t1: float | None = None) -> Iterator[tuple[float, np.ndarray, np.ndarray]]:
        """(t, measured, truth) of every sample with t0 <= t <= t1 (s), in time order."""
        after = 0
        while True:
            rows = self.sample_rows(after, READ_CHUNK, t0=t0, t1=t1)
            for row in rows:
                yield row.t, row.measured, row.truth
            if len(rows) < READ_CHUNK:
                return
            after = rows[-1].id

    def series(self, point_id: str, t0: float | None = None,
               t1: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t, measured, truth) arrays of one point over [t0, t1] (s)."""
        try:
            i = self.point_index[point_id]
        except KeyError:
            raise RunStoreError(f"{self.path}: no point {point_id!r} in this run") from None
        ts, ms, rs = [], [], []
        for t, m, r in self.samples(t0, t1):
            ts.append(t)
            ms.append(m[i])
            rs.append(r[i])
        return np.array(ts), np.array(ms), np.array(rs)

    def events(self, after_id: int = 0, limit: int = -1) -> list[EventRow]:
        """Stored events with id > ``after_id`` (all by default), in order."""
        return [EventRow(*row) for row in self.query(
            "SELECT id, t, tie, source, kind, message FROM events WHERE id > ? "
            "ORDER BY id LIMIT ?", (after_id, limit))]

    def commands(self) -> list[CommandRow]:
        """The replay log: every recorded external write, in order."""
        return [CommandRow(i, t, p, math.nan if v is None else v, s) for i, t, p, v, s in
                self.query("SELECT id, t, point, value, source FROM commands ORDER BY id")]

    def verdict_rows(self, after_id: int = 0) -> list[VerdictRow]:
        """Every stored verdict row with id > ``after_id`` (a rewritten name appears twice)."""
        return [VerdictRow(i, t, n, v, json.loads(e)) for i, t, n, v, e in self.query(
            "SELECT id, t, name, verdict, evidence FROM verdicts WHERE id > ? ORDER BY id",
            (after_id,))]

    def verdicts(self) -> list[VerdictRow]:
        """The latest verdict of each name, in order of first appearance."""
        latest: dict[str, VerdictRow] = {}
        for row in self.verdict_rows():
            latest[row.name] = row
        return list(latest.values())

    def kpi_rows(self, after_id: int = 0) -> list[tuple[int, float, dict[str, float]]]:
        """(id, t, KPIs name -> value) rows with id > ``after_id``."""
        return [(i, t, _kpi_record(j)) for i, t, j in self.query(
            "SELECT id, t, json FROM kpis WHERE id > ? ORDER BY id", (after_id,))]

    def kpis(self) -> dict[str, float] | None:
        """The final KPIs (the latest written), name -> value, or None."""
        rows = self.query("SELECT json FROM kpis ORDER BY id DESC LIMIT 1")
        return _kpi_record(rows[0][0]) if rows else None

    def content_hash(self) -> str:
        """SHA-256 of what was recorded (points, samples, events, commands), not wall times.

        Same site, scenario, seed and commands => same hash.
        """
        h = hashlib.sha256()
        h.update("\n".join(self.point_ids).encode())
        for t, m, r in self.samples():
            h.update(struct.pack("<d", t) + m.tobytes() + r.tobytes())
        for e in self.events():
            h.update(dump_json([e.t, e.source, e.kind, e.message]).encode())
        for c in self.commands():
            h.update(dump_json([c.t, c.point, c.value, c.source]).encode())
        return h.hexdigest()

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result (``"ok"`` when sound)."""
        return str(self.query("PRAGMA integrity_check")[0][0])

    def summary(self) -> dict[str, Any]:
        """Manifest highlights and counts of a run (what `list_runs` shows)."""
        m = self.manifest
        ids = self.max_ids()
        counts = dict(zip(("samples", "events", "commands"), self.query(
            "SELECT (SELECT COUNT(*) FROM samples), (SELECT COUNT(*) FROM events), "
            "(SELECT COUNT(*) FROM commands)")[0], strict=True))
        verdicts = self.verdicts()
        return {
            "run_dir": str(self.run_dir), "run_id": self.run_id, "site": m.get("site"),
            "scenario": m.get("scenario"), "seed": m.get("seed"), "mode": m.get("mode"),
            "wall_start": m.get("wall_start"), "wall_end": m.get("wall_end"),
            "complete": m.get("wall_end") is not None,
            "sim_end_s": self.last_sample_time(), **counts,
            "verdicts": len(verdicts),
            "failed": sum(1 for v in verdicts if str(v.verdict).lower() not in
                          ("pass", "passed", "ok")),
            "has_kpis": ids["kpis"] > 0,
        }


def _kpi_record(text: str) -> dict[str, float]:
    """A stored KPI row: name -> value. Offline runs of format 1 written before the KPI row
    had one shape stored the whole run summary; its ``kpis`` is their record."""
    data = json.loads(text)
    if isinstance(data.get("kpis"), dict):  # the one legacy shape
        data = data["kpis"]
    return {k: float(v) for k, v in data.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}
