"""The exported point list (JSON) as lookups for a system under test, with its own codec.

A real device gets its addressing from the point list the rig exports (`rig.present.pointlist`):
per point the Modbus unit id, table, address, count, type (``bit``, ``float32`` in a word
order, ``int16``/``uint16`` with a scale) and the MQTT telemetry topic and key. This module
reads that file and encodes/decodes registers with `struct`, independently of the rig's
own map, and plans reads: the points a controller polls, grouped into as few requests as
the Modbus limits allow (125 registers, 2000 bits per request).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin.errors import ConfigError, PointError

TABLES = ("coils", "discrete_inputs", "holding_registers", "input_registers")
BIT_TABLES = ("coils", "discrete_inputs")
WRITABLE_TABLES = ("coils", "holding_registers")
TYPES = ("bit", "float32", "int16", "uint16")
WORD_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
MAX_REGISTERS = 125  # per read request (Modbus limit)
MAX_BITS = 2000
MAX_GAP_REGISTERS = 40  # read through a gap this small rather than send another request
MAX_GAP_BITS = 400
INT16_NAN, UINT16_NAN = 0x8000, 0xFFFF
_CDU = re.compile(r"^cdu\d+$")
_HP = re.compile(r"^hp\d+$")
_RACK_LEAK = re.compile(r"^(cdu\d+)\.rack\d+\.leak$")


@dataclass(frozen=True, slots=True)
class PointInfo:
    """One point of the list: what it is and where it lives on Modbus."""

    id: str
    device: str
    kind: str  # sensor | command | alarm | status
    dtype: str  # float | int | bool
    unit: str
    lo: float
    hi: float
    unit_id: int
    table: str
    address: int
    count: int
    encoding: str  # bit | float32 | int16 | uint16
    word_order: str = "ABCD"
    scale: float = 1.0
    topic: str = ""  # MQTT telemetry topic

    @property
    def bits(self) -> bool:
        """True for coils and discrete inputs."""
        return self.table in BIT_TABLES

    @property
    def writable(self) -> bool:
        """True for a command point in a writable table."""
        return self.kind == "command" and self.table in WRITABLE_TABLES

    def decode(self, raw: Sequence[int] | Sequence[bool]) -> float:
        """Value (the point's unit) of its bit or registers."""
        if len(raw) != self.count:
            raise ValueError(f"{self.id}: expected {self.count} values, got {len(raw)}")
        if self.encoding == "bit":
            return 1.0 if raw[0] else 0.0
        if self.encoding == "float32":
            return float32_from_registers(int(raw[0]), int(raw[1]), self.word_order)
        word = int(raw[0]) & 0xFFFF
        if self.encoding == "int16":
            if word == INT16_NAN:
                return math.nan
            return (word - 0x10000 if word & 0x8000 else word) * self.scale
        return math.nan if word == UINT16_NAN else word * self.scale

    def encode(self, value: float) -> list[int]:
        """Registers (or one 0/1 bit) holding ``value``; ValueError outside the encoding."""
        if self.encoding == "bit":
            return [1 if value else 0]
        if self.encoding == "float32":
            return list(float32_to_registers(value, self.word_order))
        raw = round(value / self.scale)
        lo, hi = (-32768, 32767) if self.encoding == "int16" else (0, 65535)
        if not lo <= raw <= hi:
            raise ValueError(f"{self.id}: {value:g} does not fit {self.encoding} "
                             f"(scale {self.scale:g})")
        return [raw & 0xFFFF]


def float32_from_registers(first: int, second: int, word_order: str) -> float:
    """A float32 from its two registers in ``word_order`` (A = sign/exponent byte)."""
    if word_order == "ABCD":
        data = struct.pack(">HH", first, second)
    elif word_order == "CDAB":
        data = struct.pack(">HH", second, first)
    elif word_order == "BADC":
        data = struct.pack("<HH", first, second)
    elif word_order == "DCBA":
        data = struct.pack("<HH", second, first)
    else:
        raise ValueError(f"unknown word order {word_order!r}")
    return float(struct.unpack(">f", data)[0])


def float32_to_registers(value: float, word_order: str) -> tuple[int, int]:
    """The two registers of a float32 in ``word_order``."""
    data = struct.pack(">f", value)
    if word_order == "ABCD":
        return struct.unpack(">HH", data)
    if word_order == "CDAB":
        hi, lo = struct.unpack(">HH", data)
        return lo, hi
    if word_order == "BADC":
        return struct.unpack("<HH", data)
    if word_order == "DCBA":
        first, second = struct.unpack("<HH", data)
        return second, first
    raise ValueError(f"unknown word order {word_order!r}")


@dataclass(slots=True)
class ReadBlock:
    """One read request: a span of a (unit, table) and the points inside it."""

    unit_id: int
    table: str
    start: int
    count: int
    points: list[PointInfo] = field(default_factory=list)

    def decode(self, raw: Sequence[int] | Sequence[bool]) -> dict[str, float]:
        """Values of the block's points from the request's answer."""
        out = {}
        for p in self.points:
            offset = p.address - self.start
            out[p.id] = p.decode(list(raw[offset:offset + p.count]))
        return out


def plan_reads(points: Iterable[PointInfo]) -> list[ReadBlock]:
    """Group points into read requests: per (unit, table), spans within the Modbus limits,
    reading through small gaps."""
    groups: dict[tuple[int, str], list[PointInfo]] = {}
    for p in {p.id: p for p in points}.values():
        groups.setdefault((p.unit_id, p.table), []).append(p)
    blocks: list[ReadBlock] = []
    for (unit, table), members in sorted(groups.items()):
        limit, gap = (MAX_BITS, MAX_GAP_BITS) if table in BIT_TABLES else \
            (MAX_REGISTERS, MAX_GAP_REGISTERS)
        block: ReadBlock | None = None
        for p in sorted(members, key=lambda p: p.address):
            end = p.address + p.count
            if (block is not None and p.address - (block.start + block.count) <= gap
                    and end - block.start <= limit):
                block.count = max(block.count, end - block.start)
                block.points.append(p)
                continue
            block = ReadBlock(unit, table, p.address, p.count, [p])
            blocks.append(block)
    return blocks


class PointMap:
    """The point list of one site, by id and by device."""

    def __init__(self, rows: Sequence[dict[str, Any]], source: str = "point list") -> None:
        self.source = source
        self._points: dict[str, PointInfo] = {}
        problems: list[str] = []
        for n, row in enumerate(rows):
            try:
                info = _parse_row(row)
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(f"{source}: row {n}: {_why(exc)}")
                continue
            if info.id in self._points:
                problems.append(f"{source}: row {n}: duplicate point id {info.id!r}")
            self._points[info.id] = info
        if problems:
            raise ConfigError(problems[:20])
        if not self._points:
            raise ConfigError([f"{source}: no points"])

    @classmethod
    def load(cls, path: str | Path) -> PointMap:
        """Read an exported point list (JSON); ConfigError if it cannot be used."""
        path = Path(path)
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read the point list: {exc.strerror}"]) from None
        except ValueError as exc:
            raise ConfigError([f"{path}: not a JSON point list: {exc}"]) from None
        if not isinstance(rows, list):
            raise ConfigError([f"{path}: expected a JSON list of points"])
        return cls(rows, str(path))

    def __contains__(self, point_id: object) -> bool:
        return point_id in self._points

    def __getitem__(self, point_id: str) -> PointInfo:
        try:
            return self._points[point_id]
        except KeyError:
            raise PointError(f"{self.source}: no point {point_id!r}") from None

    def __iter__(self) -> Iterator[PointInfo]:
        return iter(self._points.values())

    def __len__(self) -> int:
        return len(self._points)

    def get(self, point_id: str) -> PointInfo | None:
        """The point, or None when the list does not have it."""
        return self._points.get(point_id)

    def devices(self) -> list[str]:
        """Device names in list order."""
        return list(dict.fromkeys(p.device for p in self._points.values()))

    def cdus(self) -> list[str]:
        """CDU devices (``cduN``)."""
        return [d for d in self.devices() if _CDU.match(d)]

    def heat_pumps(self) -> list[str]:
        """Heat-pump devices (``hpN``)."""
        return [d for d in self.devices() if _HP.match(d)]

    def facility_pumps(self) -> list[str]:
        """Facility pumps as ``facility.pumpN`` (each has ``.enable``, ``.running``, ``.trip``)."""
        return [pid[:-len(".running")] for pid in self._points
                if pid.startswith("facility.pump") and pid.endswith(".running")]

    def spot_sensors(self, cdu: str) -> list[str]:
        """Leak spot sensors of a CDU: ``cduN.leak`` and every ``cduN.rackMM.leak``."""
        return [pid for pid in self._points
                if pid == f"{cdu}.leak" or ((m := _RACK_LEAK.match(pid)) and m.group(1) == cdu)]

    def trips(self, device: str) -> list[str]:
        """Trip alarms of a device (``hpN.trip.*``)."""
        return [pid for pid in self._points if pid.startswith(f"{device}.trip.")]

    def missing(self, point_ids: Iterable[str]) -> list[str]:
        """Those of ``point_ids`` the list does not have."""
        return [pid for pid in point_ids if pid not in self._points]


def _parse_row(row: dict[str, Any]) -> PointInfo:
    mb = row["modbus"]
    table, encoding = str(mb["table"]), str(mb["type"])
    if table not in TABLES:
        raise ValueError(f"{row['id']}: unknown modbus table {table!r}")
    if encoding not in TYPES:
        raise ValueError(f"{row['id']}: unknown modbus type {encoding!r}")
    word_order = str(mb.get("word_order") or "ABCD")
    if word_order not in WORD_ORDERS:
        raise ValueError(f"{row['id']}: unknown word order {word_order!r}")
    count = int(mb.get("count", 2 if encoding == "float32" else 1))
    if count != (2 if encoding == "float32" else 1):
        raise ValueError(f"{row['id']}: {encoding} with count {count}")
    unit_id, address = int(mb["unit_id"]), int(mb["address"])
    if not (0 <= unit_id <= 255 and address >= 0 and address + count <= 65536):
        raise ValueError(f"{row['id']}: unit id {unit_id} / address {address} out of range")
    scale = float(mb.get("scale") or 1.0)
    if not scale > 0:
        raise ValueError(f"{row['id']}: scale must be > 0")
    return PointInfo(
        id=str(row["id"]), device=str(row.get("device") or str(row["id"]).split(".")[0]),
        kind=str(row["kind"]), dtype=str(row.get("type", "float")), unit=str(row.get("unit")),
        lo=float(row.get("min", -math.inf)), hi=float(row.get("max", math.inf)),
        unit_id=unit_id, table=table, address=address, count=count, encoding=encoding,
        word_order=word_order, scale=scale, topic=str((row.get("mqtt") or {}).get("topic", "")))


def _why(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc)
