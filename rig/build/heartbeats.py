"""Heartbeat points: one ``<device>.heartbeat`` command per controlled device.

A controller writes its device's heartbeat (int 0..65535, no hand switch) with a value
that changes, typically a counter; `rig.runtime.watchdog.Watchdog` trips the device when
it stops changing. Heartbeats are appended to the point table after every other point,
so they shift no existing Modbus address. Their Modbus encoding is one ``uint16`` holding
register each (`heartbeat_options`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twin.points import DType, Kind, Point, PointTable

if TYPE_CHECKING:
    from twin.plant import Twin

HEARTBEAT = "heartbeat"
HEARTBEAT_MAX = 65535


def heartbeat_id(device: str) -> str:
    """Point id of a device's heartbeat."""
    return f"{device}.{HEARTBEAT}"


def heartbeat_options(devices: Iterable[str]) -> dict[str, tuple[str, float]]:
    """Modbus map options of the heartbeats: one ``uint16`` holding register each."""
    return {heartbeat_id(dev): ("uint16", 1.0) for dev in devices}


@dataclass(slots=True)
class Heartbeat:
    """The state behind one heartbeat point."""

    device: str
    value: float = 0.0
    changed_at: float = math.nan  # simulated time of the last change (s); NaN = never
    changes: int = 0


def add_heartbeats(points: PointTable, devices: Iterable[str],
                   clock: Twin | None = None) -> dict[str, Heartbeat]:
    """Append ``<device>.heartbeat`` command points; return their state by device.

    ``clock`` (a twin) stamps each change with its simulated time (s).
    """
    beats: dict[str, Heartbeat] = {}
    for device in devices:
        beat = Heartbeat(device)
        points.add(Point(heartbeat_id(device), device, Kind.COMMAND, DType.INT, "1", 0,
                         HEARTBEAT_MAX,
                         f"communication heartbeat of {device}: write a changing value "
                         "(e.g. a counter) more often than the watchdog timeout",
                         _getter(beat), _setter(beat, clock)))
        beats[device] = beat
    return beats


def _getter(beat: Heartbeat) -> Callable[[], float]:
    return lambda: beat.value


def _setter(beat: Heartbeat, clock: Twin | None) -> Callable[[float], None]:
    def store(value: float) -> None:
        if value != beat.value:
            beat.value = value
            beat.changes += 1
            beat.changed_at = clock.now if clock is not None else math.nan
    return store
