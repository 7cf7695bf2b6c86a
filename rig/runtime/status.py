"""The compact status line of a live run, and the rates it shows."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rig.runtime.clock import PacerStats
from twin.plant import Twin
from twin.points import Kind

Stats = Callable[[], dict[str, Any]]


@dataclass
class SlidingRate:
    """Events per second over the last few seconds of wall time."""

    window_s: float = 5.0
    samples: deque[tuple[float, float]] = field(default_factory=deque)

    def update(self, now: float, count: float) -> float:
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        t0, c0 = self.samples[0]
        return (count - c0) / (now - t0) if now > t0 else 0.0


class StatusLine:
    """A compact status view: one line, redrawn each second (every 10 s off a terminal).

    ``speed()`` is the achieved speed (-); ``modbus()`` and ``mqtt()`` the servers' stats;
    ``slice_s`` the slice length (s) of ``pacing``."""

    def __init__(self, twin: Twin, pacing: PacerStats, slice_s: float,
                 speed: Callable[[], float], modbus: Stats, mqtt: Stats) -> None:
        self.twin, self.pacing, self.slice_s = twin, pacing, slice_s
        self.speed, self.modbus, self.mqtt = speed, modbus, mqtt
        self.tty = sys.stderr.isatty()
        self.period = 1.0 if self.tty else 10.0
        self.last = time.perf_counter()
        self.modbus_rate = SlidingRate()
        self.mqtt_rate = SlidingRate()

    def update(self) -> None:
        now = time.perf_counter()
        if now - self.last < self.period:
            return
        self.last = now
        mb, mq = self.modbus(), self.mqtt()
        lat = self.pacing.lateness[-int(10 / self.slice_s):]
        p99 = sorted(lat)[int(0.99 * (len(lat) - 1))] * 1000 if lat else 0.0
        alarms = sum(1 for p in self.twin.points.of_kind(Kind.ALARM) if p.getter() >= 0.5)
        t = int(self.twin.now)
        line = (f"sim {t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}  "
                f"speed {self.speed():6.1f}x  lateness p99 {p99:5.1f} ms  "
                f"modbus {self.modbus_rate.update(now, mb.get('requests', 0)):6.0f} req/s  "
                f"mqtt {self.mqtt_rate.update(now, mq.get('sent', 0)):6.0f} msg/s  "
                f"clients {mb.get('connections', 0)}  alarms {alarms}")
        if self.tty:
            sys.stderr.write("\r" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
