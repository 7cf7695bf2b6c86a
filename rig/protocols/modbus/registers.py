"""The Modbus register map of a site, generated from its point table.

Deterministic: the same table and options give the same map.

* Unit ids: one per device, in the order of ``points.devices()``, numbered 1..N; a
  ``unit_ids`` mapping ``{device: id}`` overrides some or all of them (1..247, unique).
* Tables: sensors and statuses -> input registers; float and int commands -> holding
  registers; alarms -> discrete inputs; bool commands (also the ``X.hand`` switches) ->
  coils. A bool point named in ``options`` is held in a register instead (input register
  for alarms, holding register for commands), with that option's encoding.
* Addresses: sequential per (unit, table) from 0, in table order; points added to the
  table later (e.g. the rig's heartbeats) come after, so they shift no other address.
* Encodings: ``float32`` (2 registers, in the site's word order) by default, or
  ``int16``/``uint16`` (1 register) for points named in ``options`` as
  ``{point_id: ("int16", scale)}``; the value is ``raw * scale`` in the point's unit.
  Reads of a scaled register saturate at the encoding's range; NaN reads as 0x8000
  (int16) or 0xFFFF (uint16). Coils and discrete inputs are bits (1 = true/active).

Word orders of a float32 whose big-endian bytes are A B C D (A = sign and exponent):
``ABCD`` registers [AB, CD] (big endian, Modicon); ``CDAB`` [CD, AB] (word swap);
``BADC`` [BA, DC] (byte swap); ``DCBA`` [DC, BA] (little endian).

`ModbusMap.encode` turns the whole table's values into every register and bit at once
(a few numpy operations); `ModbusMap.writes` decodes and validates a write request.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

import numpy as np

from twin.errors import ConfigError, WriteRefused
from twin.points import DType, Kind, Point, PointTable

if TYPE_CHECKING:
    from twin.plant import Twin

WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
WORD_ORDERS: tuple[WordOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")
MAX_UNIT_ID = 247  # 0 is broadcast, 248..255 reserved
INT16_NAN = 0x8000
UINT16_NAN = 0xFFFF

Options = Mapping[str, tuple[str, float]]


class Table(StrEnum):
    """The four Modbus data tables."""

    COILS = "coils"
    DISCRETE_INPUTS = "discrete_inputs"
    HOLDING_REGISTERS = "holding_registers"
    INPUT_REGISTERS = "input_registers"

    @property
    def bits(self) -> bool:
        """True for the single-bit tables (coils, discrete inputs)."""
        return self in (Table.COILS, Table.DISCRETE_INPUTS)

    @property
    def writable(self) -> bool:
        """True for the tables a client can write (coils, holding registers)."""
        return self in (Table.COILS, Table.HOLDING_REGISTERS)


class Encoding(StrEnum):
    """How a point's value is held in its table."""

    BIT = "bit"
    FLOAT32 = "float32"
    INT16 = "int16"
    UINT16 = "uint16"


FUNCTION_TABLES: dict[int, Table] = {
    1: Table.COILS, 5: Table.COILS, 15: Table.COILS,
    2: Table.DISCRETE_INPUTS,
    3: Table.HOLDING_REGISTERS, 6: Table.HOLDING_REGISTERS, 16: Table.HOLDING_REGISTERS,
    22: Table.HOLDING_REGISTERS, 23: Table.HOLDING_REGISTERS,
    4: Table.INPUT_REGISTERS,
}

_INT_RANGE = {Encoding.INT16: (-32768, 32767), Encoding.UINT16: (0, 65535)}


# --------------------------------------------------------------------------- float32 codec


def _bswap16(words: np.ndarray) -> np.ndarray:
    return ((words & 0xFF) << 8) | (words >> 8)


def encode_float32(values: np.ndarray | Sequence[float], word_order: WordOrder) -> np.ndarray:
    """Float32 registers of ``values``: an (n, 2) uint16 array in ``word_order``."""
    with np.errstate(over="ignore"):  # beyond the float32 range: +-inf
        bits = np.asarray(values, dtype=np.float64).astype(np.float32).view(np.uint32)
    hi = (bits >> 16).astype(np.uint16)
    lo = (bits & 0xFFFF).astype(np.uint16)
    if word_order == "ABCD":
        pair = (hi, lo)
    elif word_order == "CDAB":
        pair = (lo, hi)
    elif word_order == "BADC":
        pair = (_bswap16(hi), _bswap16(lo))
    elif word_order == "DCBA":
        pair = (_bswap16(lo), _bswap16(hi))
    else:
        raise ValueError(f"unknown word order {word_order!r}; expected one of {WORD_ORDERS}")
    return np.stack(pair, axis=-1)


def decode_float32(registers: np.ndarray | Sequence[int] | Sequence[Sequence[int]],
                   word_order: WordOrder) -> np.ndarray:
    """Float32 values (as float64) of an (n, 2) array of registers in ``word_order``."""
    regs = np.asarray(registers, dtype=np.uint32).reshape(-1, 2)
    first, second = regs[:, 0], regs[:, 1]
    if word_order == "ABCD":
        hi, lo = first, second
    elif word_order == "CDAB":
        hi, lo = second, first
    elif word_order == "BADC":
        hi, lo = _bswap16(first), _bswap16(second)
    elif word_order == "DCBA":
        hi, lo = _bswap16(second), _bswap16(first)
    else:
        raise ValueError(f"unknown word order {word_order!r}; expected one of {WORD_ORDERS}")
    return ((hi << 16) | lo).astype(np.uint32).view(np.float32).astype(np.float64)


def encode_scaled(values: np.ndarray | Sequence[float], scales: np.ndarray | float,
                  encoding: Encoding) -> np.ndarray:
    """One uint16 register per value: ``round(value / scale)``, saturated; NaN is a marker."""
    lo, hi = _INT_RANGE[encoding]
    vals = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        raw = np.clip(np.rint(vals / scales), lo, hi)
    raw = np.where(np.isnan(raw), 0.0, raw).astype(np.int32).astype(np.uint16)
    nan = INT16_NAN if encoding is Encoding.INT16 else UINT16_NAN
    return np.where(np.isnan(vals), np.uint16(nan), raw)


def decode_scaled(registers: np.ndarray | Sequence[int], scales: np.ndarray | float,
                  encoding: Encoding) -> np.ndarray:
    """Values (``raw * scale``) of uint16 registers holding int16 or uint16 raws."""
    regs = np.asarray(registers, dtype=np.uint16)
    raw = regs.view(np.int16) if encoding is Encoding.INT16 else regs
    return raw.astype(np.float64) * scales


def float32_shortest(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (``35.2``, not 35.2000007)."""
    return float(str(np.float32(value)))


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True, slots=True)
class Entry:
    """Where and how one point lives in the map."""

    point: Point
    unit_id: int
    table: Table
    address: int
    encoding: Encoding
    scale: float = 1.0
    word_order: WordOrder | None = None  # float32 only

    @property
    def count(self) -> int:
        """Registers (or bits) the point occupies."""
        return 2 if self.encoding is Encoding.FLOAT32 else 1

    @property
    def writable(self) -> bool:
        """True when a client may write this point."""
        return self.table.writable and self.point.writable

    def describe(self) -> dict[str, object]:
        """The exported description (point list): unit id, table, address, type, ..."""
        out: dict[str, object] = {"unit_id": self.unit_id, "table": self.table.value,
                                  "address": self.address, "count": self.count,
                                  "type": self.encoding.value}
        if self.encoding is Encoding.FLOAT32:
            out["word_order"] = self.word_order
        if self.encoding in (Encoding.INT16, Encoding.UINT16):
            out["scale"] = self.scale
        return out

    def encode(self, value: float) -> list[int]:
        """Registers (or one 0/1 bit) holding ``value``."""
        if self.encoding is Encoding.BIT:
            return [int(bool(value) and not math.isnan(value))]
        if self.encoding is Encoding.FLOAT32:
            assert self.word_order is not None
            return [int(r) for r in encode_float32([value], self.word_order)[0]]
        return [int(encode_scaled([value], self.scale, self.encoding)[0])]

    def decode(self, raw: Sequence[int] | Sequence[bool]) -> float:
        """The value (in the point's unit) of this point's registers or bit."""
        if len(raw) != self.count:
            raise ValueError(f"{self.point.id}: expected {self.count} values, got {len(raw)}")
        if self.encoding is Encoding.BIT:
            return 1.0 if raw[0] else 0.0
        if self.encoding is Encoding.FLOAT32:
            assert self.word_order is not None
            return float(decode_float32([list(raw)], self.word_order)[0])
        return float(decode_scaled([int(raw[0])], self.scale, self.encoding)[0])

    def decode_write(self, raw: Sequence[int] | Sequence[bool]) -> float:
        """Decode a written value: float32 to its shortest decimal, scaled ints exactly."""
        value = self.decode(raw)
        if self.encoding is Encoding.FLOAT32:
            return float32_shortest(value)
        if self.encoding is not Encoding.BIT and self.scale != 1.0:
            return _round_scaled(value, self.scale)
        return value


def _round_scaled(value: float, scale: float) -> float:
    """``raw * scale`` without binary noise (3 * 0.1 -> 0.3)."""
    digits = max(0, -math.floor(math.log10(scale)) + 6) if scale > 0 else 0
    return round(value, digits)


@dataclass(slots=True)
class _Block:
    """Addresses of one (unit, table): ``owner[address]`` is an index into the entries."""

    size: int
    offset: int  # start in the map's flat register or bit image
    owner: list[int]
    starts: set[int]


class ModbusMap:
    """The register map of a point table (see the module docstring)."""

    def __init__(self, points: PointTable, *, word_order: WordOrder = "ABCD",
                 options: Options | None = None,
                 unit_ids: Mapping[str, int] | None = None) -> None:
        if word_order not in WORD_ORDERS:
            raise ValueError(f"unknown word order {word_order!r}; expected one of {WORD_ORDERS}")
        self.points = points
        self.word_order: WordOrder = word_order
        self.options: dict[str, tuple[Encoding, float]] = _check_options(points, options or {})
        self.unit_ids: dict[str, int] = _assign_units(points.devices(), unit_ids or {})
        self.devices: dict[int, str] = {uid: dev for dev, uid in self.unit_ids.items()}
        self.entries: list[Entry] = []
        self._by_id: dict[str, Entry] = {}
        self._blocks: dict[tuple[int, Table], _Block] = {}
        next_address: dict[tuple[int, Table], int] = {}
        for point in points:
            table, encoding, scale = self._placement(point)
            unit = self.unit_ids[point.device]
            address = next_address.get((unit, table), 0)
            entry = Entry(point, unit, table, address, encoding, scale,
                          word_order if encoding is Encoding.FLOAT32 else None)
            next_address[(unit, table)] = address + entry.count
            if address + entry.count > 65536:
                raise ValueError(f"{point.id}: unit {unit} {table.value} exceed 65536 addresses")
            self.entries.append(entry)
            self._by_id[point.id] = entry
        self._build_blocks(next_address)
        self._build_codec()

    @classmethod
    def for_twin(cls, twin: Twin, *, options: Options | None = None,
                 unit_ids: Mapping[str, int] | None = None) -> ModbusMap:
        """The map of a twin's point table in its site's word order."""
        return cls(twin.points, word_order=twin.site.protocols.word_order, options=options,
                   unit_ids=unit_ids)

    # -- layout --------------------------------------------------------------------------

    def _placement(self, point: Point) -> tuple[Table, Encoding, float]:
        option = self.options.get(point.id)
        encoding, scale = option if option is not None else (Encoding.FLOAT32, 1.0)
        if point.kind is Kind.COMMAND:
            if point.dtype is DType.BOOL and option is None:
                return Table.COILS, Encoding.BIT, 1.0
            return Table.HOLDING_REGISTERS, encoding, scale
        if point.kind is Kind.ALARM and option is None:
            return Table.DISCRETE_INPUTS, Encoding.BIT, 1.0
        return Table.INPUT_REGISTERS, encoding, scale

    def _build_blocks(self, sizes: dict[tuple[int, Table], int]) -> None:
        offsets = {"regs": 0, "bits": 0}
        for key in sorted(sizes, key=lambda k: (k[0], list(Table).index(k[1]))):
            image = "bits" if key[1].bits else "regs"
            self._blocks[key] = _Block(sizes[key], offsets[image], [0] * sizes[key], set())
            offsets[image] += sizes[key]
        self.register_count = offsets["regs"]
        self.bit_count = offsets["bits"]
        for index, entry in enumerate(self.entries):
            block = self._blocks[(entry.unit_id, entry.table)]
            block.starts.add(entry.address)
            for k in range(entry.count):
                block.owner[entry.address + k] = index

    def _build_codec(self) -> None:
        """Index arrays for `encode`: point index -> position in the flat images."""
        groups: dict[Encoding, tuple[list[int], list[int], list[float]]] = {
            e: ([], [], []) for e in Encoding}
        for entry in self.entries:
            block = self._blocks[(entry.unit_id, entry.table)]
            idx, pos, scales = groups[entry.encoding]
            idx.append(entry.point.index)
            pos.append(block.offset + entry.address)
            scales.append(entry.scale)
        self._codec = {e: (np.array(i, dtype=np.intp), np.array(p, dtype=np.intp),
                           np.array(s, dtype=np.float64)) for e, (i, p, s) in groups.items()}
        f_pos = self._codec[Encoding.FLOAT32][1]
        self._f32_pos = np.stack([f_pos, f_pos + 1], axis=-1)

    # -- queries -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def entry(self, point_id: str) -> Entry:
        """The entry of one point; KeyError if the point is not in the map."""
        return self._by_id[point_id]

    def unit_id(self, device: str) -> int:
        """The unit id of a device."""
        return self.unit_ids[device]

    def size(self, unit_id: int, table: Table) -> int:
        """Number of registers (or bits) of a table of a unit (0 if it has none)."""
        block = self._blocks.get((unit_id, table))
        return block.size if block is not None else 0

    def offset(self, unit_id: int, table: Table) -> int:
        """Start of a (unit, table) in the flat image `encode` returns (0 if empty)."""
        block = self._blocks.get((unit_id, table))
        return block.offset if block is not None else 0

    def blocks(self) -> list[tuple[int, Table, int, int]]:
        """Every non-empty (unit id, table, offset in its image, size)."""
        return [(u, t, b.offset, b.size) for (u, t), b in self._blocks.items()]

    def lookup(self, unit_id: int, table: Table, address: int) -> Entry | None:
        """The point holding a register (or bit) address, or None if undeclared."""
        block = self._blocks.get((unit_id, table))
        if block is None or not 0 <= address < block.size:
            return None
        return self.entries[block.owner[address]]

    def covering(self, unit_id: int, table: Table, address: int, count: int) -> list[Entry]:
        """The points exactly covered by ``count`` registers from ``address``.

        Raises WriteRefused(2) when the range leaves the table or cuts a point in two.
        """
        where = f"unit {unit_id} {table.value} {address}..{address + count - 1}"
        block = self._blocks.get((unit_id, table))
        if block is None or count < 1 or address < 0 or address + count > block.size:
            raise WriteRefused(where, "undeclared address", WriteRefused.ILLEGAL_ADDRESS)
        end = address + count
        if address not in block.starts or (end < block.size and end not in block.starts):
            raise WriteRefused(where, "range does not cover whole points",
                               WriteRefused.ILLEGAL_ADDRESS)
        owners = dict.fromkeys(block.owner[address:end])
        return [self.entries[i] for i in owners]

    def writes(self, unit_id: int, table: Table, address: int,
               values: Sequence[int] | Sequence[bool]) -> list[tuple[Entry, float]]:
        """Decode and validate a write of ``values`` from ``address``; nothing is applied.

        Returns ``[(entry, value in the point's unit)]``. Raises WriteRefused: code 2 for
        an undeclared or read-only address or a range that cuts a point, code 3 for a
        value the point does not accept (out of range, NaN, non-0/1 for a bool, ...).
        """
        entries = self.covering(unit_id, table, address, len(values))
        for entry in entries:
            if not entry.writable:
                raise WriteRefused(entry.point.id, f"point is a {entry.point.kind.value}, "
                                                   "not writable", WriteRefused.ILLEGAL_ADDRESS)
        out = []
        for entry in entries:
            start = entry.address - address
            raw = values[start:start + entry.count]
            out.append((entry, entry.point.coerce(entry.decode_write(raw))))
        return out

    # -- encoding ------------------------------------------------------------------------

    def encode(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every register and bit of the map from table-ordered ``values``.

        Returns ``(registers, bits)``: flat uint16 and bool images; a (unit, table) is
        ``image[offset:offset + size]`` (see `blocks`, `offset`).
        """
        values = np.asarray(values, dtype=np.float64)
        regs = np.zeros(self.register_count, dtype=np.uint16)
        bits = np.zeros(self.bit_count, dtype=bool)
        idx, _, _ = self._codec[Encoding.FLOAT32]
        if idx.size:
            regs[self._f32_pos] = encode_float32(values[idx], self.word_order)
        for encoding in (Encoding.INT16, Encoding.UINT16):
            idx, pos, scales = self._codec[encoding]
            if idx.size:
                regs[pos] = encode_scaled(values[idx], scales, encoding)
        idx, pos, _ = self._codec[Encoding.BIT]
        if idx.size:
            v = values[idx]
            bits[pos] = (v != 0) & ~np.isnan(v)
        return regs, bits

    def encode_unit(self, values: np.ndarray, unit_id: int) -> dict[Table, np.ndarray]:
        """The registers (uint16) or bits (bool) of every table of one unit."""
        regs, bits = self.encode(values)
        out = {}
        for table in Table:
            block = self._blocks.get((unit_id, table))
            if block is not None:
                image = bits if table.bits else regs
                out[table] = image[block.offset:block.offset + block.size]
        return out


def _check_options(points: PointTable, options: Options) -> dict[str, tuple[Encoding, float]]:
    out: dict[str, tuple[Encoding, float]] = {}
    for pid, option in options.items():
        if pid not in points:
            raise ValueError(f"modbus option for unknown point {pid!r}")
        try:
            name, scale = option
            encoding = Encoding(name)
        except (TypeError, ValueError):
            raise ValueError(f"modbus option of {pid}: expected (\"float32\"|\"int16\"|"
                             f"\"uint16\", scale), got {option!r}") from None
        if encoding is Encoding.BIT:
            raise ValueError(f"modbus option of {pid}: bits are not an option encoding")
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"modbus option of {pid}: scale must be > 0, got {scale!r}")
        if encoding is Encoding.FLOAT32 and scale != 1.0:
            raise ValueError(f"modbus option of {pid}: float32 takes no scale")
        out[pid] = (encoding, scale)
    return out


def _assign_units(devices: list[str], overrides: Mapping[str, int]) -> dict[str, int]:
    """Unit id of each device: its override, else its 1-based place in ``devices``."""
    unknown = sorted(set(overrides) - set(devices))
    if unknown:
        raise ConfigError(f"unit ids for unknown devices: {', '.join(unknown)}")
    units = {dev: int(overrides.get(dev, i + 1)) for i, dev in enumerate(devices)}
    seen: dict[int, str] = {}
    for dev, uid in units.items():
        if not 1 <= uid <= MAX_UNIT_ID:
            raise ConfigError(f"unit id of {dev} must be 1..{MAX_UNIT_ID}, got {uid}")
        if uid in seen:
            given = [d for d in (seen[uid], dev) if d not in overrides]
            note = (f" ({given[0]} has it by default: devices without a unit id are "
                    "numbered 1, 2, ... in point-table order)") if given else ""
            raise ConfigError(f"unit id {uid} given to both {seen[uid]} and {dev}{note}")
        seen[uid] = dev
    return units

