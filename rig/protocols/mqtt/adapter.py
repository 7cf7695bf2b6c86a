"""MQTT adapter of the live rig: telemetry, alarms, retained status and commands.

One paho-mqtt 2.x client (``CallbackAPIVersion.VERSION2``, MQTT 3.1.1) with its own network
thread (``loop_start``). The live runner owns the twin and calls, from its own thread:

* ``publish_telemetry(t, ts, values_by_device)`` (or ``publish_twin(twin)``) once per sensor
  period: one JSON message per device, and alarm raised/cleared messages;
* ``apply_pending(twin)`` at each slice boundary: applies the commands received since.

Payloads (topics in `rig.protocols.mqtt.topics`; ``t`` is simulated seconds, ``ts`` the
site's ISO time):

* status, retained, also the last will: ``online`` / ``offline`` (plain text);
* telemetry: ``{"t": 12.0, "ts": "2026-01-15T00:00:12+00:00", "seq": 12,
  "values": {"cdu1.supply_temp": 40.02, "cdu1.leak": 0, ...}}`` -- ``seq`` counts
  messages per device from 0, so a gap is a lost message; NaN or infinite values are
  ``null``; bool and int points are JSON integers (``0``/``1`` for bools);
* alarm: ``{"point": id, "state": "raised"|"cleared", "t": ..., "ts": ...}``;
* command (to ``.../<device>/cmd/<point_id>``): ``{"value": v}`` with optional
  ``"id": str|int`` echoed in the reply, or a bare JSON number or ``true``/``false``;
* reply: ``{"point": id, "accepted": bool, "reason": str|null, "code": 2|3|null,
  "value": v|null, "t": sim s|null, "id": ...}``. Refusals are answered at once with the
  last known sim time; accepted commands are answered when applied, with the sim time.

Commands are validated exactly as Modbus writes are (`twin.points.Point.coerce`, codes of
`twin.errors.WriteRefused`): the payload size is checked before anything is parsed, then
the point must exist, belong to the topic's device and be writable, then the value must be
a finite number or bool in range. A refused command changes nothing. A command the broker
replays from its retained store on (re)subscribe is refused: it would repeat on every
reconnect (a retained command sent while the rig is connected arrives as a live one).

While the broker is unreachable, outbound messages wait in a bounded buffer (the oldest are
dropped and counted); paho reconnects with exponential backoff and the commands topic is
re-subscribed on every connect. No exception in a callback stops the network thread.
Credentials come only from environment variables and are never logged.

Protocol faults (`rig.assess.faults`) go through ``inject(kind, target=..., **params)``, which
applies the fault at once and returns the function that clears it. ``target`` is ``mqtt``
(every device) or a device name (that device's telemetry). The telemetry faults act on
telemetry messages only (alarms, replies and status are not touched), in this order:

* ``mqtt_dropout`` -- the message is not published (counted ``suppressed``); ``seq`` still
  advances, so subscribers see the gap;
* ``mqtt_reorder`` -- a device's messages are swapped in pairs (seq 1, 0, 3, 2, ...); an
  unpaired message waits for the next one or for the clear;
* ``mqtt_duplicate`` -- the message is published twice (same payload, same seq);
* ``mqtt_delay(delay)`` -- the message is held and published ``delay`` wall seconds later by
  a small scheduler thread (the caller never sleeps); when the fault clears, that thread
  publishes the backlog at once, in order, and a device's new messages queue behind its
  backlog until it is gone (a backlog larger than paho's queue, twice ``queue_bound``,
  loses the excess, counted as dropped).

``broker_loss`` (target ``mqtt`` only) closes the socket without DISCONNECT, so the broker
publishes the retained ``offline`` will, and stops the network thread: no reconnect until
the fault is cleared, then it connects again as after a real outage (``online``, command
topic subscribed, buffer flushed). Meanwhile publishes are buffered and dropped exactly as
in an outage. Messages still held by a fault when the adapter closes count as dropped.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import math
import os
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from rig.protocols.mqtt import topics
from twin.errors import PointError, ServiceError, WriteRefused
from twin.faults import FaultTargetError
from twin.points import DType, Kind, PointTable

if TYPE_CHECKING:
    from twin.plant import Twin
    from twin.site import Site

log = logging.getLogger(__name__)

USERNAME_ENV = "HEATRIG_MQTT_USERNAME"
PASSWORD_ENV = "HEATRIG_MQTT_PASSWORD"
ONLINE = b"online"
OFFLINE = b"offline"
COMMAND_KEYS = frozenset({"value", "id"})
MAX_ID_CHARS = 128
ECHO_STR_CHARS = 64
MAX_PAHO_QUEUE = 65_000  # paho message ids are 16-bit: more QoS 1 messages would collide
FAULT_KINDS = ("mqtt_dropout", "mqtt_delay", "mqtt_duplicate", "mqtt_reorder", "broker_loss")
ALL_DEVICES = "mqtt"  # the fault target meaning every device


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """How the adapter connects and what it publishes.

    ``url`` is ``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` (TLS, server certificate
    checked against ``ca_file`` or the system store). Username and password are read from
    the environment variables named here when connecting; they are never stored or logged.
    """

    url: str = "mqtt://127.0.0.1:1883"
    site: str = "site"
    prefix: str = "heatrig"
    qos: int = 1
    client_id: str | None = None  # default heatrig-<site>-<pid>
    ca_file: str | None = None
    keepalive_s: int = 30
    queue_bound: int = 1000  # outbound messages held while disconnected
    command_queue_bound: int = 256  # accepted commands waiting for apply_pending
    max_payload_bytes: int = 64 * 1024  # bigger command payloads are refused unparsed
    max_inflight: int = 100  # QoS 1 messages awaiting PUBACK
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    username_env: str = USERNAME_ENV
    password_env: str = PASSWORD_ENV

    def __post_init__(self) -> None:
        if self.qos not in (0, 1):
            raise ValueError(f"mqtt qos must be 0 or 1, not {self.qos!r}")
        for name in ("queue_bound", "command_queue_bound", "max_payload_bytes", "keepalive_s",
                     "max_inflight"):
            if getattr(self, name) < 1:
                raise ValueError(f"mqtt {name} must be >= 1")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("mqtt reconnect delays need 0 < min <= max")
        parse_url(self.url)

    @classmethod
    def for_site(cls, site: Site, url: str, **overrides: Any) -> MqttConfig:
        """Configuration for ``site``: its name and ``protocols.mqtt_prefix``."""
        return cls(url=url, site=site.name, prefix=site.protocols.mqtt_prefix, **overrides)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Parsed broker URL."""

    host: str
    port: int
    tls: bool


def parse_url(url: str) -> BrokerAddress:
    """Parse ``mqtt://host[:port]`` or ``mqtts://host[:port]``; raise ValueError.

    Credentials in the URL are refused: they belong in the environment.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"mqtt url {url!r}: scheme must be mqtt:// or mqtts://")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"mqtt url: no credentials in the url, use ${USERNAME_ENV} and "
                         f"${PASSWORD_ENV}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"mqtt url {url!r}: only scheme, host and port are allowed")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"mqtt url {url!r}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"mqtt url {url!r}: no host")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, port or (8883 if tls else 1883), tls)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The answer to one command (also what ``apply_pending`` returns).

    ``value`` is the applied value (SI, the point's unit) when accepted, else what was
    sent if it is a plain scalar; ``t`` the simulated time (s) of the decision.
    """

    point: str
    device: str
    accepted: bool
    reason: str | None
    code: int | None
    value: Any
    t: float | None
    request_id: str | int | None = None

    def to_json(self) -> bytes:
        """The reply payload."""
        body: dict[str, Any] = {"point": self.point, "accepted": self.accepted,
                                "reason": self.reason, "code": self.code,
                                "value": self.value, "t": self.t}
        if self.request_id is not None:
            body["id"] = self.request_id
        return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class _Pending:
    point: str
    device: str
    value: float
    request_id: str | int | None


class _Refused(Exception):
    """A command refused before it reached the point (carries the echo value)."""

    def __init__(self, refusal: WriteRefused, value: Any = None,
                 request_id: str | int | None = None) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal
        self.value = value
        self.request_id = request_id


def validate_command(points: PointTable, device: str, point_id: str, payload: bytes,
                     *, max_bytes: int = 64 * 1024) -> tuple[float, str | int | None]:
    """Check one command as a Modbus write is checked; return ``(value, request id)``.

    Raises WriteRefused (code 2: no such writable point of this device, 3: the payload or
    value is not acceptable). The payload is not parsed when it exceeds ``max_bytes``.
    """
    try:
        return _validate(points, device, point_id, payload, max_bytes)
    except _Refused as exc:
        raise exc.refusal from None


def _validate(points: PointTable, device: str, point_id: str, payload: bytes,
              max_bytes: int) -> tuple[float, str | int | None]:
    value_error = WriteRefused.ILLEGAL_VALUE
    if len(payload) > max_bytes:
        raise _Refused(WriteRefused(point_id, f"payload of {len(payload)} bytes exceeds the "
                                              f"limit of {max_bytes} bytes", value_error))
    if point_id not in points:
        raise _Refused(WriteRefused(point_id, "unknown point", WriteRefused.ILLEGAL_ADDRESS))
    point = points[point_id]
    if point.device != device:
        raise _Refused(WriteRefused(point_id, f"point belongs to device {point.device!r}, "
                                              f"not {device!r}", WriteRefused.ILLEGAL_ADDRESS))
    if not point.writable:
        raise _Refused(WriteRefused(point_id, f"point is a {point.kind.value}, not writable",
                                    WriteRefused.ILLEGAL_ADDRESS))
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _Refused(WriteRefused(point_id, f"payload is not JSON: {_short(exc)}",
                                    value_error)) from None
    request_id: str | int | None = None
    if isinstance(document, dict):
        unknown = sorted(set(document) - COMMAND_KEYS)
        if unknown:
            raise _Refused(WriteRefused(point_id, f"unknown key(s) {', '.join(unknown)}; "
                                                  "expected {\"value\": v[, \"id\": ...]}",
                                        value_error))
        request_id = document.get("id")
        if request_id is not None and not (
                (isinstance(request_id, str) and len(request_id) <= MAX_ID_CHARS)
                or (isinstance(request_id, int) and not isinstance(request_id, bool)
                    and abs(request_id) < 2**53)):
            raise _Refused(WriteRefused(point_id, f"id must be a string of at most "
                                                  f"{MAX_ID_CHARS} characters or an integer",
                                        value_error))
        if "value" not in document:
            raise _Refused(WriteRefused(point_id, "object has no \"value\"", value_error),
                           None, request_id)
        value = document["value"]
    else:
        value = document
    try:
        return point.coerce(value), request_id
    except WriteRefused as exc:
        raise _Refused(exc, _echo(value), request_id) from None
    except OverflowError:  # an integer too large for a float
        raise _Refused(WriteRefused(point_id, "value out of range", value_error),
                       None, request_id) from None


def _echo(value: Any) -> Any:
    """What of a refused value is safe to send back in JSON."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:ECHO_STR_CHARS]
    return None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def values_by_device(points: PointTable, values: Sequence[float],
                     kinds: frozenset[Kind] | None = None) -> dict[str, dict[str, float]]:
    """Group table-ordered ``values`` (e.g. ``twin.measured_values()``) by device."""
    out: dict[str, dict[str, float]] = {}
    for point, value in zip(points, values, strict=True):
        if kinds is None or point.kind in kinds:
            out.setdefault(point.device, {})[point.id] = value
    return out


_F = TypeVar("_F", bound=Callable[..., None])


class _QuietDisconnected(logging.Filter):
    """Drop paho's 'Client is not connected' error: it follows every disconnect, also a
    clean one; the adapter logs lost connections itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_paho_log = logging.getLogger(__name__ + ".paho")
_paho_log.addFilter(_QuietDisconnected())


class MqttAdapter:
    """The rig's MQTT client for one site (see the module docstring for payloads).

    ``points`` is the twin's point table: it gives which points are alarms, bools or
    integers, and validates commands (metadata only; the twin is touched only by
    ``apply_pending`` on the caller's thread).
    """

    def __init__(self, config: MqttConfig, points: PointTable) -> None:
        self.config = config
        self.points = points
        self.address = parse_url(config.url)
        self.client_id = config.client_id or f"heatrig-{config.site}-{os.getpid()}"
        p, s = config.prefix, config.site
        self.status_topic = topics.status(p, s)
        self.command_filter = topics.command_filter(p, s)
        devices = points.devices()
        self._telemetry_topic = {d: topics.telemetry(p, s, d) for d in devices}
        self._alarm_topic = {d: topics.alarm(p, s, d) for d in devices}
        self._reply_topic: dict[str, str] = {d: topics.reply(p, s, d) for d in devices}
        self._int_ids = frozenset(pt.id for pt in points if pt.dtype is not DType.FLOAT)
        self._alarm_ids: dict[str, list[str]] = {}
        for pt in points.of_kind(Kind.ALARM):
            self._alarm_ids.setdefault(pt.device, []).append(pt.id)
        self._alarm_active: dict[str, bool] = {}
        self._seq: dict[str, int] = {}
        self._sim_time: float | None = None
        self._commands: queue.Queue[_Pending] = queue.Queue(config.command_queue_bound)
        self._out_lock = threading.Lock()
        self._buffer: deque[tuple[str, bytes, bool]] = deque()
        self._connected = False
        self._closing = False
        self._started = False
        self._connected_event = threading.Event()
        self._last_error: str | None = None
        self._stats_lock = threading.Lock()
        self._stats = {"sent": 0, "published": 0, "dropped": 0, "telemetry": 0, "alarms": 0,
                       "commands_accepted": 0, "commands_refused": 0, "commands_applied": 0,
                       "connects": 0, "reconnects": 0, "disconnects": 0, "callback_errors": 0,
                       "suppressed": 0, "delayed": 0, "duplicated": 0, "reordered": 0,
                       "broker_losses": 0}
        # protocol faults: the active ones (replaced, never mutated), messages they hold
        self._faults: tuple[_Fault, ...] = ()
        self._reorder_held: dict[str, tuple[str, bytes]] = {}  # device -> (topic, payload)
        self._delayed: list[tuple[float, int, str, str, bytes]] = []  # heap: due, n, dev, ...
        self._delayed_n = 0
        self._delayed_by_device: dict[str, int] = {}  # messages in the heap per device
        self._delay_cond = threading.Condition()
        self._scheduler: threading.Thread | None = None
        self._lost = False  # broker_loss active (guarded by _out_lock)
        self._loss_stopped = False  # the network thread was stopped for it
        self._client = self._make_client()

    # -- lifecycle ----------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        cfg = self.config
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv311, clean_session=True)
        client.suppress_exceptions = True  # second net under our own wrappers
        client.enable_logger(_paho_log)
        client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # floats work
        client.max_inflight_messages_set(cfg.max_inflight)
        # QoS 1 messages paho holds (in flight or waiting for a window); twice the buffer so
        # that a flush after a reconnect fits.
        client.max_queued_messages_set(min(2 * cfg.queue_bound, MAX_PAHO_QUEUE))
        username = os.environ.get(cfg.username_env)
        if username:
            client.username_pw_set(username, os.environ.get(cfg.password_env))
        if self.address.tls:
            if cfg.ca_file is not None and not os.path.isfile(cfg.ca_file):
                raise ValueError(f"mqtt ca_file {cfg.ca_file!r} is not a file")
            client.tls_set(ca_certs=cfg.ca_file)
        client.on_connect = self._guard(self._on_connect)
        client.on_subscribe = self._guard(self._on_subscribe)
        client.on_connect_fail = self._guard(self._on_connect_fail)
        client.on_disconnect = self._guard(self._on_disconnect)
        client.on_message = self._guard(self._on_message)
        client.on_publish = self._guard(self._on_publish)
        return client

    def start(self, wait_s: float = 0.0) -> MqttAdapter:
        """Start connecting in the background; with ``wait_s`` > 0 wait for the first connect.

        Raises ServiceError (after stopping the client) when not connected within ``wait_s``.
        """
        if self._started:
            raise RuntimeError("mqtt adapter already started")
        self._started = True
        a = self.address
        log.info("mqtt: connecting to %s:%d%s as %s (prefix %s, site %s)", a.host, a.port,
                 " with TLS" if a.tls else "", self.client_id, self.config.prefix,
                 self.config.site)
        self._client.connect_async(a.host, a.port, keepalive=self.config.keepalive_s)
        self._client.loop_start()
        if wait_s > 0 and not self.wait_connected(wait_s):
            reason = self._last_error or "no answer"
            self.close(timeout=0.5)
            raise ServiceError(f"MQTT broker {a.host}:{a.port} not reachable within "
                               f"{wait_s:g} s: {reason}")
        return self

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected and subscribed to commands (True) or ``timeout`` s pass."""
        return self._connected_event.wait(timeout)

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the connection."""
        return self._connected

    def close(self, timeout: float = 5.0) -> None:
        """Refuse unapplied commands, publish ``offline``, disconnect, stop the thread."""
        if self._closing:
            return
        for result in self._refuse_pending("rig stopped before the command was applied"):
            self._publish(self._reply(result.device), result.to_json())
        self._closing = True
        if self._started:
            info = None
            if self._connected:
                info = self._client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
                self._count("sent")
            if info is not None:
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError) as exc:
                    log.warning("mqtt: offline status not confirmed: %s", exc)
            self._client.disconnect()
            self._client.loop_stop()
        with self._out_lock:
            self._connected = False
            if self._buffer:
                self._count("dropped", len(self._buffer))
                self._buffer.clear()
        self._connected_event.clear()
        self._stop_scheduler()
        log.info("mqtt: closed (%s)", self.stats())

    def __enter__(self) -> MqttAdapter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Counters: sent (handed to paho, status included), published (confirmed: PUBACK at
        QoS 1, written at QoS 0), dropped,
        queued (buffered now), telemetry and alarm messages, commands accepted, refused and
        applied, connects, reconnects, disconnects, callback errors, and ``connected``.

        Fault effects: ``suppressed`` (telemetry not published, mqtt_dropout), ``delayed``,
        ``duplicated`` (extra copies), ``reordered`` (pairs swapped), ``broker_losses``,
        ``held`` (messages a fault holds now) and ``faults`` (active ones, kind@target)."""
        with self._stats_lock:
            out: dict[str, Any] = dict(self._stats)
        out["queued"] = len(self._buffer)
        out["connected"] = self._connected
        with self._delay_cond:
            out["held"] = len(self._delayed) + len(self._reorder_held)
        out["faults"] = [str(f) for f in self._faults]
        return out

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n

    # -- telemetry and alarms (caller's thread) ------------------------------------------

    def publish_telemetry(self, sim_time: float, clock_iso: str,
                          values_by_device: Mapping[str, Mapping[str, float]]) -> int:
        """Publish one telemetry message per device, and alarm changes; return messages.

        ``values_by_device`` maps device -> {point_id: value} (SI units). Alarm points among
        the values are compared with their previous values (an alarm not seen before
        counts as cleared) and each change is published on the device's alarm topic.
        """
        self._sim_time = sim_time
        sent = 0
        int_ids = self._int_ids
        isfinite = math.isfinite
        for device, values in values_by_device.items():
            encoded: dict[str, float | int | None] = {}
            for pid, value in values.items():
                if value is None:
                    encoded[pid] = None
                    continue
                number = float(value)
                if not isfinite(number):
                    encoded[pid] = None
                elif pid in int_ids and number.is_integer():
                    encoded[pid] = int(number)
                else:
                    encoded[pid] = number
            seq = self._seq.get(device, 0)
            self._seq[device] = seq + 1
            payload = json.dumps({"t": sim_time, "ts": clock_iso, "seq": seq,
                                  "values": encoded}, separators=(",", ":")).encode()
            if self._faults or self._delayed_by_device:  # a fault, or a delayed backlog
                self._faulty_telemetry(device, self._telemetry(device), payload)
            else:
                self._publish(self._telemetry(device), payload)
            sent += 1
            for pid in self._alarm_ids.get(device, ()):
                value = encoded.get(pid)
                if value is None:
                    continue
                active = value >= 0.5
                if active != self._alarm_active.get(pid, False):
                    self._alarm_active[pid] = active
                    state = "raised" if active else "cleared"
                    body = {"point": pid, "state": state, "t": sim_time, "ts": clock_iso}
                    self._publish(self._alarm(device), json.dumps(body).encode())
                    log.info("mqtt: alarm %s %s at t=%g s", pid, state, sim_time)
                    sent += 1
        self._count("telemetry", len(values_by_device))
        self._count("alarms", sent - len(values_by_device))
        return sent

    def publish_twin(self, twin: Twin) -> int:
        """Publish the twin's measured values of every point now (see publish_telemetry)."""
        values = values_by_device(self.points, twin.measured_values().tolist())
        return self.publish_telemetry(twin.now, twin.clock_time().isoformat(), values)

    def _telemetry(self, device: str) -> str:
        topic = self._telemetry_topic.get(device)
        if topic is None:
            topic = self._telemetry_topic[device] = topics.telemetry(
                self.config.prefix, self.config.site, device)
        return topic

    def _alarm(self, device: str) -> str:
        topic = self._alarm_topic.get(device)
        if topic is None:
            topic = self._alarm_topic[device] = topics.alarm(
                self.config.prefix, self.config.site, device)
        return topic

    def _reply(self, device: str) -> str:
        topic = self._reply_topic.get(device)
        if topic is None:
            topic = topics.reply(self.config.prefix, self.config.site, device)
        return topic

    # -- protocol faults ----------------------------------------------------------------

    def inject(self, kind: str, *, target: str = ALL_DEVICES,
               **params: Any) -> Callable[[], None]:
        """Apply a protocol fault now (see the module docstring); returns its clear function.

        Call from the runner's thread (the one publishing telemetry). Raises
        FaultTargetError for an unknown kind or target, ValueError for parameters.
        Clearing twice does nothing.
        """
        if kind not in FAULT_KINDS:
            raise FaultTargetError(f"mqtt: unknown fault kind {kind!r}; the MQTT adapter "
                                   f"takes {', '.join(FAULT_KINDS)}")
        fault = _Fault(kind, target, self._fault_devices(kind, target),
                       _fault_delay(kind, params))
        self._faults = (*self._faults, fault)
        log.warning("mqtt: fault %s injected", fault)
        if kind == "mqtt_delay":
            self._start_scheduler()
        elif kind == "broker_loss":
            self._lose_broker()

        def clear() -> None:
            if fault not in self._faults:
                return
            self._faults = tuple(f for f in self._faults if f is not fault)
            log.warning("mqtt: fault %s cleared", fault)
            if kind == "mqtt_reorder":
                self._release_reordered()
            elif kind == "mqtt_delay":
                self._release_delayed()
            elif kind == "broker_loss" and not self._active("broker_loss"):
                self._restore_broker()

        return clear

    def _fault_devices(self, kind: str, target: str) -> frozenset[str] | None:
        if target == ALL_DEVICES:
            return None
        if kind == "broker_loss":
            raise FaultTargetError(f"{kind}: target must be {ALL_DEVICES!r} (the connection "
                                   f"is shared by every device), not {target!r}")
        if target not in self._telemetry_topic:
            raise FaultTargetError(
                f"{kind}: unknown target {target!r}; expected {ALL_DEVICES!r} or a device "
                f"({', '.join(sorted(self._telemetry_topic))})")
        return frozenset({target})

    def _active(self, kind: str, device: str | None = None) -> _Fault | None:
        """The most recent active fault of ``kind`` covering ``device`` (None: any)."""
        for fault in reversed(self._faults):
            if fault.kind == kind and (device is None or fault.covers(device)):
                return fault
        return None

    def _faulty_telemetry(self, device: str, topic: str, payload: bytes) -> None:
        """Publish one telemetry message through the active faults (caller's thread)."""
        if self._active("mqtt_dropout", device):
            self._count("suppressed")
            return
        if self._active("mqtt_reorder", device):
            with self._delay_cond:
                held = self._reorder_held.pop(device, None)
                if held is None:
                    self._reorder_held[device] = (topic, payload)
                    return
            self._count("reordered")
            self._after_reorder(device, topic, payload)
            self._after_reorder(device, *held)
            return
        self._after_reorder(device, topic, payload)

    def _after_reorder(self, device: str, topic: str, payload: bytes) -> None:
        """Duplicate and delay one message, then publish it (or leave it to the scheduler)."""
        copies = 1
        if self._active("mqtt_duplicate", device):
            copies = 2
            self._count("duplicated")
        delays = [f.delay for f in self._faults if f.kind == "mqtt_delay" and f.covers(device)]
        due = time.monotonic() + max(delays, default=0.0)
        with self._delay_cond:
            queued = bool(delays) or self._delayed_by_device.get(device, 0) > 0
            if queued:  # delayed, or behind the device's backlog
                for _ in range(copies):
                    self._delayed_n += 1
                    heapq.heappush(self._delayed, (due, self._delayed_n, device, topic, payload))
                self._delayed_by_device[device] = self._delayed_by_device.get(device, 0) + copies
                self._delay_cond.notify()
        if delays:
            self._count("delayed", copies)
        if not queued:
            for _ in range(copies):
                self._publish(topic, payload)

    def _release_reordered(self) -> None:
        """Publish the unpaired messages of devices no longer reordered."""
        with self._delay_cond:
            free = [d for d in self._reorder_held if not self._active("mqtt_reorder", d)]
            released = [(d, *self._reorder_held.pop(d)) for d in free]
        for device, topic, payload in released:
            self._after_reorder(device, topic, payload)

    def _release_delayed(self) -> None:
        """Make what is held for devices no longer delayed due now (the scheduler sends it)."""
        now = time.monotonic()
        with self._delay_cond:
            self._delayed = [
                (min(due, now), n, device, topic, payload) if not self._active(
                    "mqtt_delay", device) else (due, n, device, topic, payload)
                for due, n, device, topic, payload in self._delayed]
            heapq.heapify(self._delayed)
            self._delay_cond.notify()

    def _start_scheduler(self) -> None:
        if self._scheduler is not None:
            return
        self._scheduler = threading.Thread(target=self._run_scheduler, daemon=True,
                                           name=f"heatrig-mqtt-delay-{self.config.site}")
        self._scheduler.start()

    def _stop_scheduler(self) -> None:
        with self._delay_cond:
            held = len(self._delayed) + len(self._reorder_held)
            self._delayed.clear()
            self._delayed_by_device.clear()
            self._reorder_held.clear()
            self._delay_cond.notify()
        if held:
            self._count("dropped", held)
        thread, self._scheduler = self._scheduler, None
        if thread is not None:
            thread.join(5.0)

    def _run_scheduler(self) -> None:
        """Publish delayed messages when due (the mqtt_delay thread).

        A due batch is published outside the lock; its messages count as the device's
        backlog until sent, so that a new message cannot overtake them.
        """
        batch: list[tuple[str, str, bytes]] = []
        while True:
            with self._delay_cond:
                for device, _, _ in batch:
                    left = self._delayed_by_device.get(device, 0) - 1
                    if left > 0:
                        self._delayed_by_device[device] = left
                    else:
                        self._delayed_by_device.pop(device, None)
                batch = []
                while not self._closing:
                    now = time.monotonic()
                    if self._delayed and self._delayed[0][0] <= now:
                        break
                    self._delay_cond.wait(self._delayed[0][0] - now if self._delayed else None)
                if self._closing:
                    return
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, device, topic, payload = heapq.heappop(self._delayed)
                    batch.append((device, topic, payload))
            for _, topic, payload in batch:
                try:
                    self._publish(topic, payload)
                except Exception:
                    log.exception("mqtt: delayed message on %s not published", topic)

    def _lose_broker(self) -> None:
        """Drop the connection without DISCONNECT (the broker sends the will); see
        ``_on_disconnect`` for how the network thread is kept from reconnecting."""
        with self._out_lock:
            was = self._connected
            self._connected = False
            self._lost = True
        self._connected_event.clear()
        self._count("broker_losses")
        if was:
            self._count("disconnects")
        self._drop_socket()

    def _drop_socket(self) -> None:
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # paho sees the loss; no DISCONNECT sent

    def _restore_broker(self) -> None:
        """End a broker_loss: start the network thread again if it was stopped."""
        with self._out_lock:
            self._lost = False
            restart, self._loss_stopped = self._loss_stopped, False
        if restart and not self._closing:
            self._client.loop_stop()  # joins the old thread if it is still on its way out
            a = self.address
            self._client.connect_async(a.host, a.port, keepalive=self.config.keepalive_s)
            self._client.loop_start()
            log.info("mqtt: reconnecting to %s:%d after broker_loss", a.host, a.port)

    # -- commands -----------------------------------------------------------------------

    def apply_pending(self, twin: Twin) -> list[CommandResult]:
        """Apply the commands accepted since the last call to ``twin`` (caller's thread).

        Each is written with ``twin.write(point, value, source="mqtt")`` and answered on
        the reply topic with the twin's time; the results are returned in arrival order.
        """
        results: list[CommandResult] = []
        self._sim_time = twin.now
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
            try:
                value = twin.write(cmd.point, cmd.value, source="mqtt")
                result = CommandResult(cmd.point, cmd.device, True, None, None, value,
                                       twin.now, cmd.request_id)
                self._count("commands_applied")
            except (WriteRefused, PointError) as exc:  # the table changed under us
                reason = exc.reason if isinstance(exc, WriteRefused) else str(exc)
                code = exc.code if isinstance(exc, WriteRefused) else WriteRefused.ILLEGAL_ADDRESS
                result = CommandResult(cmd.point, cmd.device, False, reason, code, cmd.value,
                                       twin.now, cmd.request_id)
                self._count("commands_refused")
            self._publish(self._reply(cmd.device), result.to_json())
            results.append(result)
        return results

    def _refuse_pending(self, reason: str) -> list[CommandResult]:
        results = []
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return results
            self._count("commands_refused")
            results.append(CommandResult(cmd.point, cmd.device, False, reason,
                                         WriteRefused.ILLEGAL_VALUE, cmd.value, self._sim_time,
                                         cmd.request_id))

    def _handle_command(self, topic: str, payload: bytes, retained: bool) -> None:
        """Validate one command message (network thread); queue it or refuse it."""
        parsed = topics.parse_command(self.config.prefix, self.config.site, topic)
        if parsed is None:
            log.warning("mqtt: ignored message on %s (not a command topic)", topic[:200])
            self._count("commands_refused")
            return
        device, point_id = parsed
        try:
            if retained:
                raise _Refused(WriteRefused(point_id, "retained commands are not accepted "
                                                      "(they replay on every connect)",
                                            WriteRefused.ILLEGAL_VALUE))
            value, request_id = _validate(self.points, device, point_id, payload,
                                          self.config.max_payload_bytes)
        except _Refused as exc:
            self._refuse(device, point_id, exc.refusal, exc.value, exc.request_id)
            return
        try:
            self._commands.put_nowait(_Pending(point_id, device, value, request_id))
        except queue.Full:
            self._refuse(device, point_id,
                         WriteRefused(point_id, "command queue full, try again",
                                      WriteRefused.ILLEGAL_VALUE), value, request_id)
            return
        self._count("commands_accepted")

    def _refuse(self, device: str, point_id: str, refusal: WriteRefused, value: Any,
                request_id: str | int | None) -> None:
        self._count("commands_refused")
        log.info("mqtt: command refused: %s", _short(refusal))
        result = CommandResult(point_id[:200], device, False, refusal.reason, refusal.code,
                               value, self._sim_time, request_id)
        self._publish(self._reply(device), result.to_json())

    # -- outbound path ------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Hand a message to paho, or buffer it (bounded) while not connected."""
        with self._out_lock:
            if not self._connected or self._buffer:  # buffer non-empty: a flush is running
                self._hold(topic, payload, retain)
                return
        self._send(topic, payload, retain)

    def _hold(self, topic: str, payload: bytes, retain: bool) -> None:
        """Append to the buffer (caller holds ``_out_lock``), dropping the oldest when full."""
        if len(self._buffer) >= self.config.queue_bound:
            self._buffer.popleft()
            self._count("dropped")
        self._buffer.append((topic, payload, retain))

    def _send(self, topic: str, payload: bytes, retain: bool, qos: int | None = None) -> bool:
        """Publish through paho; False when the connection turned out to be gone."""
        qos = self.config.qos if qos is None else qos
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        rc = info.rc
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._count("sent")
        elif rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0:
            self._count("sent")  # paho keeps QoS 1 messages and sends them on reconnect
            return False
        elif rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            with self._out_lock:
                self._hold(topic, payload, retain)
            return False
        else:
            self._count("dropped")
            log.debug("mqtt: dropped message on %s: %s", topic, paho.error_string(rc))
        return True

    def _flush(self) -> None:
        """Send what was buffered while disconnected, oldest first (network thread)."""
        flushed = 0
        while True:
            with self._out_lock:
                if not self._buffer or not self._connected:
                    break
                topic, payload, retain = self._buffer.popleft()
            flushed += 1
            if not self._send(topic, payload, retain):
                break  # lost again; on_disconnect follows, the next connect flushes
        if flushed:
            log.info("mqtt: sent %d message(s) held while disconnected", flushed)

    # -- paho callbacks (network thread) ------------------------------------------------

    def _guard(self, fn: _F) -> _F:
        """Wrap a callback so that no exception reaches paho's network loop."""
        def guarded(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                self._count("callback_errors")
                log.exception("mqtt: error in %s (the network loop continues)", fn.__name__)
        guarded.__name__ = fn.__name__
        return guarded  # type: ignore[return-value]

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any,
                    reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._last_error = f"connection refused: {reason_code}"
            log.error("mqtt: broker refused the connection: %s", reason_code)
            return
        if self._lost:  # a reconnect that was under way when broker_loss began
            self._drop_socket()
            return
        with self._stats_lock:
            self._stats["connects"] += 1
            if self._stats["connects"] > 1:
                self._stats["reconnects"] += 1
        self._last_error = None
        client.subscribe(self.command_filter, qos=self.config.qos)
        self._send(self.status_topic, ONLINE, retain=True, qos=1)
        with self._out_lock:
            self._connected = True
        log.info("mqtt: connected to %s:%d, subscribed to %s", self.address.host,
                 self.address.port, self.command_filter)
        self._flush()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int,
                      reason_codes: Any, properties: Any) -> None:
        """Commands can arrive from now on: only then is the adapter ready."""
        self._connected_event.set()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._last_error = "cannot connect (refused or unreachable)"
        log.debug("mqtt: connect to %s:%d failed, retrying", self.address.host,
                  self.address.port)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                       reason_code: Any, properties: Any) -> None:
        with self._out_lock:
            was = self._connected
            self._connected = False
            lost = self._lost and not self._closing
            if lost:
                self._loss_stopped = True
        self._connected_event.clear()
        if was:
            self._count("disconnects")
        if lost:
            client.loop_stop()  # on the network thread: it ends instead of reconnecting
            log.warning("mqtt: broker_loss: disconnected, no reconnect until cleared")
        elif self._closing:
            log.debug("mqtt: disconnected")
        elif was:
            log.warning("mqtt: connection lost (%s); reconnecting with backoff", reason_code)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        self._count("published")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._handle_command(message.topic, message.payload, bool(message.retain))


@dataclass(frozen=True, eq=False, slots=True)
class _Fault:
    """One active protocol fault; ``devices`` None covers every device."""

    kind: str
    target: str
    devices: frozenset[str] | None
    delay: float = 0.0

    def covers(self, device: str) -> bool:
        return self.devices is None or device in self.devices

    def __str__(self) -> str:
        return f"{self.kind}@{self.target}"


def _fault_delay(kind: str, params: Mapping[str, Any]) -> float:
    """Check a fault's parameters; only mqtt_delay takes one, ``delay`` (s, > 0)."""
    extra = sorted(set(params) - ({"delay"} if kind == "mqtt_delay" else set()))
    if extra:
        raise ValueError(f"{kind}: unexpected parameter(s) {', '.join(extra)}")
    if kind != "mqtt_delay":
        return 0.0
    if "delay" not in params:
        raise ValueError(f"{kind}: needs delay (s)")
    delay = params["delay"]
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not (
            math.isfinite(delay) and delay > 0):
        raise ValueError(f"{kind}: delay must be a number of seconds > 0, not {delay!r}")
    return float(delay)
