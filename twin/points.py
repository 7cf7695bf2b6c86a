"""The point table: every sensor, command, alarm and status of a site as one `Point`.

The Modbus map, the MQTT topics, the exported point list and the dashboards are all
generated from this table, so they cannot disagree. Values are SI (temperatures in
degC, stated in each point's ``unit``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from twin.errors import PointError, WriteRefused


class Kind(StrEnum):
    """What a point is to a controller."""

    SENSOR = "sensor"  # measured value of a physical quantity (read only)
    COMMAND = "command"  # value an external controller may write
    ALARM = "alarm"  # boolean condition raised by the plant (read only)
    STATUS = "status"  # any other read-only state (mode, counters, KPIs)


class DType(StrEnum):
    """Data type of a point's value."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"


@dataclass(slots=True)
class Command:
    """A commandable value with a hand/auto switch.

    ``auto`` is written by the built-in reference control, ``hand_value`` by an external
    controller; ``hand`` selects which one the plant obeys.
    """

    auto: float
    hand_value: float
    hand: bool = False

    @property
    def value(self) -> float:
        """The effective value the plant obeys."""
        return self.hand_value if self.hand else self.auto


@dataclass(slots=True)
class Point:
    """One entry of the point table.

    ``lo``/``hi`` are the physical range in ``unit`` (for commands, the accepted range of a
    write). ``getter`` returns the ground-truth value now; ``setter`` (commands only)
    stores an external write after validation.
    """

    id: str
    device: str
    kind: Kind
    dtype: DType
    unit: str
    lo: float
    hi: float
    description: str
    getter: Callable[[], float] = field(repr=False, compare=False)
    setter: Callable[[float], None] | None = field(default=None, repr=False, compare=False)
    noise_sd: float = 0.0  # sensor noise, standard deviation in ``unit``
    resolution: float = 0.0  # sensor quantisation step in ``unit`` (0 = none)
    brick: str | None = None  # optional Brick schema class
    index: int = -1  # position in the table, set by PointTable.add

    @property
    def writable(self) -> bool:
        """True when an external controller may write this point."""
        return self.kind is Kind.COMMAND and self.setter is not None

    def coerce(self, value: object) -> float:
        """Validate a value for a write and return it as a float; raise WriteRefused."""
        if not self.writable:
            raise WriteRefused(self.id, f"point is a {self.kind.value}, not writable",
                               WriteRefused.ILLEGAL_ADDRESS)
        if isinstance(value, int | float):  # bool is an int
            number = float(value)
        else:
            raise WriteRefused(self.id, f"expected a number, got {type(value).__name__}",
                               WriteRefused.ILLEGAL_VALUE)
        if not math.isfinite(number):
            raise WriteRefused(self.id, "value must be finite", WriteRefused.ILLEGAL_VALUE)
        if self.dtype is DType.BOOL:
            if number not in (0.0, 1.0):
                raise WriteRefused(self.id, "expected 0/1 (false/true)",
                                   WriteRefused.ILLEGAL_VALUE)
        elif self.dtype is DType.INT and number != int(number):
            raise WriteRefused(self.id, "expected an integer", WriteRefused.ILLEGAL_VALUE)
        if not self.lo <= number <= self.hi:
            raise WriteRefused(
                self.id, f"{number:g} {self.unit} outside [{self.lo:g}, {self.hi:g}] {self.unit}",
                WriteRefused.ILLEGAL_VALUE)
        return number

    def describe(self) -> dict[str, object]:
        """The exported description of this point (no live wiring)."""
        return {
            "id": self.id, "device": self.device, "kind": self.kind.value,
            "type": self.dtype.value, "unit": self.unit, "min": self.lo, "max": self.hi,
            "description": self.description, "brick": self.brick,
        }


class PointTable:
    """Ordered collection of points, addressable by id and by index."""

    def __init__(self) -> None:
        self._points: list[Point] = []
        self._by_id: dict[str, Point] = {}

    def add(self, point: Point) -> Point:
        """Append a point; ids must be unique."""
        if point.id in self._by_id:
            raise ValueError(f"duplicate point id {point.id!r}")
        point.index = len(self._points)
        self._points.append(point)
        self._by_id[point.id] = point
        return point

    def __getitem__(self, point_id: str) -> Point:
        try:
            return self._by_id[point_id]
        except KeyError:
            raise PointError(f"unknown point {point_id!r}") from None

    def __contains__(self, point_id: object) -> bool:
        return point_id in self._by_id

    def __iter__(self) -> Iterator[Point]:
        return iter(self._points)

    def __len__(self) -> int:
        return len(self._points)

    def ids(self) -> list[str]:
        """All point ids in table order."""
        return [p.id for p in self._points]

    def devices(self) -> list[str]:
        """Device names in order of first appearance."""
        return list(dict.fromkeys(p.device for p in self._points))

    def of_device(self, device: str) -> list[Point]:
        """Points of one device, in table order."""
        return [p for p in self._points if p.device == device]

    def of_kind(self, kind: Kind) -> list[Point]:
        """Points of one kind, in table order."""
        return [p for p in self._points if p.kind is kind]

    # Convenience constructors used by the plant components.

    def sensor(self, pid: str, unit: str, lo: float, hi: float, description: str,
               getter: Callable[[], float], noise_sd: float = 0.0,
               resolution: float = 0.0) -> Point:
        """Add a measured analogue point."""
        return self.add(Point(pid, _device(pid), Kind.SENSOR, DType.FLOAT, unit, lo, hi,
                              description, getter, noise_sd=noise_sd, resolution=resolution))

    def status(self, pid: str, unit: str, lo: float, hi: float, description: str,
               getter: Callable[[], float], dtype: DType = DType.FLOAT) -> Point:
        """Add a read-only computed state (no sensor noise)."""
        return self.add(Point(pid, _device(pid), Kind.STATUS, dtype, unit, lo, hi,
                              description, getter))

    def alarm(self, pid: str, description: str, getter: Callable[[], float]) -> Point:
        """Add a boolean alarm or binary sensor (1 = active)."""
        return self.add(Point(pid, _device(pid), Kind.ALARM, DType.BOOL, "1", 0, 1,
                              description, getter))

    def command(self, pid: str, unit: str, lo: float, hi: float, description: str,
                cmd: Command, dtype: DType = DType.FLOAT) -> Point:
        """Add a command point and its hand/auto switch ``<pid>.hand``."""

        def set_hand_value(value: float) -> None:
            cmd.hand_value = value

        def set_hand(value: float) -> None:
            cmd.hand = bool(value)

        point = self.add(Point(pid, _device(pid), Kind.COMMAND, dtype, unit, lo, hi,
                               description + " (obeyed when in hand)",
                               lambda: cmd.value, set_hand_value))
        self.add(Point(pid + ".hand", point.device, Kind.COMMAND, DType.BOOL, "1", 0, 1,
                       f"hand/auto switch of {pid}: 1 = hand (external value), 0 = auto",
                       lambda: float(cmd.hand), set_hand))
        return point


def _device(point_id: str) -> str:
    """Device of a point id: the part before the first dot."""
    return point_id.split(".", 1)[0]
