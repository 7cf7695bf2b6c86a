"""MQTT telemetry and alarm publishing: one JSON message per device and sample period.

Telemetry: ``{"t": 12.0, "ts": "2026-01-15T00:00:12+00:00", "seq": 12, "values": {...}}``
-- ``seq`` counts messages per device from 0, so a gap is a lost message; NaN or infinite
values are ``null``; bool and int points are JSON integers (``0``/``1`` for bools).
Alarm: ``{"point": id, "state": "raised"|"cleared", "t": ..., "ts": ...}`` on each change.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence

from rig.protocols.mqtt import topics
from rig.protocols.mqtt.config import MqttConfig
from rig.protocols.mqtt.counters import Counters
from rig.protocols.mqtt.faults import FaultInjector
from twin.points import DType, Kind, PointTable

log = logging.getLogger(__name__)


def values_by_device(points: PointTable, values: Sequence[float],
                     kinds: frozenset[Kind] | None = None) -> dict[str, dict[str, float]]:
    """Group table-ordered ``values`` (e.g. ``twin.measured_values()``) by device."""
    out: dict[str, dict[str, float]] = {}
    for point, value in zip(points, values, strict=True):
        if kinds is None or point.kind in kinds:
            out.setdefault(point.device, {})[point.id] = value
    return out


class TelemetryPublisher:
    """Encodes telemetry and alarm changes and publishes them (the caller's thread).

    ``publish(topic, payload)`` sends a message; telemetry goes through ``faults`` instead
    while a fault is engaged. ``points`` gives which points are alarms, bools or integers.
    """

    def __init__(self, config: MqttConfig, points: PointTable,
                 publish: Callable[[str, bytes], None], faults: FaultInjector,
                 counters: Counters) -> None:
        self.config = config
        self._publish = publish
        self._faults = faults
        self._count = counters.count
        p, s = config.prefix, config.site
        devices = points.devices()
        self._telemetry_topic = {d: topics.telemetry(p, s, d) for d in devices}
        self._alarm_topic = {d: topics.alarm(p, s, d) for d in devices}
        self._int_ids = frozenset(pt.id for pt in points if pt.dtype is not DType.FLOAT)
        self._alarm_ids: dict[str, list[str]] = {}
        for pt in points.of_kind(Kind.ALARM):
            self._alarm_ids.setdefault(pt.device, []).append(pt.id)
        self._alarm_active: dict[str, bool] = {}
        self.seq: dict[str, int] = {}  # device -> the next message's seq

    def devices(self) -> list[str]:
        """Devices that have a telemetry topic (every device of the table, and any
        other one published since)."""
        return list(self._telemetry_topic)

    def publish(self, sim_time: float, clock_iso: str,
                values_by_device: Mapping[str, Mapping[str, float]]) -> int:
        """Publish one telemetry message per device, and alarm changes; return messages.

        ``values_by_device`` maps device -> {point_id: value} (SI units). Alarm points among
        the values are compared with their previous values (an alarm not seen before
        counts as cleared) and each change is published on the device's alarm topic.
        """
        sent = 0
        int_ids = self._int_ids
        isfinite = math.isfinite
        faults = self._faults
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
            seq = self.seq.get(device, 0)
            self.seq[device] = seq + 1
            payload = json.dumps({"t": sim_time, "ts": clock_iso, "seq": seq,
                                  "values": encoded}, separators=(",", ":")).encode()
            if faults.engaged:  # a fault, or a delayed backlog
                faults.publish(device, self._telemetry(device), payload)
            else:
                self._publish(self._telemetry(device), payload)
            sent += 1
            for pid in self._alarm_ids.get(device, ()):
                state_value = encoded.get(pid)
                if state_value is None:
                    continue
                active = state_value >= 0.5
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

    def _telemetry(self, device: str) -> str:
        return self._topic(self._telemetry_topic, topics.telemetry, device)

    def _alarm(self, device: str) -> str:
        return self._topic(self._alarm_topic, topics.alarm, device)

    def _topic(self, cache: dict[str, str], build: Callable[[str, str, str], str],
               device: str) -> str:
        """``device``'s topic from ``cache``, built from (prefix, site, device) on first use."""
        topic = cache.get(device)
        if topic is None:
            topic = cache[device] = build(self.config.prefix, self.config.site, device)
        return topic
