"""The rig's Modbus TCP side: register map, server on a free loopback port, watchdog.

A real pymodbus client talks to the real server on one asyncio loop (the server runs on
the loop that drives the twin, as in the live runner). Values read over the wire are
decoded here with `struct`, independently of `rig.protocols.modbus.registers`.
Connection handling (caps, eviction, frame deadline, backpressure) is tested with raw
sockets from several loopback source addresses (127.0.0.x), and the log under a flood of
malformed frames with `bench.fuzz_modbus`. Frame-level conformance is in
``test_modbus_conformance.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymodbus.client import AsyncModbusTcpClient

from rig.protocols.modbus.registers import (
    WORD_ORDERS,
    Encoding,
    ModbusMap,
    Table,
    decode_float32,
    encode_float32,
)
from rig.protocols.modbus.server import ModbusConfig, ModbusServer, parse_endpoint
from rig.runtime.watchdog import Watchdog
from twin.errors import WriteRefused
from twin.plant import Twin
from twin.points import Kind
from twin.site import Site

SCALED = {"cdu1.supply_temp": ("int16", 0.01), "cdu1.valve_cmd": ("int16", 0.001),
          "facility.pump_speed_cmd": ("uint16", 0.0001), "cdu2.isolate": ("uint16", 1.0),
          "hp1.trip_count": ("uint16", 1.0)}
Request = Callable[[], Awaitable[Any]]
BYTE_ORDER = {"ABCD": (0, 1, 2, 3), "CDAB": (2, 3, 0, 1), "BADC": (1, 0, 3, 2),
              "DCBA": (3, 2, 1, 0)}  # wire byte k holds big-endian byte BYTE_ORDER[k]


def make_twin(word_order: str = "ABCD") -> Twin:
    return Twin(Site(name="reference-1mw", protocols={"word_order": word_order}), seed=1)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 30))


class Rig:
    """A twin, its map and a started server plus a connected client (async context)."""

    def __init__(self, twin: Twin, modbus_map: ModbusMap, config: ModbusConfig | None = None,
                 **server_kw: Any) -> None:
        self.twin, self.map = twin, modbus_map
        self.server = ModbusServer(modbus_map, config or ModbusConfig(port=0), **server_kw)
        self.client: AsyncModbusTcpClient

    async def __aenter__(self) -> Rig:
        await self.server.start()
        self.refresh()
        self.client = AsyncModbusTcpClient("127.0.0.1", port=self.server.port, timeout=5,
                                           retries=0, reconnect_delay=0)
        assert await self.client.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.close()
        await self.server.stop()

    def refresh(self) -> np.ndarray:
        values = self.twin.measured_values()
        self.server.refresh(values, self.twin.now)
        return values

    def slice(self, dt: float = 0.1) -> list[Any]:
        """One slice of the live runner: apply writes, advance, refresh."""
        applied = self.server.apply_pending(self.twin)
        self.twin.run_until(self.twin.now + dt)
        self.refresh()
        return applied


def expected_f32(value: float) -> float:
    return float(np.float32(value))


def wire_float(regs: list[int], word_order: str) -> float:
    wire = struct.pack(">HH", *regs)
    big = bytes(wire[BYTE_ORDER[word_order].index(k)] for k in range(4))
    return struct.unpack(">f", big)[0]


def wire_regs(value: float, word_order: str) -> list[int]:
    big = struct.pack(">f", value)
    wire = bytes(big[BYTE_ORDER[word_order][k]] for k in range(4))
    return list(struct.unpack(">HH", wire))


# --------------------------------------------------------------------------- map, offline


@pytest.mark.parametrize("word_order", WORD_ORDERS)
def test_float32_codec_matches_struct(word_order: str) -> None:
    values = [0.0, -0.0, 1.5, -35.2, 1e-30, 3.4e38, math.inf, 123456.789]
    regs = encode_float32(values, word_order)
    for value, pair in zip(values, regs, strict=True):
        assert list(pair) == wire_regs(value, word_order)
    assert np.array_equal(decode_float32(regs, word_order), np.float32(values).astype(float))


def test_map_is_deterministic_and_follows_the_rules() -> None:
    tw = make_twin()
    a, b = ModbusMap.for_twin(tw, options=SCALED), ModbusMap.for_twin(tw, options=SCALED)
    assert [e.describe() for e in a] == [e.describe() for e in b]
    assert a.unit_ids == {d: i + 1 for i, d in enumerate(tw.points.devices())}
    for e in a:
        p = e.point
        if p.id in SCALED:
            assert (e.encoding.value, e.scale) == SCALED[p.id]
        expected = {Kind.SENSOR: Table.INPUT_REGISTERS, Kind.STATUS: Table.INPUT_REGISTERS,
                    Kind.ALARM: Table.DISCRETE_INPUTS}.get(p.kind)
        if p.kind is Kind.COMMAND:
            expected = (Table.COILS if p.dtype.value == "bool" and p.id not in SCALED
                        else Table.HOLDING_REGISTERS)
        assert e.table is expected, p.id
        assert a.lookup(e.unit_id, e.table, e.address) is e
    # sequential addresses per (unit, table), no gaps
    for unit, table, _, size in a.blocks():
        covered = [e for e in a if e.unit_id == unit and e.table is table]
        assert sum(e.count for e in covered) == size
    moved = ModbusMap.for_twin(tw, unit_ids={"site": 100, "district": 42})
    assert moved.unit_id("site") == 100 and moved.unit_id("air") == 2
    with pytest.raises(ValueError, match="both"):
        ModbusMap.for_twin(tw, unit_ids={"site": 2})
    with pytest.raises(ValueError, match="unknown point"):
        ModbusMap.for_twin(tw, options={"nope": ("int16", 1.0)})


def test_map_encode_is_cheap() -> None:
    import time

    tw = make_twin()
    m = ModbusMap.for_twin(tw, options=SCALED)
    values = tw.measured_values()
    began = time.perf_counter()
    for _ in range(200):
        m.encode(values)
    per_call = (time.perf_counter() - began) / 200
    assert per_call < 1e-3, f"encoding the whole map took {per_call * 1e6:.0f} us"


# --------------------------------------------------------------------------- reads


async def read_block(client: AsyncModbusTcpClient, unit: int, table: Table,
                     size: int) -> list[Any]:
    """Every register or bit of one (unit, table), in requests of the maximum size."""
    out: list[Any] = []
    step = 2000 if table.bits else 125
    for start in range(0, size, step):
        count = min(step, size - start)
        call = {Table.COILS: client.read_coils, Table.DISCRETE_INPUTS: client.read_discrete_inputs,
                Table.HOLDING_REGISTERS: client.read_holding_registers,
                Table.INPUT_REGISTERS: client.read_input_registers}[table]
        rr = await call(start, count=count, device_id=unit)
        assert not rr.isError(), rr
        out += (rr.bits if table.bits else rr.registers)[:count]
    return out


@pytest.mark.parametrize("word_order", WORD_ORDERS)
def test_client_reads_every_point_in_every_word_order(word_order: str) -> None:
    async def main() -> None:
        tw = make_twin(word_order)
        tw.run_until(30.0)
        tw.write("cdu1.valve_cmd.hand", 1)  # a hand value that the encoding must keep
        tw.write("cdu1.valve_cmd", 0.345)
        m = ModbusMap.for_twin(tw, options=SCALED)
        async with Rig(tw, m) as rig:
            values = rig.refresh()
            blocks = {(u, t): await read_block(rig.client, u, t, size)
                      for u, t, _, size in m.blocks()}
            for e in m:
                raw = blocks[(e.unit_id, e.table)][e.address:e.address + e.count]
                want = values[e.point.index]
                if e.encoding is Encoding.BIT:
                    assert raw[0] == (want != 0), e.point.id
                elif e.encoding is Encoding.FLOAT32:
                    got = wire_float(raw, word_order)
                    assert got == expected_f32(want) or (math.isnan(got) and math.isnan(want)), \
                        (e.point.id, got, want)
                else:
                    fmt = ">h" if e.encoding is Encoding.INT16 else ">H"
                    got = struct.unpack(fmt, struct.pack(">H", raw[0]))[0] * e.scale
                    assert got == pytest.approx(want, abs=e.scale / 2 + 1e-12), e.point.id
            assert rig.server.stats()["requests"] >= len(blocks)
            assert rig.server.stats()["exceptions"] == {}

    run(main)


# --------------------------------------------------------------------------- writes


def test_writes_apply_at_the_next_slice() -> None:
    async def main() -> None:
        tw = make_twin()
        m = ModbusMap.for_twin(tw, options=SCALED)
        async with Rig(tw, m) as rig:
            c = rig.client
            sp, sp_hand = m.entry("cdu1.supply_temp_sp"), m.entry("cdu1.supply_temp_sp.hand")
            valve, valve_hand = m.entry("cdu1.valve_cmd"), m.entry("cdu1.valve_cmd.hand")
            iso = m.entry("cdu2.isolate")  # a bool held in a uint16 holding register
            pump = m.entry("facility.pump_speed_cmd")
            # one FC16 covering two whole points: float32 setpoint then the int16 valve
            assert valve.address == sp.address + 2
            rr = await c.write_registers(sp.address, [*wire_regs(31.5, "ABCD"), 250],
                                         device_id=sp.unit_id)
            assert not rr.isError(), rr
            rr = await c.write_coils(sp_hand.address, [True], device_id=sp.unit_id)
            assert not rr.isError(), rr
            rr = await c.write_coil(valve_hand.address, True, device_id=valve.unit_id)
            assert not rr.isError() and rr.bits[0] is True, rr
            rr = await c.write_register(iso.address, 1, device_id=iso.unit_id)
            assert not rr.isError() and rr.registers == [1], rr
            rr = await c.write_register(pump.address, 8000, device_id=pump.unit_id)
            assert not rr.isError(), rr
            # queued, read back as written, but the twin is unchanged until the slice
            rr = await c.read_holding_registers(sp.address, count=3, device_id=sp.unit_id)
            assert rr.registers == [*wire_regs(31.5, "ABCD"), 250]
            assert tw.read("cdu1.supply_temp_sp.hand") == 0
            assert tw.read("cdu2.isolate.hand") == 0
            applied = rig.slice()
            assert [(a.point, a.value, a.accepted) for a in applied] == [
                ("cdu1.supply_temp_sp", 31.5, True), ("cdu1.valve_cmd", 0.25, True),
                ("cdu1.supply_temp_sp.hand", 1.0, True), ("cdu1.valve_cmd.hand", 1.0, True),
                ("cdu2.isolate", 1.0, True), ("facility.pump_speed_cmd", 0.8, True)]
            tw.run_until(tw.now + 2.0)
            assert tw.read("cdu1.supply_temp_sp") == 31.5
            assert tw.read("cdu1.supply_temp_sp.hand") == 1.0
            assert tw.read("cdu1.valve_cmd") == 0.25
            assert tw.read("cdu1.valve_cmd.hand") == 1.0
            sources = [e.source for e in tw.events if e.kind == "command"]
            assert sources == ["modbus"] * 6
            # the effective value is what is served after the refresh
            rig.refresh()
            rr = await c.read_holding_registers(sp.address, count=2, device_id=sp.unit_id)
            assert wire_float(rr.registers, "ABCD") == 31.5

    run(main)


def command_state(tw: Twin) -> dict[str, float]:
    return {p.id: float(p.getter()) for p in tw.points if p.kind is Kind.COMMAND}


def test_illegal_writes_answer_02_03_and_change_nothing() -> None:
    async def main() -> None:
        tw = make_twin("CDAB")
        for p in tw.points:  # every command in hand: its getter then shows the hand value
            if p.id.endswith(".hand"):
                tw.write(p.id, 1)
        m = ModbusMap.for_twin(tw, options=SCALED)
        async with Rig(tw, m) as rig:
            rig.slice()
            before = command_state(tw)
            c = rig.client
            sp = m.entry("cdu1.supply_temp_sp")
            valve = m.entry("cdu1.valve_cmd")
            iso = m.entry("cdu2.isolate")
            unit = sp.unit_id
            hr_size = m.size(unit, Table.HOLDING_REGISTERS)
            coil_size = m.size(unit, Table.COILS)
            site_unit = m.unit_id("site")
            def regs(address: int, values: list[int], device: int = unit) -> Request:
                return lambda: c.write_registers(address, values, device_id=device)

            def reg(address: int, value: int, device: int = unit) -> Request:
                return lambda: c.write_register(address, value, device_id=device)

            def coil(address: int, device: int = unit) -> Request:
                return lambda: c.write_coil(address, True, device_id=device)

            cases: list[tuple[str, Request, int]] = [
                ("undeclared holding", reg(hr_size, 1), 2),
                ("undeclared coil", coil(coil_size), 2),
                ("past the end", regs(hr_size - 1, [0, 0]), 2),
                ("read-only unit: no holding", reg(0, 1, site_unit), 2),
                ("read-only unit: no coils", coil(0, site_unit), 2),
                ("half a float32", reg(sp.address, 0x4200), 2),
                ("second half", reg(sp.address + 1, 0), 2),
                ("1.5 points", regs(sp.address + 1, [0, 0]), 2),
                ("mask write on a float",
                 lambda: c.mask_write_register(address=sp.address, device_id=unit), 2),
                ("out of range", regs(sp.address, wire_regs(99.0, "CDAB")), 3),
                ("NaN", regs(sp.address, wire_regs(math.nan, "CDAB")), 3),
                ("inf", regs(sp.address, wire_regs(math.inf, "CDAB")), 3),
                ("scaled out of range", reg(valve.address, 1001), 3),
                ("negative int16", reg(valve.address, 0xFFFF), 3),
                ("bool held as register = 2", reg(iso.address, 2, iso.unit_id), 3),
                ("valid + invalid in one request",
                 regs(sp.address, [*wire_regs(30.0, "CDAB"), 5000]), 3),
            ]
            for name, request, code in cases:
                rr = await request()
                assert rr.isError() and rr.exception_code == code, (name, rr)
            rr = await c.write_register(0, 1, device_id=200)
            assert rr.isError() and rr.exception_code == 0x0B  # unit id not served
            assert rig.server.stats()["pending_writes"] == 0
            assert rig.slice() == []
            tw.run_until(tw.now + 2.0)
            assert command_state(tw) == before
            assert not [e for e in tw.events if e.source == "modbus"]
            exceptions = rig.server.stats()["exceptions"]
            assert exceptions == {2: 9, 3: 7, 0x0B: 1}

    run(main)


def test_write_queue_is_bounded() -> None:
    async def main() -> None:
        tw = make_twin()
        m = ModbusMap.for_twin(tw)
        async with Rig(tw, m, ModbusConfig(port=0, queue_bound=2)) as rig:
            e = m.entry("cdu1.pump_speed_cmd")
            for value, ok in ((0.5, True), (0.6, True), (0.7, False)):
                rr = await rig.client.write_registers(e.address, wire_regs(value, "ABCD"),
                                                      device_id=e.unit_id)
                assert rr.isError() is not ok
            assert rr.exception_code == 6  # server device busy
            assert [a.value for a in rig.slice()] == [0.5, 0.6]

    run(main)


# --------------------------------------------------------------------------- connections


def read_frame(tid: int, unit: int) -> bytes:
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, 4, 0, 2)


async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """True if a read request is answered, False if the server closed the connection."""
    try:
        writer.write(read_frame(1, 1))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(64), 3)
    except ConnectionError:
        return False
    return len(data) > 0


def test_connection_cap_and_idle_close() -> None:
    async def main() -> None:
        tw = make_twin()
        config = ModbusConfig(port=0, max_connections=2, max_per_address=2,
                              idle_timeout_s=0.6, evict_idle_s=5.0)
        async with Rig(tw, ModbusMap.for_twin(tw), config) as rig:  # the client is #1
            assert not (await rig.client.read_input_registers(0, count=1, device_id=1)).isError()
            port = rig.server.port
            second = await asyncio.open_connection("127.0.0.1", port)
            assert await answers(*second)
            third = await asyncio.open_connection("127.0.0.1", port)
            assert not await answers(*third)  # closed at once: at the cap, none idle
            third[1].close()
            assert rig.server.stats()["connections_refused"] == 1
            # idle: the pymodbus client and `second` go quiet and are closed
            await asyncio.sleep(1.2)
            assert rig.server.connections == 0
            assert not await answers(*second)
            second[1].close()
            assert rig.server.stats()["connections_idle_closed"] == 2
            fresh = await asyncio.open_connection("127.0.0.1", port)  # room again
            assert await answers(*fresh)
            fresh[1].close()
            assert rig.server.stats()["connections_evicted"] == 0

    run(main)


async def connect_from(port: int, host: str = "127.0.0.1") -> tuple[asyncio.StreamReader,
                                                                    asyncio.StreamWriter]:
    """A connection to the server from a source address of the loopback net."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(host, 0))


def test_a_new_client_takes_the_place_of_the_most_idle_connection() -> None:
    async def main() -> None:
        tw = make_twin()
        config = ModbusConfig(port=0, max_connections=3, max_per_address=3, evict_idle_s=1.0)
        async with Rig(tw, ModbusMap.for_twin(tw), config) as rig:  # #1 never asks
            port = rig.server.port
            early, late = await connect_from(port), await connect_from(port)
            assert await answers(*early) and await answers(*late)
            newcomer = await connect_from(port)  # replaces the one that never asked
            assert await answers(*newcomer)
            await asyncio.sleep(0.1)
            assert not rig.client.connected
            refused = await connect_from(port)  # everyone asked in the last second
            assert not await answers(*refused)
            await asyncio.sleep(1.1)
            assert await answers(*late) and await answers(*newcomer)
            fourth = await connect_from(port)  # `early` is now idle for over a second
            assert await answers(*fourth)
            assert not await answers(*early)
            assert await answers(*late) and await answers(*newcomer)
            stats = rig.server.stats()
            assert stats["connections_evicted"] == 2 and stats["connections_refused"] == 1
            for _, writer in (early, late, newcomer, refused, fourth):
                writer.close()

    run(main)


def test_partial_frames_give_way_first_and_newcomers_replace_each_other() -> None:
    async def main() -> None:
        tw = make_twin()
        config = ModbusConfig(port=0, max_connections=3, max_per_address=3)
        async with Rig(tw, ModbusMap.for_twin(tw), config) as rig:  # #1 never asks
            port = rig.server.port
            first, second = await connect_from(port), await connect_from(port)
            first[1].write(read_frame(1, 3)[:4])  # started a frame, never finished one
            second[1].write(read_frame(2, 3)[:9])
            await asyncio.sleep(0.1)
            newcomer = await connect_from(port)  # takes the older trickler's place
            assert await answers(*newcomer)
            assert await asyncio.wait_for(first[0].read(1), 2) == b""
            silent = [await connect_from(port)]  # the other trickler's place
            assert await asyncio.wait_for(second[0].read(1), 2) == b""
            for _ in range(3):  # each silent newcomer replaces the one before it
                silent.append(await connect_from(port))
                assert await asyncio.wait_for(silent[-2][0].read(1), 2) == b""
            await asyncio.sleep(0.1)
            assert rig.client.connected  # silent too, but connected before them all
            assert await answers(*silent[-1]) and await answers(*newcomer)
            assert rig.server.stats()["connections_evicted"] == 5
            for _, writer in (first, second, newcomer, *silent):
                writer.close()

    run(main)


def test_one_address_holds_at_most_its_share() -> None:
    async def main() -> None:
        tw = make_twin()
        config = ModbusConfig(port=0, max_connections=4, evict_idle_s=5.0)
        assert config.per_address == 2
        async with Rig(tw, ModbusMap.for_twin(tw), config) as rig:
            assert not (await rig.client.read_input_registers(0, count=1, device_id=1)).isError()
            port = rig.server.port
            second = await connect_from(port)
            assert await answers(*second)
            third = await connect_from(port)  # a third from 127.0.0.1: both busy
            assert not await answers(*third)
            others = [await connect_from(port, "127.0.0.2"), await connect_from(port, "127.0.0.3")]
            for other in others:
                assert await answers(*other)
            assert rig.server.connections == 4
            for _, writer in (second, third, *others):
                writer.close()

    run(main)


TRICKLE = struct.pack(">HHHB", 1, 0, 254, 1) + bytes(253)  # a frame too long to finish


async def trickler(port: int, host: str, stop: asyncio.Event, lives: list[float]) -> None:
    """Hold a connection sending a byte of a partial frame every 0.1 s; reconnect when
    closed, until ``stop``. Appends each connection's lifetime (s) to ``lives``."""
    while not stop.is_set():
        try:
            reader, writer = await connect_from(port, host)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        began = time.monotonic()
        try:
            for byte in TRICKLE:
                writer.write(bytes([byte]))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                        break
                if stop.is_set():
                    break
        except ConnectionError:
            pass
        lives.append(time.monotonic() - began)
        writer.close()
        await asyncio.sleep(0.05)


async def served_within(port: int, host: str = "127.0.0.1") -> float:
    """Seconds from connecting to a read's answer; inf when refused or not answered."""
    began = time.monotonic()
    try:
        reader, writer = await connect_from(port, host)
        writer.write(read_frame(7, 3))
        head = await asyncio.wait_for(reader.readexactly(9), 2.0)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return math.inf
    writer.close()
    assert head[7] == 4, head  # the read's own answer, not an exception
    return time.monotonic() - began


@pytest.mark.parametrize("spread", [True, False], ids=["four-addresses", "one-address"])
def test_trickling_clients_do_not_lock_out_a_fresh_client(spread: bool) -> None:
    """Clients trickling bytes of a partial frame hold every slot (16 of them from four
    loopback addresses, or as many as 127.0.0.1 may hold), reconnecting whenever closed,
    while a busy client polls; a fresh client from 127.0.0.1 is served within 1 s, over
    and over, the busy client is never closed, and no trickler holds a slot for long."""
    async def main() -> None:
        tw = make_twin()
        m = ModbusMap.for_twin(tw)
        async with Rig(tw, m) as rig:  # default limits: 16 in all, 8 an address
            port = rig.server.port
            stop = asyncio.Event()
            lives: list[float] = []
            hosts = [f"127.0.0.{2 + k % 4}" if spread else "127.0.0.1" for k in range(15)]
            tasks = [asyncio.create_task(trickler(port, h, stop, lives)) for h in hosts]
            polls = 0

            async def poll() -> None:  # the pymodbus client, a controller at 10 Hz
                nonlocal polls
                while not stop.is_set():
                    rr = await rig.client.read_input_registers(0, count=2, device_id=3)
                    assert not rr.isError()
                    polls += 1
                    await asyncio.sleep(0.1)

            tasks.append(asyncio.create_task(poll()))
            await asyncio.sleep(1.0)
            cap = 16 if spread else 8
            assert rig.server.connections == cap  # the tricklers (and the poller) fill it
            times = []
            for _ in range(6):
                times.append(await served_within(port))
                await asyncio.sleep(0.4)
            stop.set()
            await asyncio.gather(*tasks)
            assert max(times) < 1.0, times
            assert rig.client.connected and polls >= 20
            frame_timeout = rig.server.config.frame_timeout_s
            assert max(lives) < frame_timeout + 0.5, max(lives)
            stats = rig.server.stats()
            assert stats["connections_evicted"] >= len(times)
            if spread:
                assert stats["protocol_errors"]["frame_timeout"] > 0

    run(main)


def test_a_partial_frame_must_finish_in_time() -> None:
    async def main() -> None:
        tw = make_twin()
        async with Rig(tw, ModbusMap.for_twin(tw), ModbusConfig(port=0, frame_timeout_s=1.0)) \
                as rig:
            port = rig.server.port
            slow = await connect_from(port)  # a whole frame in 0.3 s: served
            for byte in read_frame(1, 3):
                slow[1].write(bytes([byte]))
                await asyncio.sleep(0.025)
            assert len(await asyncio.wait_for(slow[0].read(64), 2)) == 13
            stuck = await connect_from(port)
            stuck[1].write(read_frame(2, 3)[:5])  # half a header, then nothing
            began = time.monotonic()
            assert await asyncio.wait_for(stuck[0].read(1), 3) == b""
            assert 0.95 < time.monotonic() - began < 2.0
            assert rig.server.stats()["protocol_errors"]["frame_timeout"] == 1
            assert await answers(*slow)
            slow[1].close()
            stuck[1].close()

    run(main)


def test_a_client_that_does_not_read_is_not_read_from() -> None:
    """A client pipelines 60,000 reads and reads no answer: once the socket buffers are
    full the server stops reading from it instead of buffering answers, serves others
    meanwhile, and once the client reads it gets every answer, in order."""
    async def main() -> None:
        tw = make_twin()
        async with Rig(tw, ModbusMap.for_twin(tw)) as rig:
            port = rig.server.port
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
            sock.connect(("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
            n = 60_000
            frames = b"".join(struct.pack(">HHHBBHH", k % 65536, 0, 6, 3, 4, 0, 100)
                              for k in range(n))
            writer.write(frames)  # 720 kB of requests, 12.5 MB of answers
            await asyncio.sleep(1.5)
            held = rig.server.requests
            assert held < n, held
            (conn,) = [c for c in rig.server._conns if c.transport is not None and
                       c.transport.get_extra_info("peername")[1] == sock.getsockname()[1]]
            assert conn.transport is not None
            assert conn.transport.get_write_buffer_size() < 512 * 1024
            assert await served_within(port) < 0.5  # the loop serves others meanwhile
            await asyncio.sleep(0.3)
            assert rig.server.requests - held <= 1  # still held (but for that one read)
            size = 7 + 2 + 200  # MBAP, function code, byte count, 100 registers
            data = await asyncio.wait_for(reader.readexactly(n * size), 30)
            tids = [struct.unpack_from(">H", data, k * size)[0] for k in range(n)]
            assert tids == [k % 65536 for k in range(n)]
            assert {data[k * size + 7] for k in range(n)} == {4}
            assert rig.server.requests == n + 1
            assert rig.server.stats()["exceptions"] == {}
            writer.close()

    run(main)


def test_fuzzed_frames_leave_a_short_log_and_right_reads() -> None:
    """10,000 malformed frames (`bench.fuzz_modbus`; 100,000 from the command line): the
    log of every logger at DEBUG stays under 100 kB without a traceback, every answer
    comes, in order and right, the counts agree and every read afterwards is right."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "bench.fuzz_modbus", "--frames", "10000",
                           "--log-level", "DEBUG", "--json"], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["log_bytes"] < 100_000 and result["log_tracebacks"] == 0
    assert result["answers_missing"] == result["answers_wrong"] == 0
    assert result["answers_out_of_order"] == 0 and result["reads_wrong"] == 0
    assert result["counts_agree"] and result["reads_checked"] > 30
    sent = result["sent"]
    assert result["protocol_errors"]["bad_protocol_id"] == sent["bad_protocol_id"] > 500
    assert sent["bad_length"] <= result["connections"] <= sent["bad_length"] + 4  # reopened
    assert result["answers_expected"] == 10_000 - sent["bad_protocol_id"] - sent["bad_length"]


def test_parse_endpoint() -> None:
    assert parse_endpoint("127.0.0.1:5020") == ("127.0.0.1", 5020)
    assert parse_endpoint("[::1]:1502") == ("::1", 1502)
    assert parse_endpoint(":0") == ("127.0.0.1", 0)
    assert parse_endpoint("localhost") == ("localhost", 5020)
    with pytest.raises(ValueError):
        parse_endpoint("host:99999")


# --------------------------------------------------------------------------- watchdog


def test_watchdog_falls_back_within_timeout_plus_one_slice() -> None:
    async def main() -> None:
        tw = make_twin()
        dog = Watchdog(tw, {"cdu1": 3.0, "hp1": 2.0}, {"cdu1": "safe", "hp1": "hold"},
                       {"cdu1.valve_cmd": 0.4})
        m = ModbusMap.for_twin(tw, options=dog.modbus_options())
        slice_s = 0.1
        async with Rig(tw, m, quiet_points=dog.heartbeat_ids) as rig:
            c = rig.client
            beat = m.entry("cdu1.heartbeat")
            assert (beat.table, beat.encoding) == (Table.HOLDING_REGISTERS, Encoding.UINT16)
            hp_beat = m.entry("hp1.heartbeat")
            sp, hand = m.entry("cdu1.supply_temp_sp"), m.entry("cdu1.supply_temp_sp.hand")
            await c.write_registers(sp.address, wire_regs(30.0, "ABCD"), device_id=sp.unit_id)
            await c.write_coil(hand.address, True, device_id=sp.unit_id)
            hp_enable = m.entry("hp1.enable.hand")
            await c.write_coil(hp_enable.address, True, device_id=hp_enable.unit_id)
            last_beat: dict[str, float] = {}
            trips: dict[str, float] = {}
            counter = 0
            for k in range(1, 120):  # 12 s in 0.1 s slices
                t = round(k * slice_s, 6)
                if t <= 4.0 and k % 5 == 0:  # a controller beating every 0.5 s, then silent
                    counter += 1
                    for dev, e in (("cdu1", beat), ("hp1", hp_beat)):
                        rr = await c.write_register(e.address, counter, device_id=e.unit_id)
                        assert not rr.isError(), rr
                        last_beat[dev] = tw.now  # applied at this slice boundary
                rig.server.apply_pending(tw)
                tw.run_until(t)
                rig.refresh()
                for dev in dog.check(tw.now):
                    trips.setdefault(dev, tw.now)
            for dev in ("cdu1", "hp1"):
                late = trips[dev] - last_beat[dev] - dog.timeouts[dev]
                assert 0 < late <= slice_s + 1e-9, (dev, trips[dev], last_beat[dev])
            assert tw.read("cdu1.valve_cmd.hand") == 1 and tw.read("cdu1.valve_cmd") == 0.4
            assert tw.read("cdu1.supply_temp_sp.hand") == 0  # back to auto
            assert tw.read("hp1.enable.hand") == 1  # hold: unchanged
            events = [e for e in tw.events if e.kind == "watchdog"]
            assert [e.source for e in events] == ["hp1", "cdu1"]
            assert "communication lost" in events[1].message
            assert "fallback safe" in events[1].message
            assert not [e for e in tw.events if "heartbeat" in e.message and e.kind == "command"]
            # recovery when the heartbeat changes again
            await c.write_register(beat.address, counter + 1, device_id=beat.unit_id)
            rig.slice()
            assert dog.check(tw.now) == ["cdu1"]
            assert tw.events[-1].kind == "watchdog" and "restored" in tw.events[-1].message
            assert not dog.tripped["cdu1"] and dog.tripped["hp1"]

    run(main)


def test_watchdog_rejects_bad_configuration() -> None:
    from twin.errors import ConfigError

    tw = make_twin()
    with pytest.raises(ConfigError) as info:
        Watchdog(tw, {"nope": 1.0, "cdu1": -1}, {"cdu1": "explode"},  # type: ignore[dict-item]
                 {"cdu1.valve_cmd": 5.0})
    text = str(info.value)
    for part in ("unknown device 'nope'", "timeout of cdu1", "hold or safe", "outside"):
        assert part in text


def test_map_writes_validate_offline() -> None:
    tw = make_twin()
    m = ModbusMap.for_twin(tw, options=SCALED)
    sp = m.entry("cdu1.supply_temp_sp")
    assert m.writes(sp.unit_id, sp.table, sp.address, sp.encode(35.2))[0][1] == 35.2
    with pytest.raises(WriteRefused) as info:
        m.writes(sp.unit_id, sp.table, sp.address, sp.encode(10.0))
    assert info.value.code == 3
