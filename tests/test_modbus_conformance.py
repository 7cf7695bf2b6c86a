"""Modbus/TCP conformance of the rig's server, frame by frame, over raw sockets.

Every function code the server serves is sent with its legal and illegal edges
(quantity 0, 1, max, max + 1; address edges; bad byte count; bad coil value; wrong PDU
length) as struct-packed MBAP frames, so that no client library can hide or fix anything.
The expected answers follow the Modbus Application Protocol Specification V1.1b3: the
quantity and byte-count checks (exception 03) come before the address check (02); FC23
validates both parts and applies nothing on an exception; a segment carrying several
requests gets every answer, in order.

The map is a synthetic device large enough for every maximum quantity: unit 1 has 2000
coils (bool commands), 2000 discrete inputs (alarms), 130 holding registers (int
commands, uint16, 0..1000) and 130 input registers (uint16 statuses), at sequential
addresses in that order; unit 2 has input registers only. Expected answers are computed
here from those values, not from the server's code.
"""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from rig.protocols.modbus.registers import ModbusMap
from rig.protocols.modbus.server import ModbusConfig, ModbusServer
from twin.points import DType, Kind, Point, PointTable

N_COILS = N_DISCRETE = 2000
N_HOLDING = N_INPUT = 130
HOLDING_HI = 1000  # the holding registers' points accept 0..1000
BIG, READ_ONLY, ABSENT = 1, 2, 99


class Plant:
    """The points of the synthetic device, their values, and the writes applied to them."""

    def __init__(self) -> None:
        self.table = PointTable()
        self.values: dict[str, float] = {}
        self.initial: dict[str, float] = {}
        self.now = 0.0
        for i in range(N_COILS):
            self._add(f"big.b{i:04d}", Kind.COMMAND, DType.BOOL, 0, 1, float(i % 3 == 0))
        for i in range(N_HOLDING):
            self._add(f"big.r{i:03d}", Kind.COMMAND, DType.INT, 0, HOLDING_HI, i * 7 % 1000)
        for i in range(N_DISCRETE):
            self._add(f"big.a{i:04d}", Kind.ALARM, DType.BOOL, 0, 1, float(i % 5 == 1))
        for i in range(N_INPUT):
            self._add(f"big.s{i:03d}", Kind.STATUS, DType.INT, 0, 65535, i * 997 % 65536)
        for i in range(2):
            self._add(f"ro.s{i}", Kind.STATUS, DType.INT, 0, 65535, 40000 + i)
        options = {p.id: ("uint16", 1.0) for p in self.table
                   if p.dtype is DType.INT}
        self.map = ModbusMap(self.table, options=options)
        assert self.map.unit_ids == {"big": BIG, "ro": READ_ONLY}

    def _add(self, pid: str, kind: Kind, dtype: DType, lo: float, hi: float,
             value: float) -> None:
        self.values[pid] = self.initial[pid] = float(value)

        def setter(v: float) -> None:
            self.values[pid] = v

        self.table.add(Point(pid, pid.split(".")[0], kind, dtype, "1", lo, hi, pid,
                             lambda: self.values[pid],
                             setter if kind is Kind.COMMAND else None))

    def reset(self) -> Plant:
        """Back to the initial values (the map is built once: it takes a while)."""
        self.values.update(self.initial)
        return self

    # the part of `twin.plant.Twin` that `ModbusServer.apply_pending` uses
    @property
    def points(self) -> PointTable:
        return self.table

    def write(self, point_id: str, value: float, source: str) -> float:
        point = self.table[point_id]
        coerced = point.coerce(value)
        assert point.setter is not None
        point.setter(coerced)
        return coerced

    def measured(self) -> np.ndarray:
        return np.array([p.getter() for p in self.table])

    # what the wire must show, from the values alone
    def coils(self, start: int, count: int) -> list[bool]:
        return [self.values[f"big.b{i:04d}"] != 0 for i in range(start, start + count)]

    def discrete(self, start: int, count: int) -> list[bool]:
        return [self.values[f"big.a{i:04d}"] != 0 for i in range(start, start + count)]

    def holding(self, start: int, count: int) -> list[int]:
        return [int(self.values[f"big.r{i:03d}"]) for i in range(start, start + count)]

    def inputs(self, start: int, count: int) -> list[int]:
        return [int(self.values[f"big.s{i:03d}"]) for i in range(start, start + count)]


PLANT = Plant()  # shared by the tests, reset by each


def pack_bits(bits: list[bool]) -> bytes:
    """Bits LSB first in each byte, the last byte padded with zeros."""
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def bits_answer(fc: int, bits: list[bool]) -> bytes:
    data = pack_bits(bits)
    return bytes([fc, len(data)]) + data


def regs_answer(fc: int, regs: list[int]) -> bytes:
    return bytes([fc, 2 * len(regs)]) + struct.pack(f">{len(regs)}H", *regs)


def mbap(tid: int, unit: int, pdu: bytes, protocol: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1, unit) + pdu


class Raw:
    """One TCP connection speaking bytes: frames out, frames in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.tid = 0

    @classmethod
    async def open(cls, port: int) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self, timeout: float = 3.0) -> tuple[int, int, bytes]:
        """(transaction id, unit id, PDU) of the next answer; checks the MBAP header."""
        head = await asyncio.wait_for(self.reader.readexactly(7), timeout)
        tid, protocol, length, unit = struct.unpack(">HHHB", head)
        assert protocol == 0 and 2 <= length <= 254, head
        pdu = await asyncio.wait_for(self.reader.readexactly(length - 1), timeout)
        return tid, unit, pdu

    async def ask(self, unit: int, pdu: bytes) -> bytes:
        """Send one request and return the answer's PDU (its ids must echo the request's)."""
        self.tid = (self.tid + 1) % 65536
        self.send(mbap(self.tid, unit, pdu))
        tid, got_unit, answer = await self.frame()
        assert (tid, got_unit) == (self.tid, unit)
        return answer

    async def closed_by_server(self, timeout: float = 3.0) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), timeout) == b""
        except ConnectionError:
            return True

    def close(self) -> None:
        self.writer.close()


class Bench:
    """The synthetic plant served on a free loopback port (async context)."""

    def __init__(self, **config: Any) -> None:
        self.plant = PLANT.reset()
        self.server = ModbusServer(self.plant.map,
                                   ModbusConfig(port=0, queue_bound=10_000, **config))

    async def __aenter__(self) -> Bench:
        await self.server.start()
        self.refresh()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()

    def refresh(self) -> None:
        self.server.refresh(self.plant.measured(), self.plant.now)

    def slice(self) -> list[Any]:
        applied = self.server.apply_pending(self.plant)
        self.refresh()
        return applied

    @property
    def pending(self) -> int:
        return int(self.server.stats()["pending_writes"])


def run(coro_fn: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), timeout))


# --------------------------------------------------------------------------- the table


def read_req(fc: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", fc, address, count)


def coils_req(address: int, bits: list[bool], count: int | None = None,
              byte_count: int | None = None, extra: bytes = b"") -> bytes:
    data = pack_bits(bits) + extra
    count = len(bits) if count is None else count
    byte_count = len(pack_bits(bits)) if byte_count is None else byte_count
    return struct.pack(">BHHB", 15, address, count, byte_count) + data


def regs_req(address: int, regs: list[int], count: int | None = None,
             byte_count: int | None = None, extra: bytes = b"") -> bytes:
    count = len(regs) if count is None else count
    byte_count = 2 * len(regs) if byte_count is None else byte_count
    return (struct.pack(">BHHB", 16, address, count, byte_count)
            + struct.pack(f">{len(regs)}H", *regs) + extra)


def rw_req(read_address: int, read_count: int, write_address: int, regs: list[int],
           write_count: int | None = None, byte_count: int | None = None) -> bytes:
    write_count = len(regs) if write_count is None else write_count
    byte_count = 2 * len(regs) if byte_count is None else byte_count
    return (struct.pack(">BHHHHB", 23, read_address, read_count, write_address, write_count,
                        byte_count) + struct.pack(f">{len(regs)}H", *regs))


def vals(n: int, start: int = 1) -> list[int]:
    """``n`` register values every holding point accepts (0..1000)."""
    return [(start + 3 * i) % HOLDING_HI for i in range(n)]


Expect = int | Callable[[Plant], bytes]  # an exception code, or the whole answer PDU


@dataclass(frozen=True)
class Case:
    name: str
    pdu: bytes
    expect: Expect
    unit: int = BIG
    write: bool = False  # an accepted request queues writes


def _cases() -> list[Case]:
    c: list[Case] = []
    reads = ((1, N_COILS, 2000, "coils"), (2, N_DISCRETE, 2000, "discrete"),
             (3, N_HOLDING, 125, "holding"), (4, N_INPUT, 125, "inputs"))
    for fc, size, most, source in reads:
        def answer(start: int, count: int, fc: int = fc, source: str = source) -> Expect:
            if fc <= 2:
                return lambda p: bits_answer(fc, getattr(p, source)(start, count))
            return lambda p: regs_answer(fc, getattr(p, source)(start, count))

        c += [
            Case(f"fc{fc} quantity 0", read_req(fc, 0, 0), 3),
            Case(f"fc{fc} quantity 1", read_req(fc, 0, 1), answer(0, 1)),
            Case(f"fc{fc} quantity 9 (two bytes of bits)", read_req(fc, 3, 9), answer(3, 9)),
            Case(f"fc{fc} quantity max {most}", read_req(fc, 0, most), answer(0, most)),
            Case(f"fc{fc} quantity max+1", read_req(fc, 0, most + 1), 3),
            Case(f"fc{fc} quantity 0xFFFF", read_req(fc, 0, 0xFFFF), 3),
            Case(f"fc{fc} bad quantity beats bad address", read_req(fc, size, 0), 3),
            Case(f"fc{fc} last address", read_req(fc, size - 1, 1), answer(size - 1, 1)),
            Case(f"fc{fc} past the end", read_req(fc, size, 1), 2),
            Case(f"fc{fc} across the end", read_req(fc, size - 1, 2), 2),
            Case(f"fc{fc} address 0xFFFF", read_req(fc, 0xFFFF, 1), 2),
            Case(f"fc{fc} address + quantity > 0x10000", read_req(fc, 0xFFFF, 2), 2),
            Case(f"fc{fc} PDU one byte short", read_req(fc, 0, 1)[:-1], 3),
            Case(f"fc{fc} PDU one byte long", read_req(fc, 0, 1) + b"\x00", 3),
            Case(f"fc{fc} function code only", bytes([fc]), 3),
        ]
    c += [Case("fc4 unit with input registers only", read_req(4, 0, 2),
               lambda p: regs_answer(4, [40000, 40001]), unit=READ_ONLY),
          Case("fc3 unit without holding registers", read_req(3, 0, 1), 2, unit=READ_ONLY),
          Case("fc1 unit without coils", read_req(1, 0, 1), 2, unit=READ_ONLY)]

    def echo(pdu: bytes) -> Expect:
        return lambda p: pdu

    for value, name in ((0xFF00, "ON"), (0x0000, "OFF")):
        pdu = struct.pack(">BHH", 5, 7, value)
        c.append(Case(f"fc5 {name}", pdu, echo(pdu), write=True))
    for value in (0x0001, 0x00FF, 0xFF01, 0xFFFF, 0x0100, 0x8000):
        c.append(Case(f"fc5 value {value:#06x}", struct.pack(">BHH", 5, 7, value), 3))
    c += [
        Case("fc5 past the end", struct.pack(">BHH", 5, N_COILS, 0xFF00), 2),
        Case("fc5 bad value beats bad address", struct.pack(">BHH", 5, N_COILS, 1), 3),
        Case("fc5 PDU short", struct.pack(">BHH", 5, 7, 0xFF00)[:-1], 3),
        Case("fc5 read-only unit", struct.pack(">BHH", 5, 0, 0xFF00), 2, unit=READ_ONLY),
    ]
    pdu6 = struct.pack(">BHH", 6, N_HOLDING - 1, 999)
    c += [
        Case("fc6 last register", pdu6, echo(pdu6), write=True),
        Case("fc6 value the point refuses", struct.pack(">BHH", 6, 0, HOLDING_HI + 1), 3),
        Case("fc6 past the end", struct.pack(">BHH", 6, N_HOLDING, 1), 2),
        Case("fc6 PDU long", pdu6 + b"\x00", 3),
        Case("fc6 input registers are read-only", struct.pack(">BHH", 6, 0, 1), 2,
             unit=READ_ONLY),
    ]

    def count_answer(fc: int, address: int, count: int) -> Expect:
        return echo(struct.pack(">BHH", fc, address, count))

    bits = [i % 2 == 0 for i in range(1968)]
    c += [
        Case("fc15 quantity 0", coils_req(0, [], count=0, byte_count=0), 3),
        Case("fc15 quantity 0 with a data byte", coils_req(0, [True], count=0), 3),
        Case("fc15 quantity 1", coils_req(4, [True]), count_answer(15, 4, 1), write=True),
        Case("fc15 quantity 10", coils_req(4, bits[:10]), count_answer(15, 4, 10),
             write=True),
        Case("fc15 quantity max 1968", coils_req(0, bits), count_answer(15, 0, 1968),
             write=True),
        Case("fc15 quantity max+1", coils_req(0, [*bits, True]), 3),
        Case("fc15 byte count short of the quantity", coils_req(0, bits[:9], byte_count=1), 3),
        Case("fc15 byte count beyond the quantity", coils_req(0, bits[:8], byte_count=2,
                                                              extra=b"\x00"), 3),
        Case("fc15 data shorter than the byte count",
             coils_req(0, bits[:9])[:-1], 3),
        Case("fc15 data longer than the byte count", coils_req(0, bits[:9], extra=b"\x00"), 3),
        Case("fc15 past the end", coils_req(N_COILS - 1, [True, True]), 2),
        Case("fc15 last coil", coils_req(N_COILS - 1, [True]),
             count_answer(15, N_COILS - 1, 1), write=True),
        Case("fc15 header only", struct.pack(">BHH", 15, 0, 1), 3),
    ]
    c += [
        Case("fc16 quantity 0", regs_req(0, [], count=0, byte_count=0), 3),
        Case("fc16 quantity 1", regs_req(5, vals(1)), count_answer(16, 5, 1), write=True),
        Case("fc16 quantity max 123", regs_req(0, vals(123)), count_answer(16, 0, 123),
             write=True),
        Case("fc16 quantity max+1", regs_req(0, vals(123), count=124), 3),  # 124 won't fit
        Case("fc16 byte count odd", regs_req(0, vals(2), byte_count=3), 3),
        Case("fc16 byte count for another quantity", regs_req(0, vals(2), count=3), 3),
        Case("fc16 data shorter than the byte count", regs_req(0, vals(2))[:-1], 3),
        Case("fc16 data longer than the byte count", regs_req(0, vals(2), extra=b"\x00\x01"),
             3),
        Case("fc16 across the end", regs_req(N_HOLDING - 1, vals(2)), 2),
        Case("fc16 bad byte count beats bad address", regs_req(N_HOLDING, vals(2),
                                                                byte_count=3), 3),
        Case("fc16 one value refused refuses all", regs_req(0, [1, HOLDING_HI + 1]), 3),
        Case("fc16 last register", regs_req(N_HOLDING - 1, vals(1)),
             count_answer(16, N_HOLDING - 1, 1), write=True),
    ]
    mask = struct.pack(">BHHH", 22, 3, 0x00F0, 0x0005)
    c += [
        Case("fc22 mask write", mask, echo(mask), write=True),
        Case("fc22 past the end", struct.pack(">BHHH", 22, N_HOLDING, 0, 0), 2),
        Case("fc22 result the point refuses", struct.pack(">BHHH", 22, 3, 0, 0xFFFF), 3),
        Case("fc22 PDU short", mask[:-1], 3),
    ]

    def rw_answer(read_address: int, read_count: int, write_address: int,
                  regs: list[int]) -> Expect:
        def expected(p: Plant) -> bytes:  # the write happens before the read
            image = p.holding(0, N_HOLDING)
            image[write_address:write_address + len(regs)] = regs
            return regs_answer(23, image[read_address:read_address + read_count])
        return expected

    c += [
        Case("fc23 read 1 write 1", rw_req(0, 1, 0, vals(1)), rw_answer(0, 1, 0, vals(1)),
             write=True),
        Case("fc23 read max 125 write max 121", rw_req(0, 125, 2, vals(121)),
             rw_answer(0, 125, 2, vals(121)), write=True),
        Case("fc23 read 0", rw_req(0, 0, 0, vals(1)), 3),
        Case("fc23 read max+1", rw_req(0, 126, 0, vals(1)), 3),
        Case("fc23 write 0", rw_req(0, 1, 0, [], write_count=0, byte_count=0), 3),
        Case("fc23 write max+1", rw_req(0, 1, 0, vals(121), write_count=122), 3),
        Case("fc23 byte count for another quantity", rw_req(0, 1, 0, vals(2), write_count=3),
             3),
        Case("fc23 data shorter than the byte count", rw_req(0, 1, 0, vals(2))[:-1], 3),
        Case("fc23 read part past the end", rw_req(N_HOLDING, 1, 0, vals(1)), 2),
        Case("fc23 read part across the end", rw_req(N_HOLDING - 1, 2, 0, vals(1)), 2),
        Case("fc23 write part past the end", rw_req(0, 1, N_HOLDING, vals(1)), 2),
        Case("fc23 write value refused", rw_req(0, 1, 0, [HOLDING_HI + 1]), 3),
        Case("fc23 read-only unit", rw_req(0, 1, 0, vals(1)), 2, unit=READ_ONLY),
    ]
    for fc in (0, 7, 8, 11, 12, 17, 20, 21, 24, 43, 0x41, 0x64):
        c.append(Case(f"function code {fc} not served", bytes([fc, 0, 0, 0, 1]), 1))
    c += [
        Case("function code 0x83 (an exception code) not served", bytes([0x83, 0, 0, 0, 1]),
             1),
        Case("unit id not served", read_req(3, 0, 1), 0x0B, unit=ABSENT),
        Case("unit id 0 not served", read_req(3, 0, 1), 0x0B, unit=0),
        Case("unit id 255 not served", read_req(3, 0, 1), 0x0B, unit=255),
    ]
    return c


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_function_code_edges(case: Case) -> None:
    async def main() -> None:
        async with Bench() as bench:
            raw = await Raw.open(bench.server.port)
            before_regs = bench.plant.holding(0, N_HOLDING)
            answer = await raw.ask(case.unit, case.pdu)
            fc = case.pdu[0]
            if isinstance(case.expect, int):
                assert answer == bytes([fc | 0x80, case.expect]), answer.hex()
                assert bench.pending == 0  # an exception applies nothing
                assert bench.server.stats()["exceptions"] == {case.expect: 1}
            else:
                assert answer == case.expect(bench.plant), answer.hex()
                assert (bench.pending > 0) == case.write
                assert bench.server.stats()["exceptions"] == {}
            if fc == 23 and isinstance(case.expect, int):  # atomic: nothing written
                check = await raw.ask(BIG, read_req(3, 0, N_HOLDING - 5))
                assert check == regs_answer(3, before_regs[:N_HOLDING - 5])
                assert bench.slice() == []
                assert bench.plant.holding(0, N_HOLDING) == before_regs
            raw.close()

    run(main)


def test_writes_reach_the_points_and_read_back() -> None:
    async def main() -> None:
        async with Bench() as bench:
            raw = await Raw.open(bench.server.port)
            p = bench.plant
            assert await raw.ask(BIG, struct.pack(">BHH", 5, 1, 0xFF00)) == \
                struct.pack(">BHH", 5, 1, 0xFF00)
            assert await raw.ask(BIG, coils_req(10, [True, False, True])) == \
                struct.pack(">BHH", 15, 10, 3)
            assert await raw.ask(BIG, regs_req(20, [11, 22, 33])) == \
                struct.pack(">BHH", 16, 20, 3)
            assert await raw.ask(BIG, struct.pack(">BHH", 6, 30, 444)) == \
                struct.pack(">BHH", 6, 30, 444)
            old = p.holding(3, 1)[0]
            assert await raw.ask(BIG, struct.pack(">BHHH", 22, 3, 0x00F0, 0x0005)) == \
                struct.pack(">BHHH", 22, 3, 0x00F0, 0x0005)
            masked = (old & 0x00F0) | (0x0005 & ~0x00F0 & 0xFFFF)
            # queued: read back as written before the slice, the points still unchanged
            assert await raw.ask(BIG, read_req(1, 10, 3)) == bits_answer(1, [True, False, True])
            assert await raw.ask(BIG, read_req(3, 20, 3)) == regs_answer(3, [11, 22, 33])
            assert p.values["big.r020"] != 11
            applied = bench.slice()
            assert [(a.point, a.value) for a in applied] == [
                ("big.b0001", 1.0), ("big.b0010", 1.0), ("big.b0011", 0.0), ("big.b0012", 1.0),
                ("big.r020", 11.0), ("big.r021", 22.0), ("big.r022", 33.0),
                ("big.r030", 444.0), ("big.r003", float(masked))]
            assert p.coils(10, 3) == [True, False, True] and p.holding(20, 3) == [11, 22, 33]
            assert await raw.ask(BIG, read_req(3, 3, 1)) == regs_answer(3, [masked])
            # FC23 writes first, then reads what it wrote
            answer = await raw.ask(BIG, rw_req(19, 4, 20, [7, 8]))
            assert answer == regs_answer(23, [p.holding(19, 1)[0], 7, 8, 33])
            assert [(a.point, a.value) for a in bench.slice()] == [("big.r020", 7.0),
                                                                   ("big.r021", 8.0)]
            raw.close()

    run(main)


# --------------------------------------------------------------------------- framing


def test_pipelined_requests_in_one_segment_are_each_answered_in_order() -> None:
    async def main() -> None:
        async with Bench() as bench:
            raw = await Raw.open(bench.server.port)
            p = bench.plant
            requests = [
                (1, read_req(4, 0, 3)),
                (2, regs_req(0, [5, 6])),
                (3, read_req(3, 0, 2)),  # sees the write just before it
                (4, bytes([0x07])),  # not served: 01, and the stream goes on
                (5, read_req(1, 0, 16)),
                (6, read_req(3, 0, 0)),
                (7, read_req(2, 0, 8)),
            ]
            raw.send(b"".join(mbap(tid, BIG, pdu) for tid, pdu in requests))
            answers = [await raw.frame() for _ in requests]
            assert [a[0] for a in answers] == [tid for tid, _ in requests]
            assert answers[0][2] == regs_answer(4, p.inputs(0, 3))
            assert answers[1][2] == struct.pack(">BHH", 16, 0, 2)
            assert answers[2][2] == regs_answer(3, [5, 6])
            assert answers[3][2] == bytes([0x87, 1])
            assert answers[4][2] == bits_answer(1, p.coils(0, 16))
            assert answers[5][2] == bytes([0x83, 3])
            assert answers[6][2] == bits_answer(2, p.discrete(0, 8))
            # 100 reads in one segment: 100 answers, in order
            raw.send(b"".join(mbap(1000 + k, BIG, read_req(4, k, 1)) for k in range(100)))
            for k in range(100):
                tid, _, pdu = await raw.frame()
                assert tid == 1000 + k and pdu == regs_answer(4, p.inputs(k, 1))
            raw.close()

    run(main)


def test_frames_split_across_segments_and_one_and_a_half_frames_per_segment() -> None:
    async def main() -> None:
        async with Bench() as bench:
            raw = await Raw.open(bench.server.port)
            p = bench.plant
            frames = b"".join(mbap(tid, BIG, read_req(3, tid, 2)) for tid in range(1, 5))
            for k in range(0, len(frames), 18):  # 12-byte frames cut every 18 bytes
                raw.send(frames[k:k + 18])
                await raw.writer.drain()
                await asyncio.sleep(0.02)
            for tid in range(1, 5):
                assert await raw.frame() == (tid, BIG, regs_answer(3, p.holding(tid, 2)))
            one = mbap(9, BIG, read_req(4, 0, 1))
            for byte in one:  # one byte a segment
                raw.send(bytes([byte]))
                await raw.writer.drain()
                await asyncio.sleep(0.005)
            assert await raw.frame() == (9, BIG, regs_answer(4, p.inputs(0, 1)))
            raw.close()

    run(main)


def test_bad_protocol_id_is_dropped_and_the_stream_goes_on() -> None:
    async def main() -> None:
        async with Bench() as bench:
            raw = await Raw.open(bench.server.port)
            raw.send(mbap(1, BIG, read_req(3, 0, 1), protocol=1)
                     + mbap(2, BIG, read_req(3, 0, 1), protocol=0xFFFF)
                     + mbap(3, BIG, read_req(3, 0, 1)))
            assert await raw.frame() == (3, BIG, regs_answer(3, bench.plant.holding(0, 1)))
            stats = bench.server.stats()
            assert stats["protocol_errors"]["bad_protocol_id"] == 2
            assert stats["requests"] == 1
            raw.close()

    run(main)


@pytest.mark.parametrize("length", [0, 1, 255, 256, 0xFFFF])
def test_impossible_mbap_length_closes_the_connection(length: int) -> None:
    async def main() -> None:
        async with Bench() as bench:
            raw = await Raw.open(bench.server.port)
            assert await raw.ask(BIG, read_req(3, 0, 1)) == \
                regs_answer(3, bench.plant.holding(0, 1))
            raw.send(struct.pack(">HHHB", 7, 0, length, BIG) + b"\x03\x00\x00\x00\x01")
            assert await raw.closed_by_server()
            assert bench.server.stats()["protocol_errors"]["bad_length"] == 1
            fresh = await Raw.open(bench.server.port)  # the server itself is fine
            assert await fresh.ask(BIG, read_req(4, 0, 1)) == \
                regs_answer(4, bench.plant.inputs(0, 1))
            fresh.close()
            raw.close()

    run(main)


def test_largest_frames_are_accepted() -> None:
    """253-byte PDUs (MBAP length 254): FC16 with 123 registers, FC23 with 121."""
    async def main() -> None:
        async with Bench() as bench:
            raw = await Raw.open(bench.server.port)
            pdu = regs_req(0, vals(123))
            assert len(pdu) == 252
            assert await raw.ask(BIG, pdu) == struct.pack(">BHH", 16, 0, 123)
            pdu = rw_req(0, 125, 0, vals(121, start=5))
            assert len(pdu) == 252
            answer = await raw.ask(BIG, pdu)
            assert answer[:2] == bytes([23, 250]) and len(answer) == 252
            assert bench.server.stats()["exceptions"] == {}
            raw.close()

    run(main)


def test_exception_counts_match_the_table() -> None:
    """One connection, every case in turn: the server's counters agree with the table."""
    async def main() -> None:
        async with Bench() as bench:
            raw = await Raw.open(bench.server.port)
            for case in CASES:
                await raw.ask(case.unit, case.pdu)
                bench.slice()
            want = Counter(c.expect for c in CASES if isinstance(c.expect, int))
            stats = bench.server.stats()
            assert stats["exceptions"] == dict(want)
            assert stats["requests"] == len(CASES)
            assert stats["unknown_unit"] == sum(1 for c in CASES if c.expect == 0x0B)
            raw.close()

    run(main)
