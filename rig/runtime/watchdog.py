"""Per-device communication-loss watchdog, as field I/O couplers have.

The rig adds one command point per watched device, ``<device>.heartbeat`` (int 0..65535,
no hand switch), to the twin's point table; a controller writes it (any protocol) with a
value that changes, typically a counter. When the value has not changed for longer than
the device's timeout (simulated seconds; at speed 1 the same as wall seconds), the device
takes its fallback:

* ``hold`` -- commands keep their last value; only an event is recorded;
* ``safe`` -- every command of the device with a configured safe value goes to it, in
  hand (``X`` = value, ``X.hand`` = 1); every other command goes back to auto (its
  ``X.hand`` = 0).

Each trip and each recovery (the heartbeat changes again) is an event
``twin.emit(device, "watchdog", message)``. A device's watchdog is armed by the first
heartbeat change, so a run without an external controller never trips (``armed=True``
arms every device at construction). ``check(now)`` runs once per slice: a trip comes at
most one slice after the timeout.

A live run's heartbeats are made with its point table by `rig.build.build_plan` and passed
in as ``beats``; without ``beats`` the watchdog appends them itself
(`rig.build.heartbeats`: after every other point, so they shift no Modbus address; create
the watchdog before the Modbus map, the MQTT adapter and the recorder). Their Modbus
encoding is ``uint16`` (`Watchdog.modbus_options`), and their writes are best applied
without a plant event (pass `Watchdog.heartbeat_ids` as the Modbus server's
``quiet_points``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from rig.build.heartbeats import Heartbeat, add_heartbeats, heartbeat_id, heartbeat_options
from twin.errors import ConfigError, WriteRefused
from twin.points import Kind

if TYPE_CHECKING:
    from twin.plant import Twin

log = logging.getLogger(__name__)

Fallback = Literal["hold", "safe"]


class Watchdog:
    """Communication-loss watchdog of some devices of a twin (see the module docstring)."""

    def __init__(self, twin: Twin, timeouts: Mapping[str, float],
                 fallback: Mapping[str, Fallback], safe_values: Mapping[str, float] | None = None,
                 *, armed: bool = False, beats: Mapping[str, Heartbeat] | None = None) -> None:
        self.twin = twin
        self.timeouts = {dev: float(t) for dev, t in timeouts.items()}
        self.fallback = {dev: fallback.get(dev, "hold") for dev in self.timeouts}
        self.safe_values = dict(safe_values or {})
        self._validate(fallback, beats)
        self.beats = ({dev: beats[dev] for dev in self.timeouts} if beats is not None
                      else add_heartbeats(twin.points, self.timeouts, twin))
        self.tripped: dict[str, bool] = dict.fromkeys(self.timeouts, False)
        self.trips: dict[str, int] = dict.fromkeys(self.timeouts, 0)
        self._seen = {dev: 0 for dev in self.timeouts}
        self._since = {dev: (twin.now if armed else math.nan) for dev in self.timeouts}

    def _validate(self, fallback: Mapping[str, str],
                  beats: Mapping[str, Heartbeat] | None) -> None:
        points = self.twin.points
        devices = set(points.devices())
        problems = []
        for dev, timeout in self.timeouts.items():
            if dev not in devices:
                problems.append(f"watchdog: unknown device {dev!r}")
            elif beats is None and heartbeat_id(dev) in points:
                problems.append(f"watchdog: {heartbeat_id(dev)} already exists")
            elif beats is not None and (dev not in beats or heartbeat_id(dev) not in points):
                problems.append(f"watchdog: {dev} has no heartbeat point")
            if not (math.isfinite(timeout) and timeout > 0):
                problems.append(f"watchdog: timeout of {dev} must be > 0 s, got {timeout!r}")
        for dev, mode in fallback.items():
            if dev not in self.timeouts:
                problems.append(f"watchdog: fallback for {dev!r} which has no timeout")
            elif mode not in ("hold", "safe"):
                problems.append(f"watchdog: fallback of {dev} must be hold or safe, "
                                f"got {mode!r}")
        for pid, value in self.safe_values.items():
            if pid not in points:
                problems.append(f"watchdog: safe value for unknown point {pid!r}")
                continue
            point = points[pid]
            if self.fallback.get(point.device) != "safe":
                problems.append(f"watchdog: safe value for {pid} but {point.device} has no "
                                "'safe' fallback")
            try:
                point.coerce(value)
            except WriteRefused as exc:
                problems.append(f"watchdog: safe value of {exc}")
        if problems:
            raise ConfigError(problems)

    @property
    def heartbeat_ids(self) -> list[str]:
        """Point ids of the heartbeats."""
        return [heartbeat_id(dev) for dev in self.timeouts]

    def modbus_options(self) -> dict[str, tuple[str, float]]:
        """Modbus encodings of the heartbeats: one ``uint16`` holding register each."""
        return heartbeat_options(self.timeouts)

    def check(self, now: float) -> list[str]:
        """Trip or recover devices at simulated time ``now`` (s); return what changed."""
        changed = []
        for dev, beat in self.beats.items():
            if beat.changes != self._seen[dev]:
                self._seen[dev] = beat.changes
                self._since[dev] = beat.changed_at if math.isfinite(beat.changed_at) else now
                if self.tripped[dev]:
                    self.tripped[dev] = False
                    self.twin.emit(dev, "watchdog", f"communication restored "
                                                    f"({heartbeat_id(dev)} changed)")
                    log.info("watchdog: %s communication restored at t=%g s", dev, now)
                    changed.append(dev)
                continue
            since = self._since[dev]
            if self.tripped[dev] or math.isnan(since) or now - since <= self.timeouts[dev]:
                continue
            self.tripped[dev] = True
            self.trips[dev] += 1
            actions = self._fall_back(dev)
            self.twin.emit(dev, "watchdog",
                           f"communication lost: {heartbeat_id(dev)} unchanged for "
                           f"{now - since:g} s (timeout {self.timeouts[dev]:g} s), "
                           f"fallback {self.fallback[dev]}{actions}")
            log.warning("watchdog: %s communication lost at t=%g s, fallback %s", dev, now,
                        self.fallback[dev])
            changed.append(dev)
        return changed

    def _fall_back(self, device: str) -> str:
        """Apply a device's fallback; return a summary for the event message."""
        if self.fallback[device] != "safe":
            return ""
        points = self.twin.points
        beat = heartbeat_id(device)
        commands = [p for p in points.of_device(device)
                    if p.kind is Kind.COMMAND and p.writable and p.id != beat]
        ids = {p.id for p in commands}
        settings: dict[str, float] = {}
        for point in commands:
            if point.id.endswith(".hand") and point.id[:-5] in ids:
                continue  # set with its command below
            hand = point.id + ".hand"
            if point.id in self.safe_values:
                settings[point.id] = self.safe_values[point.id]
                if hand in ids:
                    settings[hand] = self.safe_values.get(hand, 1.0)
            elif hand in ids:
                settings[hand] = self.safe_values.get(hand, 0.0)
        for pid, value in settings.items():
            point = points[pid]
            assert point.setter is not None
            point.setter(point.coerce(value))
        in_hand = sorted(p for p in settings if not p.endswith(".hand"))
        to_auto = sorted(p[:-5] for p, v in settings.items() if p.endswith(".hand") and not v)
        parts = []
        if in_hand:
            parts.append("safe values " + ", ".join(f"{p}={settings[p]:g}" for p in in_hand))
        if to_auto:
            parts.append(f"{len(to_auto)} command(s) back to auto")
        return ": " + "; ".join(parts) if parts else ""
