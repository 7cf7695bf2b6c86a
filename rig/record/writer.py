"""Writing a run store: creating the file, buffered appends and the commit thread.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed transaction survives a crash of
the process (SIGKILL) at once, and the file is never left inconsistent; a power cut may
lose the last commits, never the file. Writes are buffered in memory and committed by a
background thread every ``commit_interval_s`` (0.5 s by default, and sooner when the
buffer fills), so a SIGKILL loses at most about the last half second.
"""

from __future__ import annotations

import logging
import platform
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from rig.record.credentials import redact_url
from rig.record.schema import (
    CODEC,
    FORMAT,
    SCHEMA,
    STORE_FILE,
    dump_json,
    encode_sample,
    float_or_none,
)
from twin.errors import RunStoreError

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.5
FLUSH_ROWS = 256  # wake the committer when this many samples are buffered
MAX_BUFFERED_ROWS = 2048  # beyond this the writer commits itself (memory bound)
PACKAGES = ("heatrig", "numpy", "simpy", "CoolProp", "pydantic", "PyYAML", "pymodbus",
            "paho-mqtt", "amqtt", "influxdb-client")
_SECRET_WORDS = ("password", "passwd", "token", "secret", "apikey", "api_key")


def utc_iso(ns: int) -> str:
    """Epoch ns as an ISO UTC time with milliseconds."""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def package_versions() -> dict[str, str | None]:
    """Versions of the packages a record depends on (None when not installed)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    out["sqlite"] = sqlite3.sqlite_version
    return out


def scrub(value: Any, path: str = "") -> Any:
    """A copy of a manifest value with anything named like a secret replaced by ``***``,
    and every URL in a string shown by `redact_url` (no userinfo, no secret parameters)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            key = str(k)
            if v and any(w in key.lower() for w in _SECRET_WORDS) and isinstance(v, str):
                log.warning("manifest field %s%s looks like a secret; not recorded", path, key)
                out[key] = "***"
            else:
                out[key] = scrub(v, f"{path}{key}.")
        return out
    if isinstance(value, list | tuple):
        return [scrub(v, path) for v in value]
    if isinstance(value, str) and "://" in value:
        return " ".join(redact_url(word) if "://" in word else word
                        for word in value.split(" "))
    return value


def create_file(run_dir: Path, manifest: Mapping[str, Any],
                points: Sequence[Mapping[str, Any]], *, commit_interval_s: float,
                time_origin_ns: int | None) -> None:
    """Write a new, empty store into ``run_dir`` (see `RunStore.create`), atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / STORE_FILE
    if path.exists():
        log.warning("replacing the run store in %s", run_dir)
        for old in [path, *run_dir.glob(STORE_FILE + "-*"),
                    *run_dir.glob("influx-export-*.json")]:
            old.unlink(missing_ok=True)
    wall_ns = time.time_ns()
    full = scrub(dict(manifest))
    full.setdefault("run_id", f"{run_dir.resolve().name}-"
                    f"{datetime.fromtimestamp(wall_ns / 1e9, UTC):%Y%m%dT%H%M%SZ}")
    full.update({
        "format": FORMAT, "codec": CODEC, "wall_start": utc_iso(wall_ns),
        "wall_end": None,
        "time_origin_ns": int(wall_ns if time_origin_ns is None else time_origin_ns),
        "packages": package_versions(), "point_count": len(points),
        "commit_interval_s": commit_interval_s,
    })
    tmp = run_dir / (STORE_FILE + ".creating")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA page_size = 8192")
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO manifest VALUES (?, ?)",
                         [(k, dump_json(v)) for k, v in full.items()])
        conn.executemany(
            "INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(i, p["id"], p.get("device") or str(p["id"]).split(".", 1)[0],
              p.get("kind") or "", p.get("type") or "float", p.get("unit") or "",
              float_or_none(p.get("min")), float_or_none(p.get("max")),
              p.get("description") or "", p.get("brick")) for i, p in enumerate(points)])
        conn.execute("COMMIT")
    finally:
        conn.close()
    tmp.replace(path)  # a run directory never holds a half-created store


class StoreWriter:
    """Buffered appends to one open store and the daemon thread that commits them.

    ``conn`` and ``db_lock`` are shared with the store's reader; ``manifest`` is the
    store's in-memory manifest, kept up to date by `update_manifest`. ``last_t`` (s) and
    ``ties`` continue what the file already holds.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, db_lock: threading.RLock,
                 manifest: dict[str, Any], point_count: int, *, commit_interval_s: float,
                 last_t: float | None, ties: tuple[float | None, dict[tuple[str, str], int]],
                 thread_name: str) -> None:
        self.path = path
        self.commit_interval_s = commit_interval_s
        self._conn = conn
        self._db_lock = db_lock
        self._manifest = manifest
        self._point_count = point_count
        self._buf_lock = threading.Lock()
        self._samples: list[tuple[float, np.ndarray, np.ndarray]] = []
        self._events: list[tuple[float, int, str, str, str]] = []
        self._commands: list[tuple[float, str, float | None, str]] = []
        self.closed = False
        self.failure: BaseException | None = None
        self.last_t = last_t
        self._tie_t, self._ties = ties
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._commit_loop, daemon=True,
                                        name=thread_name)
        self._thread.start()

    def _check(self) -> None:
        if self.closed:
            raise RunStoreError(f"{self.path}: store is closed")
        if self.failure is not None:
            raise RunStoreError(f"{self.path}: writing failed: {self.failure}")

    def write_sample(self, t: float, measured: np.ndarray, truth: np.ndarray) -> None:
        """Buffer the values of every point at simulated time ``t`` (s, strictly increasing)."""
        self._check()
        m = np.array(measured, dtype=np.float64)
        r = np.array(truth, dtype=np.float64)
        if m.shape != (self._point_count,) or r.shape != m.shape:
            raise ValueError(f"expected {self._point_count} values, got {m.shape}/{r.shape}")
        t = float(t)
        with self._buf_lock:
            if self.last_t is not None and not t > self.last_t:
                raise ValueError(f"sample time {t} s not after the last one ({self.last_t} s)")
            self.last_t = t
            self._samples.append((t, m, r))
            pending = len(self._samples)
        if pending >= MAX_BUFFERED_ROWS:
            self.flush()
        elif pending >= FLUSH_ROWS:
            self._wake.set()

    def write_event(self, t: float, source: str, kind: str, message: str) -> None:
        """Buffer a plant event at simulated time ``t`` (s)."""
        self._check()
        t = float(t)
        with self._buf_lock:
            if t != self._tie_t:
                self._tie_t, self._ties = t, {}
            tie = self._ties.get((source, kind), -1) + 1
            self._ties[(source, kind)] = tie
            self._events.append((t, tie, str(source), str(kind), str(message)))

    def write_command(self, t: float, point: str, value: float, source: str) -> None:
        """Buffer an accepted external write (the replay log) at simulated time ``t`` (s)."""
        self._check()
        with self._buf_lock:
            self._commands.append((float(t), str(point), float_or_none(value), str(source)))

    def write_verdict(self, name: str, verdict: str, evidence: Any = None,
                      t: float | None = None) -> None:
        """Store a verdict now; ``t`` (s) defaults to the last sample's time."""
        self._check()
        when = t if t is not None else (self.last_t or 0.0)
        with self._db_lock:
            self._conn.execute("INSERT INTO verdicts (t, name, verdict, evidence) "
                               "VALUES (?, ?, ?, ?)", (float(when), name, verdict,
                                                       dump_json(evidence)))

    def write_kpis(self, kpis: Mapping[str, float], t: float | None = None) -> None:
        """Store the final KPIs, name -> value in the unit of `twin.kpis.REGISTRY` (the
        latest write wins); ``t`` as for verdicts."""
        self._check()
        bad = [k for k, v in kpis.items() if not isinstance(v, int | float) or
               isinstance(v, bool)]
        if bad:
            raise RunStoreError(f"KPIs must be numbers; not: {', '.join(bad)}")
        when = t if t is not None else (self.last_t or 0.0)
        with self._db_lock:
            self._conn.execute("INSERT INTO kpis (t, json) VALUES (?, ?)",
                               (float(when), dump_json({k: float(v) for k, v in kpis.items()})))

    def update_manifest(self, **items: Any) -> None:
        """Set manifest entries now (values are JSON; secrets are scrubbed)."""
        self._check()
        items = scrub(items)
        with self._db_lock:
            self._conn.executemany("INSERT OR REPLACE INTO manifest VALUES (?, ?)",
                                   [(k, dump_json(v)) for k, v in items.items()])
        self._manifest.update(items)

    def flush(self) -> None:
        """Commit everything buffered, now (one transaction)."""
        if self.closed:
            return
        with self._db_lock:
            with self._buf_lock:
                samples, self._samples = self._samples, []
                events, self._events = self._events, []
                commands, self._commands = self._commands, []
            if not (samples or events or commands):
                return
            rows = [(t, *encode_sample(m, r)) for t, m, r in samples]
            conn = self._conn
            conn.execute("BEGIN")
            try:
                conn.executemany("INSERT INTO samples (t, measured, truth) VALUES (?, ?, ?)",
                                 rows)
                conn.executemany("INSERT INTO events (t, tie, source, kind, message) "
                                 "VALUES (?, ?, ?, ?, ?)", events)
                conn.executemany("INSERT INTO commands (t, point, value, source) "
                                 "VALUES (?, ?, ?, ?)", commands)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _commit_loop(self) -> None:
        while not self.closed:
            self._wake.wait(self.commit_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # disk full, I/O error: report at the next write
                log.error("run store %s: commit failed: %s", self.path, exc)
                self.failure = exc
                return

    def finish(self) -> None:
        """Commit, record the end time and checkpoint the WAL into the file."""
        self.flush()
        self.update_manifest(wall_end=utc_iso(time.time_ns()))
        with self._db_lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def stop(self) -> None:
        """Stop accepting writes and end the commit thread (nothing more is committed)."""
        self.closed = True
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
