"""MQTT commands: validation, the queue of accepted commands, and replies.

Commands are validated exactly as Modbus writes are (`twin.points.Point.coerce`, codes of
`twin.errors.WriteRefused`): the payload size is checked before anything is parsed, then
the point must exist, belong to the topic's device and be writable, then the value must be
a finite number or bool in range. A refused command changes nothing and is answered at
once with the last known sim time. A command the broker replays from its retained store
on (re)subscribe is refused: it would repeat on every reconnect. Accepted commands wait in
a bounded queue until `CommandHandler.apply_pending` writes them to the twin (the caller's
thread, at a slice boundary) and answers them with the sim time.
"""

from __future__ import annotations

import json
import logging
import math
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rig.protocols.logsafe import safe_for_log
from rig.protocols.mqtt import topics
from rig.protocols.mqtt.config import MqttConfig
from rig.protocols.mqtt.counters import Counters
from twin.errors import PointError, WriteRefused
from twin.points import PointTable

if TYPE_CHECKING:
    from twin.plant import Twin

log = logging.getLogger(__name__)

COMMAND_KEYS = frozenset({"value", "id"})
MAX_ID_CHARS = 128
ECHO_STR_CHARS = 64


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


class CommandHandler:
    """Validates command messages, queues the accepted ones and answers every one.

    ``publish(topic, payload)`` sends a reply. ``handle`` runs on the network thread,
    ``apply_pending`` on the caller's; ``sim_time`` (s) is the last time the caller saw,
    used in immediate refusals.
    """

    def __init__(self, config: MqttConfig, points: PointTable,
                 publish: Callable[[str, bytes], None], counters: Counters) -> None:
        self.config = config
        self.points = points
        self._publish = publish
        self._count = counters.count
        p, s = config.prefix, config.site
        self._reply_topic: dict[str, str] = {d: topics.reply(p, s, d) for d in points.devices()}
        self._commands: queue.Queue[_Pending] = queue.Queue(config.command_queue_bound)
        self.sim_time: float | None = None

    def reply_topic(self, device: str) -> str:
        """The reply topic of ``device``."""
        topic = self._reply_topic.get(device)
        if topic is None:
            topic = topics.reply(self.config.prefix, self.config.site, device)
        return topic

    def apply_pending(self, twin: Twin) -> list[CommandResult]:
        """Apply the commands accepted since the last call to ``twin`` (caller's thread).

        Each is written with ``twin.write(point, value, source="mqtt")`` and answered on
        the reply topic with the twin's time; the results are returned in arrival order.
        """
        results: list[CommandResult] = []
        self.sim_time = twin.now
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
            self._publish(self.reply_topic(cmd.device), result.to_json())
            results.append(result)
        return results

    def refuse_pending(self, reason: str) -> list[CommandResult]:
        """Refuse and answer every command still waiting (when the rig stops)."""
        results = []
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
            self._count("commands_refused")
            results.append(CommandResult(cmd.point, cmd.device, False, reason,
                                         WriteRefused.ILLEGAL_VALUE, cmd.value, self.sim_time,
                                         cmd.request_id))
        for result in results:
            self._publish(self.reply_topic(result.device), result.to_json())
        return results

    def handle(self, topic: str, payload: bytes, retained: bool) -> None:
        """Validate one command message (network thread); queue it or refuse it."""
        parsed = topics.parse_command(self.config.prefix, self.config.site, topic)
        if parsed is None:
            log.warning("mqtt: ignored message on %s (not a command topic)",
                        safe_for_log(topic))
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
        log.info("mqtt: command refused: %s", safe_for_log(_short(refusal)))
        result = CommandResult(point_id[:200], device, False, refusal.reason, refusal.code,
                               value, self.sim_time, request_id)
        self._publish(self.reply_topic(device), result.to_json())
