"""The run store's file format: SQLite schema, format version, row types, sample blobs.

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

import json
import math
import sqlite3
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from twin.errors import RunStoreError

STORE_FILE = "run.sqlite"
FORMAT = 1
CODEC = "f64le-zlib1; truth xor measured"

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

POINT_COLUMNS = ("idx", "id", "device", "kind", "type", "unit", "min", "max", "description",
                 "brick")


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


# --------------------------------------------------------------------------- values


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


def dump_json(value: Any) -> str:
    """How a JSON column is written (sorted keys; NaN allowed; anything else as str)."""
    return json.dumps(value, sort_keys=True, default=str, allow_nan=True)


def float_or_none(value: Any) -> float | None:
    """A REAL column's value: None for None and NaN."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


# --------------------------------------------------------------------------- connections


def connect(run_dir: Path, *, writable: bool) -> sqlite3.Connection:
    """Connect to the store of ``run_dir`` (WAL when writable) and check its format."""
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
    return conn


def connect_existing(run_dir: Path, *, writable: bool) -> sqlite3.Connection:
    """`connect` to a run directory that must already hold a store."""
    if not (run_dir / STORE_FILE).is_file():
        raise RunStoreError(f"{run_dir}: not a run directory (no {STORE_FILE})")
    return connect(run_dir, writable=writable)
