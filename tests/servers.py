"""Real servers for the integration tests: Mosquitto, InfluxDB 1.x and VictoriaMetrics.

Each class runs Debian's binary as a subprocess in its own temp directory, listening only on
127.0.0.1 ports picked free at construction time. ``start()`` waits (bounded) until the
server answers; ``stop()`` terminates it gracefully (SIGKILL after a timeout); ``kill()`` sends
SIGKILL at once. A stopped or killed server can be started again on the SAME ports and data
directory, so tests can crash a server and check that nothing was lost. ``close()`` stops it
and deletes the temp directory. Every live server is also closed by an atexit hook, and on
Linux the children get ``PR_SET_PDEATHSIG`` so they die even if the test process is SIGKILLed.

Usage::

    with InfluxDB1() as influx:          # started on enter, closed on exit
        influx.create_database("rig")
        influx.write("t,site=a v=1 1", db="rig")
        influx.query("SELECT * FROM t", db="rig")
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

LOOPBACK = "127.0.0.1"
INSTALL_HINT = "run `make test`, it installs Debian's mosquitto/influxdb/victoria-metrics"


class ServerNotInstalledError(FileNotFoundError):
    """The server's binary is not on this machine."""


class ServerStartError(RuntimeError):
    """The server exited or did not become ready in time (message has the log tail)."""


class ServerHTTPError(RuntimeError):
    """An HTTP helper got an error status or an error in the response body."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


# --------------------------------------------------------------------------- ports, names


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1 (all held open while picking)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1 (bind port 0, read it back, release it)."""
    return free_ports(1)[0]


_name_counter = itertools.count(1)


def unique_name(prefix: str = "t") -> str:
    """Return a name unique within this process (e.g. a database on a shared server)."""
    return f"{prefix}_{os.getpid()}_{next(_name_counter)}"


# --------------------------------------------------------------------------- HTTP helper


def http_request(
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """Do one HTTP request with the stdlib; return ``(status, body)`` even for 4xx/5xx."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


# --------------------------------------------------------------------------- process base

_live: set[ServerProcess] = set()
_live_lock = threading.Lock()


@atexit.register
def _close_all() -> None:
    """Close every server still alive when the interpreter exits."""
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.close()


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _parent_death_signal() -> None:
    """In the child: get SIGTERM when the parent dies (Linux), so no orphan outlives pytest."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """Base class: one server subprocess with a temp workdir, readiness polling and cleanup.

    Subclasses set ``name`` and ``binary_candidates`` and implement ``_command()`` and
    ``_ready()``; they may override ``_prepare()`` (called once, before the first start),
    ``_after_first_start()`` and ``log_files()``.

    Note: the death signal is tied to the thread that calls ``start()``; start servers from
    the main thread (pytest fixtures do) or from a thread that outlives them.
    """

    name: ClassVar[str] = "server"
    binary_candidates: ClassVar[Sequence[str]] = ()
    env_strip_prefixes: ClassVar[Sequence[str]] = ()
    host: str  # set by subclasses: where the server listens (always 127.0.0.1)
    port: int  # its main port, kept across restarts
    url: str  # e.g. mqtt://127.0.0.1:1234 or http://127.0.0.1:1234

    def __init__(self, *, workdir: str | Path | None = None, startup_timeout: float = 30.0) -> None:
        """Pick the binary and the workdir; nothing is started yet."""
        self.binary = self.find_binary()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"heatrig-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.startup_timeout = startup_timeout
        self.output_path = self.workdir / f"{self.name}.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.last_startup_seconds: float | None = None
        self._prepared = False
        self._initialized = False
        self._closed = False

    # -- discovery -----------------------------------------------------------------------

    @classmethod
    def find_binary(cls) -> str:
        """Return the server binary's path or raise ServerNotInstalledError."""
        for candidate in cls.binary_candidates:
            path = shutil.which(candidate) if os.sep not in candidate else candidate
            if path and os.access(path, os.X_OK):
                return path
        raise ServerNotInstalledError(
            f"{cls.name}: none of {list(cls.binary_candidates)} found; {INSTALL_HINT}"
        )

    @classmethod
    def available(cls) -> bool:
        """True if the binary is installed."""
        try:
            cls.find_binary()
        except ServerNotInstalledError:
            return False
        return True

    # -- hooks ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Write config files, create data dirs (once, before the first start)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        """Return True once the server answers; may raise OSError while it does not."""
        raise NotImplementedError

    def _after_first_start(self) -> None:
        """One-time setup once the server first answers (e.g. create an admin user)."""

    def log_files(self) -> list[Path]:
        """Files whose tail explains a failure (server log, captured stdout/stderr)."""
        return [self.output_path]

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the subprocess is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """PID of the current subprocess, if any."""
        return self.proc.pid if self.proc is not None else None

    def start(self) -> Self:
        """Start the server (again, on the same ports and data) and wait until it is ready."""
        if self._closed:
            raise RuntimeError(f"{self.name}: closed, make a new instance")
        if self.running:
            raise RuntimeError(f"{self.name}: already running (pid {self.pid})")
        if not self._prepared:
            self._prepare()
            self._prepared = True
        self.starts += 1
        env = {
            k: v
            for k, v in os.environ.items()
            if not any(k.startswith(p) for p in self.env_strip_prefixes)
        }
        with open(self.output_path, "ab") as out:
            out.write(f"\n===== heatrig: start #{self.starts} =====\n".encode())
            out.flush()
            began = time.monotonic()
            self.proc = subprocess.Popen(
                self._command(),
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal goes to pytest, not to us
                preexec_fn=_parent_death_signal,  # only a prctl() call
            )
        with _live_lock:
            _live.add(self)
        try:
            self._wait_ready(began)
            if not self._initialized:
                self._after_first_start()
                self._initialized = True
        except BaseException:
            self.kill()
            raise
        self.last_startup_seconds = time.monotonic() - began
        return self

    def _wait_ready(self, began: float) -> None:
        deadline = began + self.startup_timeout
        last_error: Exception | None = None
        assert self.proc is not None
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {code} while starting\n{self.log_tail()}"
                )
            try:
                if self._ready():
                    return
            except OSError as exc:  # connection refused / reset / timeout: not up yet
                last_error = exc
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.name} not ready after {self.startup_timeout:.0f}s "
                    f"(last probe error: {last_error!r})\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop gracefully (SIGTERM), SIGKILL after ``timeout``; return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return self.kill()
        return self.proc.returncode

    def kill(self) -> int | None:
        """Crash the server: SIGKILL and reap it; return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def restart(self, *, crash: bool = False) -> Self:
        """Stop (or SIGKILL if ``crash``) and start again on the same ports and data."""
        if crash:
            self.kill()
        else:
            self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and delete its workdir (if this object created it)."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._closed = True
            with _live_lock:
                _live.discard(self)
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- diagnostics ---------------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        """Last ``lines`` lines of each log file, for error messages."""
        parts = []
        for path in self.log_files():
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError as exc:
                text = [f"<unreadable: {exc}>"]
            parts.append(f"--- tail of {path} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {getattr(self, 'url', '')} {state}>"


# --------------------------------------------------------------------------- Mosquitto


def _mqtt_connect_packet(client_id: str) -> bytes:
    """A minimal MQTT 3.1.1 CONNECT (clean session, keepalive 10 s)."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(cid).to_bytes(2, "big") + cid
    assert len(body) < 128  # single-byte remaining length
    return bytes([0x10, len(body)]) + body


class Mosquitto(ServerProcess):
    """Debian's Mosquitto 2.x broker, anonymous, no persistence, on a free loopback port."""

    name = "mosquitto"
    binary_candidates = ("/usr/sbin/mosquitto", "mosquitto")

    def __init__(self, *, workdir: str | Path | None = None, startup_timeout: float = 15.0) -> None:
        """Pick a free port and a temp dir; call ``start()`` to run it."""
        super().__init__(workdir=workdir, startup_timeout=startup_timeout)
        self.host = LOOPBACK
        self.port = free_port()
        self.url = f"mqtt://{self.host}:{self.port}"
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"

    def _prepare(self) -> None:
        # `user`: as root, Mosquitto 2 otherwise drops to user "mosquitto", which can't write
        # the log in our temp dir; as non-root it is ignored.
        user = _current_user()
        self.config_path.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n" + (f"user {user}\n" if user else "")
        )

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path)]

    def _ready(self) -> bool:
        """A real MQTT CONNECT must get CONNACK 'accepted'."""
        with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
            sock.sendall(_mqtt_connect_packet(f"heatrig-probe-{os.getpid()}"))
            ack = _recv_exactly(sock, 4)
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        if ack != b"\x20\x02\x00\x00":
            raise ServerStartError(f"mosquitto: unexpected CONNACK {ack!r}\n{self.log_tail()}")
        return True

    def log_files(self) -> list[Path]:
        return [self.log_path, self.output_path]


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("closed before a full reply")
        data += chunk
    return data


def _current_user() -> str | None:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return None


# --------------------------------------------------------------------------- InfluxDB 1.x


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


class InfluxDB1(ServerProcess):
    """Debian's InfluxDB 1.x ``influxd`` with every listener on 127.0.0.1.

    With ``auth=True`` HTTP auth is enabled and an admin user (``username``/``password``)
    is created on first start; the helpers then send those credentials.
    """

    name = "influxdb"
    binary_candidates = ("/usr/bin/influxd", "influxd")
    env_strip_prefixes = ("INFLUXDB_",)  # influxd 1.x lets INFLUXDB_* env vars override config

    def __init__(
        self,
        *,
        auth: bool = False,
        username: str = "admin",
        password: str = "heatrig-admin-pw",
        workdir: str | Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        """Pick free ports and a temp dir; call ``start()`` to run it."""
        super().__init__(workdir=workdir, startup_timeout=startup_timeout)
        self.host = LOOPBACK
        self.port, self.rpc_port = free_ports(2)
        self.url = f"http://{self.host}:{self.port}"
        self.auth = auth
        self.username = username
        self.password = password
        self.config_path = self.workdir / "influxdb.conf"

    def _prepare(self) -> None:
        for sub in ("meta", "data", "wal"):
            (self.workdir / sub).mkdir(exist_ok=True)
        off = _toml_str(f"{self.host}:0")  # disabled listeners: still loopback if enabled
        w = self.workdir
        self.config_path.write_text(
            f"""\
reporting-enabled = false
bind-address = {_toml_str(f"{self.host}:{self.rpc_port}")}

[meta]
  dir = {_toml_str(w / "meta")}
  logging-enabled = false

[data]
  dir = {_toml_str(w / "data")}
  wal-dir = {_toml_str(w / "wal")}
  wal-fsync-delay = "0s"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = {_toml_str(f"{self.host}:{self.port}")}
  auth-enabled = {"true" if self.auth else "false"}
  log-enabled = false
  write-tracing = false
  pprof-enabled = false
  unix-socket-enabled = false
  bind-socket = {_toml_str(w / "influxdb.sock")}

[ifql]
  enabled = false
  bind-address = {off}

[logging]
  level = "warn"
  suppress-logo = true

[continuous_queries]
  log-enabled = false

[[graphite]]
  enabled = false
  bind-address = {off}

[[collectd]]
  enabled = false
  bind-address = {off}

[[opentsdb]]
  enabled = false
  bind-address = {off}

[[udp]]
  enabled = false
  bind-address = {off}
"""
        )

    def _command(self) -> list[str]:
        return [self.binary, "-config", str(self.config_path)]

    def _ready(self) -> bool:
        status, _ = http_request("GET", f"{self.url}/ping", timeout=1.0)
        return status == 204

    def _after_first_start(self) -> None:
        if self.auth:  # with no user yet, 1.x accepts this one unauthenticated statement
            self.query(
                f"CREATE USER \"{self.username}\" WITH PASSWORD '{self.password}' "
                "WITH ALL PRIVILEGES",
                credentials=False,
            )

    # -- HTTP helpers --------------------------------------------------------------------

    def _auth_headers(self, credentials: bool | tuple[str, str]) -> dict[str, str]:
        if credentials is False or (credentials is True and not self.auth):
            return {}
        user, pw = (self.username, self.password) if credentials is True else credentials
        token = base64.b64encode(f"{user}:{pw}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def query(
        self,
        q: str,
        db: str | None = None,
        *,
        epoch: str | None = None,
        credentials: bool | tuple[str, str] = True,
        check: bool = True,
    ) -> dict[str, Any]:
        """Run InfluxQL via POST ``/query``; return the parsed JSON.

        ``credentials``: True = the admin user when ``auth``, False = none, or (user, pw).
        ``check`` raises ServerHTTPError on an HTTP error or an ``error`` in any result.
        """
        params = {"q": q}
        if db is not None:
            params["db"] = db
        if epoch is not None:
            params["epoch"] = epoch
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        headers.update(self._auth_headers(credentials))
        status, body = http_request(
            "POST",
            f"{self.url}/query",
            data=urllib.parse.urlencode(params).encode(),
            headers=headers,
        )
        text = body.decode(errors="replace")
        try:
            parsed: dict[str, Any] = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            parsed = {"error": text}
        if check:
            errors = [parsed.get("error")] + [r.get("error") for r in parsed.get("results", [])]
            errors = [e for e in errors if e]
            if status != 200 or errors:
                raise ServerHTTPError(f"influxdb query {q!r}: HTTP {status} {errors}", status, text)
        return parsed

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE`` (idempotent)."""
        self.query(f'CREATE DATABASE "{name}"')

    def write(
        self,
        lines: str | Iterable[str],
        db: str,
        *,
        precision: str = "ns",
        credentials: bool | tuple[str, str] = True,
    ) -> None:
        """POST line protocol to ``/write``; raise ServerHTTPError unless 204."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        query = urllib.parse.urlencode({"db": db, "precision": precision})
        status, resp = http_request(
            "POST",
            f"{self.url}/write?{query}",
            data=body.encode(),
            headers=self._auth_headers(credentials),
        )
        if status != 204:
            text = resp.decode(errors="replace")
            raise ServerHTTPError(f"influxdb write: HTTP {status} {text}", status, text)

    def count(self, measurement: str, db: str, field: str = "*") -> int:
        """Number of points in ``measurement`` (max over fields for ``*``)."""
        res = self.query(f'SELECT COUNT({field}) FROM "{measurement}"', db=db)
        series = res["results"][0].get("series")
        if not series:
            return 0
        return max(v for v in series[0]["values"][0][1:] if v is not None)


# --------------------------------------------------------------------------- VictoriaMetrics


class VictoriaMetrics(ServerProcess):
    """Debian's single-node VictoriaMetrics, HTTP on a free loopback port.

    Accepts InfluxDB line protocol on ``/write`` and ``/api/v2/write``; a field ``f`` of
    measurement ``m`` is stored as metric ``m_f``, and ``?db=`` becomes label ``db``.
    Quirks of 1.79: without ``precision=`` the timestamp unit is guessed from its size (1e9
    is read as seconds); samples more than 2 days in the future are dropped, yet the write
    still answers 204 (a warning goes to the log) -- as it does for unparsable lines; use
    ``rejected_rows()`` or count what was stored.
    """

    name = "victoria-metrics"
    binary_candidates = ("/usr/bin/victoria-metrics", "victoria-metrics")

    def __init__(
        self,
        *,
        retention: str = "100y",
        workdir: str | Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        """Pick a free port and a temp dir; ``retention`` allows old simulated timestamps."""
        super().__init__(workdir=workdir, startup_timeout=startup_timeout)
        self.host = LOOPBACK
        self.port = free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.retention = retention
        self.data_path = self.workdir / "data"

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.data_path}",
            f"-retentionPeriod={self.retention}",
            "-loggerLevel=WARN",  # INFO is chatty; WARN still logs rejected samples
            "-memory.allowedBytes=256MiB",
            "-search.latencyOffset=0s",  # default 30s hides just-written samples
            "-search.disableCache",  # tests write old timestamps after querying
        ]

    def _ready(self) -> bool:
        status, _ = http_request("GET", f"{self.url}/health", timeout=1.0)
        return status == 200

    # -- HTTP helpers --------------------------------------------------------------------

    def write(self, lines: str | Iterable[str], *, db: str | None = None) -> None:
        """POST InfluxDB line protocol to ``/write``; raise ServerHTTPError unless 204.

        A 204 does not mean every line was stored: see ``rejected_rows()``.
        """
        body = lines if isinstance(lines, str) else "\n".join(lines)
        url = f"{self.url}/write" + (f"?{urllib.parse.urlencode({'db': db})}" if db else "")
        status, resp = http_request("POST", url, data=body.encode())
        if status != 204:
            text = resp.decode(errors="replace")
            raise ServerHTTPError(f"victoria-metrics write: HTTP {status} {text}", status, text)

    def flush(self) -> None:
        """Make recently ingested samples searchable (``/internal/force_flush``)."""
        status, resp = http_request("GET", f"{self.url}/internal/force_flush")
        if status != 200:
            text = resp.decode(errors="replace")
            raise ServerHTTPError(f"victoria-metrics force_flush: HTTP {status}", status, text)

    def export(self, match: str = '{__name__!=""}') -> list[dict[str, Any]]:
        """Flush, then return ``/api/v1/export`` lines: one dict per series.

        Each has ``metric`` (labels incl. ``__name__``), ``values`` and ``timestamps`` (ms).
        """
        self.flush()
        # An explicit end: the default excludes the newest samples in 1.79.
        end = int(time.time()) + 3 * 86400
        query = urllib.parse.urlencode({"match[]": match, "start": "0", "end": str(end)})
        status, resp = http_request("GET", f"{self.url}/api/v1/export?{query}", timeout=30.0)
        text = resp.decode(errors="replace")
        if status != 200:
            raise ServerHTTPError(f"victoria-metrics export: HTTP {status} {text}", status, text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def export_count(self, match: str = '{__name__!=""}') -> int:
        """Number of stored samples matching ``match`` (after a flush)."""
        return sum(len(series["values"]) for series in self.export(match))

    def series_count(self, match: str = '{__name__!=""}') -> int:
        """Number of stored series matching ``match`` (after a flush)."""
        return len(self.export(match))

    def metrics(self) -> dict[str, float]:
        """VictoriaMetrics' own ``/metrics``, as ``{'name{labels}': value}``."""
        status, resp = http_request("GET", f"{self.url}/metrics")
        if status != 200:
            raise ServerHTTPError(f"victoria-metrics /metrics: HTTP {status}", status)
        out: dict[str, float] = {}
        for line in resp.decode(errors="replace").splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    def rejected_rows(self) -> int:
        """Rows dropped since start: unparsable line protocol plus out-of-range timestamps.

        VictoriaMetrics 1.79 answers 204 to a write even when it drops lines, so check this.
        Its ``/metrics`` page is cached for up to 1 s, so this first waits 1.1 s.
        """
        time.sleep(1.1)
        return int(
            sum(
                value
                for key, value in self.metrics().items()
                if key == 'vm_rows_invalid_total{type="influx"}'
                or key.startswith("vm_rows_ignored_total{")
            )
        )
