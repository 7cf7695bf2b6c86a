"""The run store: one SQLite file (``run.sqlite``) per run directory.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed transaction survives a crash of
the process (SIGKILL) at once, and the file is never left inconsistent; a power cut may
lose the last commits, never the file. Writes are buffered in memory and committed by a
background thread every ``commit_interval_s`` (0.5 s by default, and sooner when the
buffer fills), so a SIGKILL loses at most about the last half second.

Samples: one row per recorded instant, ``t`` (simulated s) plus two blobs. ``measured``
is the float64 little-endian array of all points in table order, zlib level 1;
``truth`` is the same for the ground truth XOR-ed bitwise with ``measured`` (points that
are not noisy sensors are identical, so their XOR is zero and costs next to nothing).
float64 rather than float32 because the record must be exact: ground truth feeds energy
balances and counters (float32 has 7 digits: a 1 MW meter in J loses whole joules), the
replay hash and the InfluxDB export are bit-for-bit what the twin computed, and NaN
(a dropped-out sensor) survives. Compression brings it to about 6 bytes a point value.

Tables: ``manifest`` (key -> JSON), ``points``, ``samples``, ``commands``, ``events``,
``verdicts``, ``kpis``. Every table but ``manifest``/``points`` is append-only with an
integer ``id``, which is what the InfluxDB forwarder checkpoints.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import math
import platform
import sqlite3
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from twin.errors import RunStoreError

log = logging.getLogger(__name__)

STORE_FILE = "run.sqlite"
FORMAT = 1
CODEC = "f64le-zlib1; truth xor measured"
COMMIT_INTERVAL_S = 0.5
FLUSH_ROWS = 256  # wake the committer when this many samples are buffered
MAX_BUFFERED_ROWS = 2048  # beyond this the writer commits itself (memory bound)
READ_CHUNK = 256
PACKAGES = ("heatrig", "numpy", "simpy", "CoolProp", "pydantic", "PyYAML", "pymodbus",
            "paho-mqtt", "amqtt", "influxdb-client")
_SECRET_WORDS = ("password", "passwd", "token", "secret", "apikey", "api_key")

SCHEMA = """
CREATE TABLE manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE points (
    idx INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, device TEXT NOT NULL,
    kind TEXT NOT NULL, type TEXT NOT NULL, unit TEXT NOT NULL, min REAL, max REAL,
    description TEXT NOT NULL DEFAULT '', brick TEXT);
CREATE TABLE samples (
    id INTEGER PRIMARY KEY, t REAL NOT NULL, measured BLOB NOT NULL, truth BLOB NOT NULL);
CREATE INDEX samples_t ON samples (t);
CREATE TABLE commands (
    id INTEGER PRIMARY KEY, t REAL NOT NULL, point TEXT NOT NULL, value REAL,
    source TEXT NOT NULL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, t REAL NOT NULL, tie INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL);
CREATE TABLE verdicts (
    id INTEGER PRIMARY KEY, t REAL NOT NULL, name TEXT NOT NULL, verdict TEXT NOT NULL,
    evidence TEXT NOT NULL);
CREATE TABLE kpis (id INTEGER PRIMARY KEY, t REAL NOT NULL, json TEXT NOT NULL);
"""


class EventRow(NamedTuple):
    """A stored plant event; ``tie`` numbers events of one source and kind at one ``t``."""

    id: int
    t: float
    tie: int
    source: str
    kind: str
    message: str


class CommandRow(NamedTuple):
    """A stored external write (the replay log): simulated time (s), point, value, source."""

    id: int
    t: float
    point: str
    value: float
    source: str


class VerdictRow(NamedTuple):
    """A stored verdict: simulated time (s) it was reached, name, verdict, evidence."""

    id: int
    t: float
    name: str
    verdict: str
    evidence: Any


class SampleRow(NamedTuple):
    """A stored instant: row id, simulated time (s), measured and true values (table order)."""

    id: int
    t: float
    measured: np.ndarray
    truth: np.ndarray


# --------------------------------------------------------------------------- blobs


def encode_sample(measured: np.ndarray, truth: np.ndarray) -> tuple[bytes, bytes]:
    """The two blobs of an instant (see the module docstring)."""
    m = np.ascontiguousarray(measured, dtype="<f8")
    x = m.view("<u8") ^ np.ascontiguousarray(truth, dtype="<f8").view("<u8")
    return zlib.compress(m.tobytes(), 1), zlib.compress(x.tobytes(), 1)


def decode_sample(measured: bytes, truth: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `encode_sample`: (measured, truth) float64 arrays."""
    m = np.frombuffer(zlib.decompress(measured), dtype="<f8")
    x = np.frombuffer(zlib.decompress(truth), dtype="<u8")
    return m, (m.view("<u8") ^ x).view("<f8")


# --------------------------------------------------------------------------- helpers


def _utc_iso(ns: int) -> str:
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


def _scrub(value: Any, path: str = "") -> Any:
    """A copy of a manifest value with anything named like a secret replaced by ``***``."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            key = str(k)
            if v and any(w in key.lower() for w in _SECRET_WORDS) and isinstance(v, str):
                log.warning("manifest field %s%s looks like a secret; not recorded", path, key)
                out[key] = "***"
            else:
                out[key] = _scrub(v, f"{path}{key}.")
        return out
    if isinstance(value, list | tuple):
        return [_scrub(v, path) for v in value]
    return value


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, allow_nan=True)


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


_open_stores: weakref.WeakSet[RunStore] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    """Commit whatever is buffered when the interpreter exits without `close()`."""
    for store in list(_open_stores):
        with contextlib.suppress(Exception):
            store.close()


# --------------------------------------------------------------------------- the store


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
        self._conn = conn
        self._db_lock = threading.RLock()
        self._buf_lock = threading.Lock()
        self._samples: list[tuple[float, np.ndarray, np.ndarray]] = []
        self._events: list[tuple[float, int, str, str, str]] = []
        self._commands: list[tuple[float, str, float | None, str]] = []
        self._closed = False
        self._failure: BaseException | None = None
        self.manifest: dict[str, Any] = {
            k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM manifest")}
        cols = ("idx", "id", "device", "kind", "type", "unit", "min", "max", "description",
                "brick")
        self.points: list[dict[str, Any]] = [
            dict(zip(cols, row, strict=True))
            for row in conn.execute(f"SELECT {', '.join(cols)} FROM points ORDER BY idx")]
        for p in self.points:
            p["min"] = -math.inf if p["min"] is None else p["min"]
            p["max"] = math.inf if p["max"] is None else p["max"]
        self.point_index = {p["id"]: i for i, p in enumerate(self.points)}
        self._last_t = self.last_sample_time()
        self._tie_t: float | None = None
        self._ties: dict[tuple[str, str], int] = {}
        if writable:
            self._init_ties()
            self._wake = threading.Event()
            self._thread = threading.Thread(target=self._commit_loop, daemon=True,
                                            name=f"heatrig-store-{run_dir.name}")
            self._thread.start()
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
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / STORE_FILE
        if path.exists():
            log.warning("replacing the run store in %s", run_dir)
            for old in [path, *run_dir.glob(STORE_FILE + "-*"),
                        *run_dir.glob("influx-export-*.json")]:
                old.unlink(missing_ok=True)
        wall_ns = time.time_ns()
        full = _scrub(dict(manifest))
        full.setdefault("run_id", f"{run_dir.resolve().name}-"
                        f"{datetime.fromtimestamp(wall_ns / 1e9, UTC):%Y%m%dT%H%M%SZ}")
        full.update({
            "format": FORMAT, "codec": CODEC, "wall_start": _utc_iso(wall_ns),
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
                             [(k, _json(v)) for k, v in full.items()])
            conn.executemany(
                "INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(i, p["id"], p.get("device") or str(p["id"]).split(".", 1)[0],
                  p.get("kind") or "", p.get("type") or "float", p.get("unit") or "",
                  _float_or_none(p.get("min")), _float_or_none(p.get("max")),
                  p.get("description") or "", p.get("brick")) for i, p in enumerate(points)])
            conn.execute("COMMIT")
        finally:
            conn.close()
        tmp.replace(path)  # a run directory never holds a half-created store
        return cls._connect(run_dir, writable=True, commit_interval_s=commit_interval_s)

    @classmethod
    def open(cls, run_dir: str | Path, readonly: bool = True) -> RunStore:
        """Open an existing run's store; ``readonly=False`` to append (verdicts, KPIs)."""
        run_dir = Path(run_dir)
        if not (run_dir / STORE_FILE).is_file():
            raise RunStoreError(f"{run_dir}: not a run directory (no {STORE_FILE})")
        return cls._connect(run_dir, writable=not readonly)

    @classmethod
    def _connect(cls, run_dir: Path, *, writable: bool,
                 commit_interval_s: float = COMMIT_INTERVAL_S) -> RunStore:
        path = run_dir / STORE_FILE
        uri = f"file:{path.resolve()}?mode={'rw' if writable else 'ro'}"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                                   check_same_thread=False, timeout=30.0)
            if writable:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("SELECT value FROM manifest WHERE key = 'format'").fetchone()
        except sqlite3.Error as exc:
            raise RunStoreError(f"{path}: cannot open the run store: {exc}") from exc
        if version is None or json.loads(version[0]) != FORMAT:
            conn.close()
            raise RunStoreError(f"{path}: unknown run store format {version}")
        return cls(run_dir, conn, writable=writable, commit_interval_s=commit_interval_s)

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

    # -- writing -----------------------------------------------------------------------

    def _check_writable(self) -> None:
        if not self.writable or self._closed:
            state = "closed" if self._closed else "read-only"
            raise RunStoreError(f"{self.path}: store is {state}")
        if self._failure is not None:
            raise RunStoreError(f"{self.path}: writing failed: {self._failure}")

    def write_sample(self, t: float, measured: np.ndarray, truth: np.ndarray) -> None:
        """Buffer the values of every point at simulated time ``t`` (s, strictly increasing)."""
        self._check_writable()
        m = np.array(measured, dtype=np.float64)
        r = np.array(truth, dtype=np.float64)
        if m.shape != (len(self.points),) or r.shape != m.shape:
            raise ValueError(f"expected {len(self.points)} values, got {m.shape}/{r.shape}")
        t = float(t)
        with self._buf_lock:
            if self._last_t is not None and not t > self._last_t:
                raise ValueError(f"sample time {t} s not after the last one ({self._last_t} s)")
            self._last_t = t
            self._samples.append((t, m, r))
            pending = len(self._samples)
        if pending >= MAX_BUFFERED_ROWS:
            self.flush()
        elif pending >= FLUSH_ROWS:
            self._wake.set()

    def write_event(self, t: float, source: str, kind: str, message: str) -> None:
        """Buffer a plant event at simulated time ``t`` (s)."""
        self._check_writable()
        t = float(t)
        with self._buf_lock:
            if t != self._tie_t:
                self._tie_t, self._ties = t, {}
            tie = self._ties.get((source, kind), -1) + 1
            self._ties[(source, kind)] = tie
            self._events.append((t, tie, str(source), str(kind), str(message)))

    def write_command(self, t: float, point: str, value: float, source: str) -> None:
        """Buffer an accepted external write (the replay log) at simulated time ``t`` (s)."""
        self._check_writable()
        with self._buf_lock:
            self._commands.append((float(t), str(point), _float_or_none(value), str(source)))

    def write_verdict(self, name: str, verdict: str, evidence: Any = None,
                      t: float | None = None) -> None:
        """Store a verdict now; ``t`` (s) defaults to the last sample's time."""
        self._check_writable()
        when = t if t is not None else (self._last_t or 0.0)
        with self._db_lock:
            self._conn.execute("INSERT INTO verdicts (t, name, verdict, evidence) "
                               "VALUES (?, ?, ?, ?)", (float(when), name, verdict,
                                                       _json(evidence)))

    def write_kpis(self, kpis: Mapping[str, float], t: float | None = None) -> None:
        """Store the final KPIs, name -> value in the unit of `twin.kpis.REGISTRY` (the
        latest write wins); ``t`` as for verdicts."""
        self._check_writable()
        bad = [k for k, v in kpis.items() if not isinstance(v, int | float) or
               isinstance(v, bool)]
        if bad:
            raise RunStoreError(f"KPIs must be numbers; not: {', '.join(bad)}")
        when = t if t is not None else (self._last_t or 0.0)
        with self._db_lock:
            self._conn.execute("INSERT INTO kpis (t, json) VALUES (?, ?)",
                               (float(when), _json({k: float(v) for k, v in kpis.items()})))

    def update_manifest(self, **items: Any) -> None:
        """Set manifest entries now (values are JSON; secrets are scrubbed)."""
        self._check_writable()
        items = _scrub(items)
        with self._db_lock:
            self._conn.executemany("INSERT OR REPLACE INTO manifest VALUES (?, ?)",
                                   [(k, _json(v)) for k, v in items.items()])
        self.manifest.update(items)

    def flush(self) -> None:
        """Commit everything buffered, now (one transaction)."""
        if not self.writable or self._closed:
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
        while not self._closed:
            self._wake.wait(self.commit_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # disk full, I/O error: report at the next write
                log.error("run store %s: commit failed: %s", self.path, exc)
                self._failure = exc
                return

    def close(self) -> None:
        """Commit, record the end time, checkpoint the WAL into the file and close."""
        if self._closed:
            return
        try:
            if self.writable:
                self.flush()
                self.update_manifest(wall_end=_utc_iso(time.time_ns()))
                with self._db_lock:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._closed = True
            if self.writable:
                self._wake.set()
                if threading.current_thread() is not self._thread:
                    self._thread.join()
                _open_stores.discard(self)
            with self._db_lock:
                self._conn.close()
        if self._failure is not None:
            raise RunStoreError(f"{self.path}: writing failed: {self._failure}")

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._closed:
            raise RunStoreError(f"{self.path}: store is closed")
        if self.writable:
            self.flush()
        with self._db_lock:
            return self._conn.execute(sql, params).fetchall()

    def _init_ties(self) -> None:
        rows = self._query("SELECT t, source, kind, MAX(tie) FROM events "
                           "WHERE t = (SELECT MAX(t) FROM events) GROUP BY source, kind")
        if rows:
            self._tie_t = rows[0][0]
            self._ties = {(s, k): tie for _, s, k, tie in rows}

    def count_samples(self) -> int:
        """Number of committed samples (instants)."""
        return int(self._query("SELECT COUNT(*) FROM samples")[0][0])

    def last_sample_time(self) -> float | None:
        """Simulated time (s) of the last committed sample, or None."""
        row = self._query("SELECT t FROM samples ORDER BY id DESC LIMIT 1")
        return float(row[0][0]) if row else None

    def max_ids(self) -> dict[str, int]:
        """The largest row id of each append-only table (0 when empty)."""
        tables = ("samples", "events", "commands", "verdicts", "kpis")
        sql = " UNION ALL ".join(f"SELECT COALESCE(MAX(id), 0) FROM {t}" for t in tables)
        return dict(zip(tables, (int(r[0]) for r in self._query(sql)), strict=True))

    def sample_rows(self, after_id: int = 0, limit: int = READ_CHUNK, *,
                    t0: float | None = None, t1: float | None = None) -> list[SampleRow]:
        """Up to ``limit`` samples with id > ``after_id`` (and t0 <= t <= t1), by id."""
        rows = self._query(
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
        return [EventRow(*row) for row in self._query(
            "SELECT id, t, tie, source, kind, message FROM events WHERE id > ? "
            "ORDER BY id LIMIT ?", (after_id, limit))]

    def commands(self) -> list[CommandRow]:
        """The replay log: every recorded external write, in order."""
        return [CommandRow(i, t, p, math.nan if v is None else v, s) for i, t, p, v, s in
                self._query("SELECT id, t, point, value, source FROM commands ORDER BY id")]

    def verdict_rows(self, after_id: int = 0) -> list[VerdictRow]:
        """Every stored verdict row with id > ``after_id`` (a rewritten name appears twice)."""
        return [VerdictRow(i, t, n, v, json.loads(e)) for i, t, n, v, e in self._query(
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
        return [(i, t, _kpi_record(j)) for i, t, j in self._query(
            "SELECT id, t, json FROM kpis WHERE id > ? ORDER BY id", (after_id,))]

    def kpis(self) -> dict[str, float] | None:
        """The final KPIs (the latest written), name -> value, or None."""
        rows = self._query("SELECT json FROM kpis ORDER BY id DESC LIMIT 1")
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
            h.update(_json([e.t, e.source, e.kind, e.message]).encode())
        for c in self.commands():
            h.update(_json([c.t, c.point, c.value, c.source]).encode())
        return h.hexdigest()

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result (``"ok"`` when sound)."""
        return str(self._query("PRAGMA integrity_check")[0][0])

    def summary(self) -> dict[str, Any]:
        """Manifest highlights and counts of a run (what `list_runs` shows)."""
        m = self.manifest
        ids = self.max_ids()
        counts = dict(zip(("samples", "events", "commands"), self._query(
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


# --------------------------------------------------------------------------- CLI helpers


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run directory directly under ``root`` (or ``root`` itself), oldest first."""
    root = Path(root)
    dirs = [root] if (root / STORE_FILE).is_file() else sorted(
        p.parent for p in root.glob(f"*/{STORE_FILE}"))
    runs = []
    for run_dir in dirs:
        try:
            with RunStore.open(run_dir) as store:
                runs.append(store.summary())
        except (RunStoreError, sqlite3.Error) as exc:
            log.warning("%s: skipped: %s", run_dir, exc)
    return sorted(runs, key=lambda r: (r["wall_start"] or "", r["run_dir"]))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def show(run_dir: str | Path) -> str:
    """A run's manifest highlights, KPIs and verdicts as text."""
    with RunStore.open(run_dir) as store:
        s = store.summary()
        kpis = store.kpis()
        verdicts = store.verdicts()
    end = f"{s['sim_end_s']:,.0f} s" if s["sim_end_s"] is not None else "-"
    lines = [
        f"run       {s['run_id']}  ({s['run_dir']})",
        f"site      {s['site'] or '-'}   scenario {s['scenario'] or '-'}   "
        f"seed {s['seed']}   mode {s['mode'] or '-'}",
        f"wall      {s['wall_start']} -> {s['wall_end'] or 'not closed (crashed or running)'}",
        f"recorded  {s['samples']} samples up to t = {end}, {s['events']} events, "
        f"{s['commands']} commands",
    ]
    if kpis:
        lines.append("KPIs")
        width = max(len(k) for k in kpis)
        lines += [f"  {k:<{width}}  {_fmt(v)}" for k, v in kpis.items()]
    else:
        lines.append("KPIs      none recorded")
    if verdicts:
        lines.append(f"verdicts  {len(verdicts)}, {s['failed']} not passed")
        width = max(len(v.name) for v in verdicts)
        for v in verdicts:
            evidence = v.evidence if isinstance(v.evidence, str) else _json(v.evidence)
            if len(evidence) > 100:
                evidence = evidence[:97] + "..."
            lines.append(f"  {v.verdict.upper():<6} {v.name:<{width}}  {evidence}")
    else:
        lines.append("verdicts  none recorded")
    return "\n".join(lines)


def describe_size(run_dir: str | Path) -> int:
    """Bytes on disk of a run store (the file plus its WAL and shared memory)."""
    run_dir = Path(run_dir)
    return sum(p.stat().st_size for p in run_dir.glob(STORE_FILE + "*") if p.is_file())


__all__ = [
    "STORE_FILE", "CommandRow", "EventRow", "RunStore", "SampleRow", "VerdictRow",
    "decode_sample", "describe_size", "encode_sample", "list_runs", "show",
]
