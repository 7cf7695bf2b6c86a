"""The InfluxDB forwarder: exports a run store to InfluxDB, losing and duplicating nothing.

The forwarder reads the run store (never the twin) from a checkpoint: the last exported
row id of each table, kept in a JSON file in the run directory and replaced atomically
after each batch the server acknowledged. A batch that failed is sent again identically
(same lines, same timestamps), so a write that reached the server before the connection
dropped only overwrites itself. Connection errors, 429 and 5xx are retried with bounded
exponential backoff; then the forwarder backfills from its checkpoint, so an outage of any
length loses nothing. Other 4xx answers (credentials, missing database, bad data) are
permanent: the forwarder stops with a `ServiceError`, and the run keeps recording.

Two write paths: ``v1`` (InfluxDB 1.x: ``POST /write?db=&rp=&precision=ns``, HTTP basic
auth) and ``v2`` (influxdb-client's synchronous ``WriteApi``: ``/api/v2/write`` on
InfluxDB 2.x/3.x, 1.8+ and compatible servers). Secrets come only from the environment:
``HEATRIG_INFLUX_TOKEN``, ``HEATRIG_INFLUX_USERNAME``, ``HEATRIG_INFLUX_PASSWORD``.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import json
import logging
import os
import random
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rig.record.credentials import redact_url, refuse_url_credentials
from rig.record.lineprotocol import SampleEncoder, event_line, kpi_line, verdict_line
from rig.record.store import RunStore
from twin.errors import ConfigError, ServiceError

log = logging.getLogger(__name__)

ENV_TOKEN = "HEATRIG_INFLUX_TOKEN"
ENV_USERNAME = "HEATRIG_INFLUX_USERNAME"
ENV_PASSWORD = "HEATRIG_INFLUX_PASSWORD"
DEFAULT_DATABASE = "heatrig"
BATCH_LINES = 5000
CHECKPOINT_FORMAT = 1
_SCHEMES = {"http": ("http", None), "https": ("https", None),
            "influx1": ("http", "v1"), "influx1s": ("https", "v1"),
            "influx2": ("http", "v2"), "influx2s": ("https", "v2")}


# --------------------------------------------------------------------------- target


@dataclass(frozen=True)
class InfluxTarget:
    """Where to export: base URL (no credentials), API and database (or bucket).

    ``api``: ``v1`` (``/write``), ``v2`` (``/api/v2/write``) or ``auto`` (from the
    ``X-Influxdb-Version`` header of ``/ping``). ``database`` is the 1.x database or the
    v2 bucket; ``retention_policy`` is 1.x only, ``org`` v2 only. Build it with
    `from_url`, which reads the secrets from the environment.
    """

    url: str
    api: str = "auto"
    database: str = DEFAULT_DATABASE
    retention_policy: str = ""
    org: str = ""
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    timeout_s: float = 10.0
    verify_tls: bool = True

    @classmethod
    def from_url(cls, url: str, *, api: str | None = None, database: str | None = None,
                 retention_policy: str | None = None, org: str | None = None,
                 env: Mapping[str, str] | None = None, **options: Any) -> InfluxTarget:
        """Parse a target URL; secrets from ``env`` (default: the process environment).

        Forms: ``http(s)://host:port[/prefix][?db=|bucket=&rp=&org=&api=v1|v2]``,
        ``influx1[s]://host:port/DATABASE[/RP]``, ``influx2[s]://host:port/ORG/BUCKET``.
        Credentials in the URL are refused (they would end up in shell history and logs).
        """
        env = os.environ if env is None else env
        check_url(url)
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        http_scheme, implied_api = _SCHEMES[scheme]
        query = dict(urllib.parse.parse_qsl(parts.query))
        segments = [s for s in parts.path.split("/") if s]
        prefix = parts.path.rstrip("/")
        found: dict[str, str] = {}
        if implied_api == "v1":
            prefix = ""
            found.update(zip(("database", "retention_policy"), segments, strict=False))
        elif implied_api == "v2":
            prefix = ""
            found.update(zip(("org", "database"), segments, strict=False))
        found.update({k: query[q] for q, k in (("db", "database"), ("bucket", "database"),
                                               ("rp", "retention_policy"), ("org", "org"),
                                               ("api", "api")) if q in query})
        chosen_api = api or implied_api or found.get("api") or "auto"
        if chosen_api not in ("v1", "v2", "auto"):
            raise ConfigError(f"InfluxDB API {chosen_api!r}: expected v1, v2 or auto")
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError as exc:
            raise ConfigError(f"InfluxDB URL {redact_url(url)!r}: {exc}") from None
        return cls(
            url=f"{http_scheme}://{parts.hostname}{port}{prefix}",
            api=chosen_api,
            database=database or found.get("database") or DEFAULT_DATABASE,
            retention_policy=retention_policy or found.get("retention_policy", ""),
            org=org or found.get("org", ""),
            username=env.get(ENV_USERNAME, ""), password=env.get(ENV_PASSWORD, ""),
            token=env.get(ENV_TOKEN, ""), **options)

    @property
    def where(self) -> str:
        """Human description without secrets: URL and database."""
        rp = f" (retention policy {self.retention_policy})" if self.retention_policy else ""
        return f"{self.url} database {self.database!r}{rp}"

    def key(self) -> str:
        """Short stable id of this destination (names the checkpoint file)."""
        ident = "|".join((self.url, self.database, self.retention_policy, self.org))
        return hashlib.sha256(ident.encode()).hexdigest()[:12]


def check_url(url: str) -> str:
    """``url`` if it is a usable InfluxDB URL without credentials, else ConfigError.

    The error never repeats a credential: the URL is shown through `redact_url`.
    """
    refuse_url_credentials(url, "InfluxDB URL", f"set {ENV_USERNAME} and {ENV_PASSWORD}, "
                                                f"or {ENV_TOKEN}, in the environment")
    try:
        parts = urllib.parse.urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:
        raise ConfigError(f"InfluxDB URL {redact_url(url)!r}: {exc}") from None
    if parts.scheme.lower() not in _SCHEMES or not hostname:
        raise ConfigError(f"InfluxDB URL {redact_url(url)!r}: expected http(s)://HOST:PORT, "
                          "influx1://HOST:PORT/DATABASE or influx2://HOST:PORT/ORG/BUCKET")
    return url


def checkpoint_path_for(run_dir: str | Path, target: InfluxTarget) -> Path:
    """Default checkpoint file of exporting ``run_dir`` to ``target``."""
    return Path(run_dir) / f"influx-export-{target.key()}.json"


# --------------------------------------------------------------------------- HTTP errors


class TransientError(Exception):
    """A write that may succeed later (connection error, 429, 5xx); ``retry_after_s`` hint."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _server_message(body: bytes | str | None) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else (body or "")
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        parsed = json.loads(text)
        text = parsed.get("error") or parsed.get("message") or text
    text = " ".join(str(text).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _retry_after(value: str | None) -> float | None:
    try:
        return min(60.0, max(0.0, float(value))) if value else None
    except ValueError:
        return None


def classify(target: InfluxTarget, api: str, status: int, body: bytes | str | None,
             retry_after: str | None = None) -> Exception | None:
    """None for success, else a `TransientError` or a permanent `ServiceError`."""
    if 200 <= status < 300:
        return None
    msg = _server_message(body)
    at = f"InfluxDB at {target.url}"
    if status == 429 or status >= 500:
        return TransientError(f"{at}: HTTP {status} {msg}", _retry_after(retry_after))
    if status in (401, 403):
        how = (f"{ENV_USERNAME}/{ENV_PASSWORD}" if api == "v1" and not target.token
               else ENV_TOKEN)
        return ServiceError(f"{at}: not authorised to write to {target.database!r} "
                            f"(HTTP {status}: {msg}); check {how}")
    if status == 404:
        what = (f"database {target.database!r}" if api == "v1"
                else f"bucket {target.database!r} (org {target.org!r})")
        return ServiceError(f"{at}: {what} not found (HTTP 404: {msg}); create it first")
    return ServiceError(f"{at}: write refused (HTTP {status}: {msg})")


# --------------------------------------------------------------------------- writers


class Writer(Protocol):
    """Sends one body of line protocol; raises TransientError or ServiceError."""

    api: str

    def write(self, body: bytes) -> None: ...
    def close(self) -> None: ...


class V1Writer:
    """InfluxDB 1.x ``/write`` over one keep-alive HTTP connection, gzip level 1."""

    api = "v1"

    def __init__(self, target: InfluxTarget) -> None:
        self.target = target
        parts = urllib.parse.urlsplit(target.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        params = {"db": target.database, "precision": "ns"}
        if target.retention_policy:
            params["rp"] = target.retention_policy
        self._path = f"{parts.path}/write?{urllib.parse.urlencode(params)}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8",
                         "Content-Encoding": "gzip"}
        if target.token:
            self._headers["Authorization"] = f"Token {target.token}"
        elif target.username or target.password:
            basic = base64.b64encode(f"{target.username}:{target.password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.target.timeout_s,
                    context=_tls_context(self.target.verify_tls))
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port,
                                                        timeout=self.target.timeout_s)
        return self._conn

    def write(self, body: bytes) -> None:
        """POST gzip-compressed ``body``; 204 or raise."""
        data = gzip.compress(body, compresslevel=1, mtime=0)
        try:
            conn = self._connection()
            conn.request("POST", self._path, body=data, headers=self._headers)
            resp = conn.getresponse()
            answer = resp.read()
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransientError(f"cannot reach InfluxDB at {self.target.url}: "
                                 f"{_cause(exc)}") from None
        error = classify(self.target, self.api, resp.status, answer,
                         resp.getheader("Retry-After"))
        if error is not None:
            raise error

    def close(self) -> None:
        """Drop the connection (a new one is made on the next write)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class V2Writer:
    """``/api/v2/write`` through influxdb-client's synchronous WriteApi (gzip enabled).

    Never its batching mode: its ``flush()`` does nothing in 1.50 and a failed batch is
    only logged. Username and password (InfluxDB 1.8+) become the ``user:password`` token.
    """

    api = "v2"

    def __init__(self, target: InfluxTarget) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.target = target
        token = target.token or (f"{target.username}:{target.password}"
                                 if target.username or target.password else "")
        bucket = target.database + (f"/{target.retention_policy}"
                                    if target.retention_policy else "")
        self._bucket = bucket
        self._client = InfluxDBClient(url=target.url, token=token, org=target.org or "-",
                                      timeout=int(target.timeout_s * 1000), enable_gzip=True,
                                      verify_ssl=target.verify_tls)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: bytes) -> None:
        """Write ``body`` synchronously; return when acknowledged or raise."""
        from influxdb_client.client.exceptions import InfluxDBError
        from urllib3.exceptions import HTTPError as Urllib3Error

        try:
            self._write_api.write(bucket=self._bucket, org=self.target.org or "-",
                                  record=body,
                                  # WritePrecision's members are plain str ("ns")
                                  write_precision="ns")  # type: ignore[arg-type]
        except InfluxDBError as exc:
            status = getattr(exc, "status", None)
            if status is None and exc.response is not None:
                status = exc.response.status
            error = classify(self.target, self.api, int(status or 500),
                             getattr(exc, "body", None) or exc.message,
                             exc.retry_after)
            raise (error or TransientError(str(exc))) from None
        except (Urllib3Error, OSError) as exc:
            raise TransientError(f"cannot reach InfluxDB at {self.target.url}: "
                                 f"{_cause(exc)}") from None

    def close(self) -> None:
        """Close the client and its connection pool."""
        with contextlib.suppress(Exception):
            self._write_api.close()
        with contextlib.suppress(Exception):
            self._client.close()


def _tls_context(verify: bool) -> ssl.SSLContext:
    """The default TLS context, or one that accepts any certificate (``verify_tls=False``)."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _cause(exc: BaseException) -> str:
    """A short cause of a connection error (the innermost reason, no request details)."""
    reason = getattr(exc, "reason", None)
    inner = reason if isinstance(reason, BaseException) else exc
    text = str(inner)
    if "Connection refused" in text or isinstance(inner, ConnectionRefusedError):
        return "connection refused"
    if isinstance(inner, TimeoutError) or "timed out" in text:
        return "timed out"
    if isinstance(inner, ConnectionResetError) or "reset" in text:
        return "connection reset"
    if isinstance(inner, BrokenPipeError | http.client.RemoteDisconnected):
        return "connection closed by the server"
    if "Name or service not known" in text or "getaddrinfo" in text:
        return "unknown host"
    return f"{type(inner).__name__}: {' '.join(text.split())[:160]}"


def ping(target: InfluxTarget) -> str:
    """GET ``/ping``; return the ``X-Influxdb-Version`` header (``""`` if none).

    Raises ServiceError naming the URL when the server cannot be reached.
    """
    parts = urllib.parse.urlsplit(target.url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    kwargs: dict[str, Any] = {"timeout": min(target.timeout_s, 5.0)}
    if parts.scheme == "https":
        kwargs["context"] = _tls_context(target.verify_tls)
    conn = cls(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
               **kwargs)
    try:
        conn.request("GET", f"{parts.path}/ping")
        resp = conn.getresponse()
        resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ServiceError(f"cannot reach InfluxDB at {target.url}: {_cause(exc)}") from None
    finally:
        conn.close()
    if resp.status >= 400:
        raise ServiceError(f"InfluxDB at {target.url}: /ping answered HTTP {resp.status}")
    return resp.getheader("X-Influxdb-Version") or ""


def detect_api(target: InfluxTarget, version: str) -> str:
    """``v1`` or ``v2`` for ``target`` given the server's version header."""
    if target.api in ("v1", "v2"):
        return target.api
    v = version.lower().lstrip("v")
    if v.startswith("1."):
        return "v1"
    if v[:1] in ("2", "3"):
        return "v2"
    return "v2" if target.token or target.org else "v1"  # e.g. VictoriaMetrics: both work


def connect(target: InfluxTarget) -> Writer:
    """Check the target now and return its writer; raise ServiceError with the cause.

    Pings (reachability, version), then writes an empty body, which InfluxDB answers
    with the credentials' and the database's errors without storing anything.
    """
    version = ping(target)
    api = detect_api(target, version)
    writer: Writer = V1Writer(target) if api == "v1" else V2Writer(target)
    try:
        writer.write(b"")
    except TransientError as exc:
        writer.close()
        raise ServiceError(str(exc)) from None
    except ServiceError as exc:
        if "HTTP 400" not in str(exc):  # some servers refuse an empty body: fine here
            writer.close()
            raise
    log.info("exporting to InfluxDB %s (%s API, server %s)", target.where, api,
             version or "unknown")
    return writer


# --------------------------------------------------------------------------- checkpoint


@dataclass
class Checkpoint:
    """Last exported row id of each table, and counts of what was written."""

    samples: int = 0
    events: int = 0
    verdicts: int = 0
    kpis: int = 0
    lines: int = 0
    batches: int = 0

    def copy(self) -> Checkpoint:
        """An independent copy."""
        return Checkpoint(**self.__dict__)

    @classmethod
    def load(cls, path: Path, run_id: str) -> Checkpoint:
        """Read ``path`` (a fresh checkpoint if missing); refuse another run's."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s); exporting the run again from the start", path, exc)
            return cls()
        if data.get("run_id") != run_id:
            raise ServiceError(f"{path} belongs to run {data.get('run_id')!r}, not {run_id!r}")
        return cls(**{k: int(data.get(k, 0)) for k in cls.__dataclass_fields__})

    def save(self, path: Path, run_id: str, where: str) -> None:
        """Replace ``path`` atomically (write a temp file, then rename)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"format": CHECKPOINT_FORMAT, "run_id": run_id,
                                   "target": where, **self.__dict__}, indent=1) + "\n")
        tmp.replace(path)


# --------------------------------------------------------------------------- forwarder


@dataclass
class ExportStats:
    """What a forwarder did: lines and batches acknowledged, retries, line-protocol bytes
    (before gzip), seconds, rows left in the store, the permanent error if any."""

    lines: int = 0
    batches: int = 0
    retries: int = 0
    bytes: int = 0
    seconds: float = 0.0
    pending_samples: int = 0
    pending_events: int = 0
    error: str | None = None

    @property
    def lines_per_s(self) -> float:
        """Export rate (lines = point values, events, verdicts per second)."""
        return self.lines / self.seconds if self.seconds > 0 else 0.0


class Forwarder:
    """Exports a run store to InfluxDB from a checkpoint; live in a thread or at once.

    ``store``: the run's `RunStore` (or its directory); the forwarder reads through a
    read-only connection of its own. ``checkpoint_path`` defaults to
    `checkpoint_path_for`. ``batch_lines`` bounds a request (whole samples only, at least
    one). Backoff doubles from ``backoff_initial_s`` to ``backoff_max_s`` with jitter.
    ``max_outage_s`` (None = forever) gives up a retry loop with a ServiceError.
    """

    def __init__(self, store: RunStore | str | Path, target: InfluxTarget,
                 checkpoint_path: str | Path | None = None, *,
                 batch_lines: int = BATCH_LINES, poll_s: float = 0.5,
                 backoff_initial_s: float = 0.25, backoff_max_s: float = 10.0,
                 max_outage_s: float | None = None,
                 on_error: Callable[[ServiceError], None] | None = None) -> None:
        self._writer_store = store if isinstance(store, RunStore) else None
        self.run_dir = store.run_dir if isinstance(store, RunStore) else Path(store)
        self.target = target
        self.checkpoint_path = Path(checkpoint_path or checkpoint_path_for(self.run_dir, target))
        self.batch_lines = max(1, batch_lines)
        self.poll_s = poll_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_outage_s = max_outage_s
        self.on_error = on_error
        self.stats = ExportStats()
        self.error: ServiceError | None = None
        self._writer: Writer | None = None
        self._encoder: SampleEncoder | None = None
        self._thread: threading.Thread | None = None
        self._abort = threading.Event()  # stop now
        self._draining = threading.Event()  # stop once caught up
        self._drain_deadline = float("inf")
        self._wake = threading.Event()

    # -- live ----------------------------------------------------------------------------

    def start(self) -> None:
        """Check the target (raise ServiceError if unusable) and export in a thread."""
        if self._thread is not None:
            raise RuntimeError("forwarder already started")
        self._writer = connect(self.target)
        self._thread = threading.Thread(target=self._run_thread, daemon=True,
                                        name="heatrig-influx-forwarder")
        self._thread.start()

    def stop(self, drain: bool = True, timeout: float | None = 60.0) -> ExportStats:
        """Stop; with ``drain`` first export everything recorded so far (for up to
        ``timeout`` s, however long the server is down). What is left stays in the run
        store, and ``heatrig export`` resumes from the checkpoint.
        """
        if self._writer_store is not None:
            self._writer_store.flush()  # no-op once closed
        if self._thread is not None:
            if drain:
                self._drain_deadline = time.monotonic() + (timeout if timeout is not None
                                                            else float("inf"))
                self._draining.set()
            else:
                self._abort.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
        self._close_writer()
        self._count_pending()
        if self.stats.pending_samples or self.stats.pending_events:
            log.warning("InfluxDB export of %s stopped with %d samples and %d events not "
                        "exported; `heatrig export %s` resumes from the checkpoint",
                        self.run_dir, self.stats.pending_samples, self.stats.pending_events,
                        self.run_dir)
        return self.stats

    @property
    def running(self) -> bool:
        """True while the export thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run_thread(self) -> None:
        began = time.monotonic()
        try:
            with RunStore.open(self.run_dir) as reader:
                while not self._abort.is_set():
                    last_pass = self._draining.is_set()  # set after the final commit
                    self._export_pending(reader)
                    if last_pass:
                        break
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
        except ServiceError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug must not pass silently in a daemon thread
            log.exception("InfluxDB forwarder crashed")
            self._fail(ServiceError(f"InfluxDB forwarder crashed: {exc!r}"))
        finally:
            self.stats.seconds += time.monotonic() - began

    def _fail(self, exc: ServiceError) -> None:
        self.error = exc
        self.stats.error = str(exc)
        log.error("InfluxDB export stopped: %s (the run keeps recording locally)", exc)
        if self.on_error is not None:
            with contextlib.suppress(Exception):
                self.on_error(exc)

    # -- after the fact ----------------------------------------------------------------

    def export_all(self) -> ExportStats:
        """Export everything in the store now, in this thread; raise ServiceError."""
        began = time.monotonic()
        self._writer = self._writer or connect(self.target)
        self._draining.set()
        try:
            with RunStore.open(self.run_dir) as reader:
                self._export_pending(reader)
        finally:
            self._close_writer()
            self.stats.seconds += time.monotonic() - began
        self._count_pending()
        return self.stats

    # -- the work ------------------------------------------------------------------------

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _count_pending(self) -> None:
        try:
            with RunStore.open(self.run_dir) as reader:
                ids = reader.max_ids()
        except Exception:  # the run directory may be gone; nothing to report then
            return
        cp = Checkpoint.load(self.checkpoint_path, str(reader.run_id))
        self.stats.pending_samples = max(0, ids["samples"] - cp.samples)
        self.stats.pending_events = max(0, ids["events"] - cp.events)

    def _export_pending(self, reader: RunStore) -> None:
        """Send batches until nothing new is committed (or told to stop)."""
        run, site, origin = reader.run_id, reader.site, reader.time_origin_ns
        if self._encoder is None:
            self._encoder = SampleEncoder(reader.points, run, site, origin)
        encoder = self._encoder
        cp = Checkpoint.load(self.checkpoint_path, run)
        per_row = max(1, len(reader.points))
        while not self._abort.is_set():
            if self._draining.is_set() and time.monotonic() > self._drain_deadline:
                return  # out of drain time; the rest stays in the store
            lines: list[str] = []
            nxt = cp.copy()
            for e in reader.events(after_id=cp.events, limit=self.batch_lines):
                lines.append(event_line(run, site, origin, e.t, e.tie, e.source, e.kind,
                                        e.message))
                nxt.events = e.id
            for v in reader.verdict_rows(after_id=cp.verdicts):
                evidence = v.evidence if isinstance(v.evidence, str) else json.dumps(
                    v.evidence, sort_keys=True, default=str)
                lines.append(verdict_line(run, site, origin, v.t, v.name, v.verdict, evidence))
                nxt.verdicts = v.id
            for kid, t, kpis in reader.kpi_rows(after_id=cp.kpis):
                line = kpi_line(run, site, origin, t, kpis)
                if line is not None:
                    lines.append(line)
                nxt.kpis = kid
            if len(lines) < self.batch_lines:  # whole samples only, at least one
                rows = max(1, (self.batch_lines - len(lines)) // per_row)
                for row in reader.sample_rows(after_id=cp.samples, limit=rows):
                    lines.extend(encoder.lines(row.t, row.measured, row.truth))
                    nxt.samples = row.id
            if nxt == cp:
                return  # caught up
            if lines:
                body = "\n".join(lines).encode()
                if not self._send(body):
                    return  # told to stop while the server was down
                nxt.lines += len(lines)
                nxt.batches += 1
                self.stats.lines += len(lines)
                self.stats.batches += 1
                self.stats.bytes += len(body)
            nxt.save(self.checkpoint_path, run, self.target.where)
            cp = nxt

    def _send(self, body: bytes) -> bool:
        """Send until acknowledged (True); False if told to stop; raise if permanent."""
        delay = self.backoff_initial_s
        failing_since: float | None = None
        while True:
            assert self._writer is not None, "connect() first"
            try:
                self._writer.write(body)
            except TransientError as exc:
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                    log.warning("InfluxDB write failed, retrying with backoff: %s", exc)
                else:
                    log.debug("InfluxDB write failed again: %s", exc)
                if self.max_outage_s is not None and now - failing_since > self.max_outage_s:
                    raise ServiceError(f"{exc}; gave up after {now - failing_since:.0f} s, "
                                       "the checkpoint keeps the progress") from None
                if self._draining.is_set() and now > self._drain_deadline:
                    return False
                self.stats.retries += 1
                hint = exc.retry_after_s
                wait = hint if hint is not None else delay * random.uniform(0.5, 1.0)
                if self._draining.is_set():
                    wait = min(wait, max(0.0, self._drain_deadline - now))
                if self._abort.wait(wait):
                    return False
                delay = min(self.backoff_max_s, delay * 2)
                continue
            if failing_since is not None:
                log.info("InfluxDB at %s accepts writes again after %.1f s; backfilling",
                         self.target.url, time.monotonic() - failing_since)
            return True


def export_run(run_dir: str | Path, target: InfluxTarget, *,
               checkpoint_path: str | Path | None = None, restart: bool = False,
               batch_lines: int = BATCH_LINES, max_outage_s: float | None = 300.0,
               **options: Any) -> ExportStats:
    """Export a recorded run (``heatrig export RUN_DIR --influx URL``), resuming from its
    checkpoint (``restart`` starts over); raise ServiceError if the target is unusable.
    """
    path = Path(checkpoint_path or checkpoint_path_for(run_dir, target))
    if restart:
        path.unlink(missing_ok=True)
    forwarder = Forwarder(run_dir, target, path, batch_lines=batch_lines,
                          max_outage_s=max_outage_s, **options)
    stats = forwarder.export_all()
    log.info("exported %d lines in %d batches to %s (%.0f lines/s)", stats.lines,
             stats.batches, target.where, stats.lines_per_s)
    return stats
