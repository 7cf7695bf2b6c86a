"""MQTT adapter of the live rig: telemetry, alarms, retained status and commands.

One paho-mqtt 2.x client (``CallbackAPIVersion.VERSION2``, MQTT 3.1.1) with its own network
thread (``loop_start``). The live runner owns the twin and calls, from its own thread:

* ``publish_telemetry(t, ts, values_by_device)`` (or ``publish_twin(twin)``) once per sensor
  period: one JSON message per device, and alarm raised/cleared messages;
* ``apply_pending(twin)`` at each slice boundary: applies the commands received since.

`MqttAdapter` composes one part per job: `connection.Connection` (the paho client, connect,
reconnect, will, outbound buffer), `telemetry.TelemetryPublisher`, `commands.CommandHandler`
(validation, pending queue, replies) and `faults.FaultInjector` (protocol faults and their
scheduler); `config` holds `MqttConfig` and the broker URL, `counters` the shared counts.

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

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho

from rig.protocols.mqtt import topics
from rig.protocols.mqtt.commands import (
    COMMAND_KEYS,
    ECHO_STR_CHARS,
    MAX_ID_CHARS,
    CommandHandler,
    CommandResult,
    validate_command,
)
from rig.protocols.mqtt.config import (
    PASSWORD_ENV,
    USERNAME_ENV,
    BrokerAddress,
    MqttConfig,
    parse_url,
)
from rig.protocols.mqtt.connection import MAX_PAHO_QUEUE, OFFLINE, ONLINE, Connection
from rig.protocols.mqtt.counters import Counters
from rig.protocols.mqtt.faults import ALL_DEVICES, FAULT_KINDS, FaultInjector
from rig.protocols.mqtt.telemetry import TelemetryPublisher, values_by_device
from twin.errors import ServiceError
from twin.points import PointTable

if TYPE_CHECKING:
    from twin.plant import Twin

log = logging.getLogger(__name__)

__all__ = [
    "ALL_DEVICES", "COMMAND_KEYS", "ECHO_STR_CHARS", "FAULT_KINDS", "MAX_ID_CHARS",
    "MAX_PAHO_QUEUE", "OFFLINE", "ONLINE", "PASSWORD_ENV", "USERNAME_ENV", "BrokerAddress",
    "CommandResult", "MqttAdapter", "MqttConfig", "parse_url", "validate_command",
    "values_by_device",
]


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
        self._counters = Counters()
        self._connection = Connection(config, self.address, self.client_id,
                                      self.status_topic, self.command_filter, self._counters,
                                      self._on_command)
        self._commands = CommandHandler(config, points, self._connection.publish,
                                        self._counters)
        self._faults = FaultInjector(config.site, self._connection, self._counters,
                                     lambda: self._telemetry.devices())
        self._telemetry = TelemetryPublisher(config, points, self._connection.publish,
                                             self._faults, self._counters)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, wait_s: float = 0.0) -> MqttAdapter:
        """Start connecting in the background; with ``wait_s`` > 0 wait for the first connect.

        Raises ServiceError (after stopping the client) when not connected within ``wait_s``.
        """
        self._connection.start()
        if wait_s > 0 and not self.wait_connected(wait_s):
            reason = self._connection.last_error or "no answer"
            self.close(timeout=0.5)
            a = self.address
            raise ServiceError(f"MQTT broker {a.host}:{a.port} not reachable within "
                               f"{wait_s:g} s: {reason}")
        return self

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected and subscribed to commands (True) or ``timeout`` s pass."""
        return self._connection.wait_connected(timeout)

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the connection."""
        return self._connection.connected

    def close(self, timeout: float = 5.0) -> None:
        """Refuse unapplied commands, publish ``offline``, disconnect, stop the thread."""
        if self._connection.closing:
            return
        self._commands.refuse_pending("rig stopped before the command was applied")
        self._connection.close(timeout)
        self._faults.close()
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
        out: dict[str, Any] = dict(self._counters.snapshot())
        out["queued"] = self._connection.queued
        out["connected"] = self._connection.connected
        out["held"] = self._faults.held()
        out["faults"] = self._faults.active_names()
        return out

    # -- telemetry, commands, faults ------------------------------------------------------

    def publish_telemetry(self, sim_time: float, clock_iso: str,
                          values_by_device: Mapping[str, Mapping[str, float]]) -> int:
        """Publish one telemetry message per device, and alarm changes; return messages.

        ``values_by_device`` maps device -> {point_id: value} (SI units). Alarm points among
        the values are compared with their previous values (an alarm not seen before
        counts as cleared) and each change is published on the device's alarm topic.
        """
        self._commands.sim_time = sim_time
        return self._telemetry.publish(sim_time, clock_iso, values_by_device)

    def publish_twin(self, twin: Twin) -> int:
        """Publish the twin's measured values of every point now (see publish_telemetry)."""
        values = values_by_device(self.points, twin.measured_values().tolist())
        return self.publish_telemetry(twin.now, twin.clock_time().isoformat(), values)

    def publish_step(self, step: int, sim_time: float) -> None:
        """Lockstep: announce that slice ``step`` (ending at ``sim_time`` s) is served.

        Sent after that slice's telemetry through the same connection and QoS, so a
        subscriber that sees it has seen the slice's telemetry first."""
        payload = json.dumps({"step": step, "t": sim_time}).encode()
        self._connection.publish(topics.step(self.config.prefix, self.config.site), payload)

    def apply_pending(self, twin: Twin) -> list[CommandResult]:
        """Apply the commands accepted since the last call to ``twin`` (caller's thread).

        Each is written with ``twin.write(point, value, source="mqtt")`` and answered on
        the reply topic with the twin's time; the results are returned in arrival order.
        """
        return self._commands.apply_pending(twin)

    def inject(self, kind: str, *, target: str = ALL_DEVICES,
               **params: Any) -> Callable[[], None]:
        """Apply a protocol fault now (see the module docstring); returns its clear function.

        Call from the runner's thread (the one publishing telemetry). Raises
        FaultTargetError for an unknown kind or target, ValueError for parameters.
        Clearing twice does nothing.
        """
        return self._faults.inject(kind, target=target, **params)

    @property
    def _client(self) -> paho.Client:
        """The paho client (owned by the connection)."""
        return self._connection.client

    @property
    def _seq(self) -> dict[str, int]:
        """Telemetry messages published so far per device (the next ``seq``)."""
        return self._telemetry.seq

    def _on_command(self, topic: str, payload: bytes, retained: bool) -> None:
        """A message on the commands topic (network thread; guarded by the connection)."""
        self._handle_command(topic, payload, retained)

    def _handle_command(self, topic: str, payload: bytes, retained: bool) -> None:
        """Validate one command message; queue it or refuse it (see `CommandHandler`)."""
        self._commands.handle(topic, payload, retained)
