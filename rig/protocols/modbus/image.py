"""The served registers and bits of every unit: the snapshot of the last ``refresh``, with
the writes queued since laid over it.

Each request is answered from one snapshot, so all values of one read come from the same
slice. Writes are validated as a whole before anything is queued (`Image.prepare`, then
`Image.commit`): exception 02 for an undeclared or read-only address or a range that cuts
a point in two, 03 for a value the point refuses, 06 when the queue is full. Units in
``frozen`` (modbus_frozen) keep their registers and bits across a refresh.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from rig.protocols.modbus.exceptions import DEVICE_BUSY, ILLEGAL_ADDRESS, Refused
from rig.protocols.modbus.registers import ModbusMap, Table
from twin.errors import WriteRefused


@dataclass(frozen=True, slots=True)
class Pending:
    """One accepted point write waiting for ``apply_pending``."""

    point: str
    value: float
    unit_id: int
    position: int  # in the flat register or bit image
    raw: tuple[int, ...] | tuple[bool, ...]
    bits: bool


class Image:
    """The served registers and bits of every unit: the snapshot plus queued writes.

    Registers are held as the big-endian bytes a read answers with, bits as a bool array.
    """

    def __init__(self, modbus_map: ModbusMap, queue_bound: int) -> None:
        self.map = modbus_map
        self.queue_bound = queue_bound
        self.pending: deque[Pending] = deque()
        self.on_commit: Callable[[Pending], None] | None = None  # told of each queued write
        self.refused_full = 0
        self.sim_time = math.nan
        self.frozen: frozenset[int] = frozenset()  # units whose snapshot refresh keeps
        self.frozen_reads = 0
        self.blocks = {(u, t): (off, size) for u, t, off, size in modbus_map.blocks()}
        self.regs = bytearray(2 * modbus_map.register_count)
        self.bits = np.zeros(modbus_map.bit_count, dtype=bool)

    def refresh(self, values: np.ndarray, sim_time: float) -> None:
        """Encode a new snapshot from table-ordered values; pending writes stay visible.

        The blocks of ``frozen`` units keep what they held (modbus_frozen).
        """
        if len(values) < len(self.map):
            raise ValueError(f"refresh: {len(values)} values for {len(self.map)} points")
        regs, bits = self.map.encode(values)
        new_regs = bytearray(regs.astype(">u2").tobytes())
        if self.frozen:
            for (unit, table), (off, size) in self.blocks.items():
                if unit in self.frozen:
                    if table.bits:
                        bits[off:off + size] = self.bits[off:off + size]
                    else:
                        new_regs[2 * off:2 * (off + size)] = self.regs[2 * off:2 * (off + size)]
        self.regs = new_regs
        self.bits = bits
        self.sim_time = float(sim_time)
        for write in self.pending:
            self._overlay(write)

    def _overlay(self, write: Pending) -> None:
        if write.bits:
            self.bits[write.position:write.position + len(write.raw)] = write.raw
        else:
            struct.pack_into(f">{len(write.raw)}H", self.regs, 2 * write.position, *write.raw)

    def span(self, unit: int, table: Table, address: int, count: int) -> int:
        """Start in the flat image of ``count`` items from ``address``; 02 if outside."""
        off, size = self.blocks.get((unit, table), (0, 0))
        if address + count > size:
            raise Refused(ILLEGAL_ADDRESS)
        return off + address

    def read(self, unit: int, table: Table, address: int, count: int,
             served: bool = True) -> bytes:
        """Registers (big-endian bytes) or bits (packed, LSB first) of a read request
        (``served`` False: an internal look, not counted as a read of a frozen unit)."""
        start = self.span(unit, table, address, count)
        if served and unit in self.frozen:
            self.frozen_reads += 1
        if table.bits:
            return np.packbits(self.bits[start:start + count], bitorder="little").tobytes()
        return bytes(self.regs[2 * start:2 * (start + count)])

    def prepare(self, unit: int, table: Table, address: int,
                values: list[int] | list[bool]) -> list[Pending]:
        """Validate a write; the queued entries it would make, or Refused (02/03/06)."""
        try:
            writes = self.map.writes(unit, table, address, values)
        except WriteRefused as exc:
            raise Refused(exc.code, None, str(exc)) from None
        if len(self.pending) + len(writes) > self.queue_bound:
            self.refused_full += 1
            raise Refused(DEVICE_BUSY, None, f"write queue full ({self.queue_bound})")
        off = self.blocks[(unit, table)][0]
        out = []
        for entry, value in writes:
            start = entry.address - address
            raw = tuple(values[start:start + entry.count])
            out.append(Pending(entry.point.id, value, unit, off + entry.address, raw,
                                table.bits))
        return out

    def commit(self, writes: Iterable[Pending]) -> None:
        """Queue validated writes; they read back as written until the next refresh."""
        for write in writes:
            self.pending.append(write)
            self._overlay(write)
            if self.on_commit is not None:
                self.on_commit(write)
