"""Protocol faults injected into the live adapters, seen by real clients.

Modbus: a pymodbus client against the rig's server on one asyncio loop (as in the live
runner). MQTT: the adapter publishes to the shared Mosquitto and a stock paho subscriber
records what arrives; ``seq`` in the telemetry shows drops, copies and swaps.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from servers import Mosquitto, unique_name

from rig.assess.faults import CATALOG, FaultContext
from rig.protocols.modbus.registers import ModbusMap, Table
from rig.protocols.modbus.server import ModbusConfig, ModbusServer
from rig.protocols.mqtt import topics
from rig.protocols.mqtt.adapter import MqttAdapter, MqttConfig
from twin.faults import FaultTargetError
from twin.plant import Twin
from twin.site import Site

SITE = "reference-1mw"
WAIT_S = 5.0


def make_twin() -> Twin:
    return Twin(Site(name=SITE), seed=1)


# --------------------------------------------------------------------------- modbus


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 30))


class ModbusRig:
    """A twin, its map, a started server and helpers to connect clients (async context)."""

    def __init__(self) -> None:
        self.twin = make_twin()
        self.map = ModbusMap.for_twin(self.twin)
        self.server = ModbusServer(self.map, ModbusConfig(port=0))
        self.clients: list[AsyncModbusTcpClient] = []

    async def __aenter__(self) -> ModbusRig:
        await self.server.start()
        self.refresh()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            client.close()
        await self.server.stop()

    async def client(self) -> AsyncModbusTcpClient:
        client = AsyncModbusTcpClient("127.0.0.1", port=self.server.port, timeout=3,
                                      retries=0, reconnect_delay=0)
        self.clients.append(client)
        await client.connect()
        return client

    def refresh(self) -> None:
        self.server.refresh(self.twin.measured_values(), self.twin.now)

    def slice(self, dt: float = 2.0) -> None:
        """Advance the twin (sensors sample every second) and refresh the registers."""
        self.server.apply_pending(self.twin)
        self.twin.run_until(self.twin.now + dt)
        self.refresh()

    def unit(self, device: str) -> int:
        return self.map.unit_id(device)

    def expected(self, device: str) -> list[int]:
        """Input registers of a device from the twin's present values."""
        regs = self.map.encode_unit(self.twin.measured_values(), self.unit(device))
        return regs[Table.INPUT_REGISTERS].tolist()


async def read_inputs(client: AsyncModbusTcpClient, unit: int, count: int = 100) -> Any:
    return await client.read_input_registers(0, count=count, device_id=unit)


def test_modbus_exception_code_on_the_wire_and_nothing_written() -> None:
    async def main() -> None:
        async with ModbusRig() as rig:
            c = await rig.client()
            cdu1, cdu2 = rig.unit("cdu1"), rig.unit("cdu2")
            valve = rig.map.entry("cdu1.valve_cmd")
            ctx = FaultContext(rig.twin, {"modbus": rig.server})
            clear_busy = CATALOG["modbus_exception"].apply(ctx, "cdu1", code=6)
            rr = await read_inputs(c, cdu1)
            assert rr.isError() and rr.exception_code == 6
            rr = await c.write_registers(valve.address, valve.encode(0.4), device_id=cdu1)
            assert rr.isError() and rr.exception_code == 6
            assert rig.server.stats()["pending_writes"] == 0
            assert rig.server.apply_pending(rig.twin) == []
            assert not (await read_inputs(c, cdu2)).isError()  # other units answer

            clear_fail = rig.server.inject("modbus_exception", code=4)  # every unit id
            for unit in (cdu2, 250):  # 250 is not served: the fault answers first
                assert (await read_inputs(c, unit)).exception_code == 4
            assert (await read_inputs(c, cdu1)).exception_code == 4  # most recent fault
            clear_fail()
            assert (await read_inputs(c, cdu1)).exception_code == 6
            clear_busy()
            clear_busy()  # clearing twice is harmless

            rr = await read_inputs(c, cdu1)
            assert not rr.isError() and rr.registers == rig.expected("cdu1")[:100]
            rr = await c.write_registers(valve.address, valve.encode(0.4), device_id=cdu1)
            assert not rr.isError()
            assert [w.value for w in rig.server.apply_pending(rig.twin)] == [0.4]
            stats = rig.server.stats()
            assert stats["exceptions"] == {6: 3, 4: 3}
            assert stats["fault_exceptions"] == 6 and stats["faults"] == []

    run(main)


def test_modbus_latency_delays_answers_without_blocking_the_loop() -> None:
    delay = 0.4

    async def main() -> None:
        async with ModbusRig() as rig:
            slow, other = await rig.client(), await rig.client()
            cdu1, cdu2 = rig.unit("cdu1"), rig.unit("cdu2")
            clear = rig.server.inject("modbus_latency", target="cdu1", delay=delay)
            ticks = 0

            async def simulation() -> None:  # stands for the twin sharing the loop
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            sim = asyncio.create_task(simulation())

            async def timed(request: Awaitable[Any]) -> tuple[Any, float]:
                began = time.perf_counter()
                result = await request
                return result, time.perf_counter() - began

            (rr, slow_s), (rr2, fast_s) = await asyncio.gather(
                timed(read_inputs(slow, cdu1)), timed(read_inputs(other, cdu2)))
            sim.cancel()
            assert not rr.isError() and rr.registers == rig.expected("cdu1")[:100]
            assert not rr2.isError()
            assert slow_s > delay and fast_s < delay / 2, (slow_s, fast_s)
            assert ticks >= 0.5 * delay / 0.01, ticks  # the loop kept running meanwhile
            valve = rig.map.entry("cdu1.valve_cmd")
            rr, write_s = await timed(
                slow.write_registers(valve.address, valve.encode(0.3), device_id=cdu1))
            assert not rr.isError() and write_s > delay
            # A client that gives up first: the late answer keeps its own transaction id,
            # so the client skips it instead of taking it for the next request's answer.
            impatient = AsyncModbusTcpClient("127.0.0.1", port=rig.server.port, timeout=0.2,
                                             retries=0, reconnect_delay=0)
            rig.clients.append(impatient)
            await impatient.connect()
            with pytest.raises(ModbusException, match="No response"):
                await read_inputs(impatient, cdu1)
            for _ in range(2):  # before and after the late answer arrives
                rr = await read_inputs(impatient, cdu2)
                assert not rr.isError() and rr.registers == rig.expected("cdu2")[:100]
                await asyncio.sleep(delay)
            clear()
            rr, after_s = await timed(read_inputs(slow, cdu1))
            assert not rr.isError() and after_s < delay / 2
            stats = rig.server.stats()
            assert stats["fault_delayed"] == 3 and stats["exceptions"] == {}

    run(main)


async def refused(client: AsyncModbusTcpClient, unit: int) -> bool:
    """True when the server closed the client's connection and a read cannot be sent."""
    await asyncio.sleep(0.1)  # the client sees the close
    if client.connected:
        return False
    with pytest.raises(ModbusException, match="Not connected"):
        await read_inputs(client, unit)
    return True


def test_modbus_disconnect_closes_and_refuses_until_cleared() -> None:
    async def main() -> None:
        async with ModbusRig() as rig:
            c = await rig.client()
            cdu1 = rig.unit("cdu1")
            assert not (await read_inputs(c, cdu1)).isError()
            clear = rig.server.inject("modbus_disconnect")
            assert rig.server.connections == 0
            assert await refused(c, cdu1)
            late = await rig.client()  # TCP accepts, then the server closes at once
            assert await refused(late, cdu1)
            assert rig.server.connections == 0
            clear()
            fresh = await rig.client()
            assert not await refused(fresh, cdu1)
            rr = await read_inputs(fresh, cdu1)
            assert not rr.isError() and rr.registers == rig.expected("cdu1")[:100]
            stats = rig.server.stats()
            assert stats["fault_connections_closed"] == 1
            assert stats["fault_connections_refused"] == 1
            assert stats["connections"] == 1

    run(main)


def test_modbus_frozen_registers_keep_the_snapshot_while_the_twin_moves() -> None:
    async def main() -> None:
        async with ModbusRig() as rig:
            c = await rig.client()
            cdu1, cdu2 = rig.unit("cdu1"), rig.unit("cdu2")
            rig.slice()
            before = (await read_inputs(c, cdu1)).registers
            clear = rig.server.inject("modbus_frozen", target="cdu1")
            previous2 = (await read_inputs(c, cdu2)).registers
            for _ in range(3):
                rig.slice()
                assert rig.expected("cdu1")[:100] != before  # the twin moved on
                assert (await read_inputs(c, cdu1)).registers == before
                now2 = (await read_inputs(c, cdu2)).registers
                assert now2 == rig.expected("cdu2")[:100] and now2 != previous2
                previous2 = now2
            clear()
            assert (await read_inputs(c, cdu1)).registers == before  # until the next refresh
            rig.slice()
            assert (await read_inputs(c, cdu1)).registers == rig.expected("cdu1")[:100]
            assert rig.server.stats()["fault_frozen_reads"] == 3

    run(main)


# --------------------------------------------------------------------------- mqtt


class Subscriber:
    """A stock paho client recording (arrival time, message) for a topic pattern."""

    def __init__(self, port: int, pattern: str) -> None:
        self.messages: list[tuple[float, paho.MQTTMessage]] = []
        self._cond = threading.Condition()
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique_name("sub"))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(pattern, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(WAIT_S), "subscriber did not subscribe"

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((time.monotonic(), message))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def seqs(self, device: str) -> list[int]:
        with self._cond:
            return [json.loads(m.payload)["seq"] for _, m in self.messages
                    if m.topic.endswith(f"/{device}/telemetry")]

    def payloads(self) -> list[bytes]:
        with self._cond:
            return [m.payload for _, m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def prefix() -> str:
    return unique_name("heatrig")  # the shared Mosquitto keeps retained messages


@pytest.fixture
def subs() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for sub in made:
        sub.close()


def make_adapter(url: str, prefix: str, **kw: Any) -> MqttAdapter:
    config = MqttConfig(url=url, site=SITE, prefix=prefix, qos=1, **kw)
    return MqttAdapter(config, make_twin().points)


@pytest.fixture
def adapter(mosquitto: Mosquitto, prefix: str) -> Iterator[MqttAdapter]:
    ad = make_adapter(mosquitto.url, prefix).start(wait_s=WAIT_S)
    yield ad
    ad.close()


@pytest.fixture
def telemetry(mosquitto: Mosquitto, prefix: str, subs: list[Subscriber]) -> Subscriber:
    sub = Subscriber(mosquitto.port, topics.telemetry(prefix, SITE, "+"))
    subs.append(sub)
    return sub


def publish(ad: MqttAdapter, k: int) -> None:
    """Sample ``k`` of two devices (seq == k when nothing was lost)."""
    ad.publish_telemetry(float(k), "2026-01-15T00:00:00+00:00",
                         {"cdu1": {"cdu1.supply_temp": 40.0 + k},
                          "cdu2": {"cdu2.supply_temp": 41.0 + k}})


def test_mqtt_dropout_leaves_a_seq_gap(adapter: MqttAdapter, telemetry: Subscriber) -> None:
    publish(adapter, 0)
    clear = adapter.inject("mqtt_dropout", target="cdu1")
    publish(adapter, 1)
    publish(adapter, 2)
    clear()
    publish(adapter, 3)
    assert telemetry.wait_for(lambda: len(telemetry.seqs("cdu2")) == 4)
    assert telemetry.wait_for(lambda: len(telemetry.seqs("cdu1")) == 2)
    assert telemetry.seqs("cdu1") == [0, 3] and telemetry.seqs("cdu2") == [0, 1, 2, 3]
    stats = adapter.stats()
    assert (stats["suppressed"], stats["dropped"], stats["telemetry"]) == (2, 0, 8)


def test_mqtt_duplicate_sends_each_seq_twice(adapter: MqttAdapter,
                                             telemetry: Subscriber) -> None:
    publish(adapter, 0)
    clear = adapter.inject("mqtt_duplicate")
    publish(adapter, 1)
    publish(adapter, 2)
    clear()
    publish(adapter, 3)
    for device in ("cdu1", "cdu2"):
        assert telemetry.wait_for(lambda d=device: len(telemetry.seqs(d)) == 6)
        assert telemetry.seqs(device) == [0, 1, 1, 2, 2, 3]
    assert adapter.stats()["duplicated"] == 4


def test_mqtt_reorder_swaps_pairs(adapter: MqttAdapter, telemetry: Subscriber) -> None:
    publish(adapter, 0)
    clear = adapter.inject("mqtt_reorder", target="cdu1")
    for k in range(1, 6):
        publish(adapter, k)
    assert adapter.stats()["held"] == 1  # seq 5 waits for a partner
    clear()  # ... and is released
    publish(adapter, 6)
    assert telemetry.wait_for(lambda: len(telemetry.seqs("cdu1")) == 7)
    assert telemetry.seqs("cdu1") == [0, 2, 1, 4, 3, 5, 6]
    assert telemetry.wait_for(lambda: telemetry.seqs("cdu2") == list(range(7)))
    assert adapter.stats()["reordered"] == 2 and adapter.stats()["held"] == 0


def test_mqtt_delay_holds_messages_for_wall_seconds(adapter: MqttAdapter,
                                                    telemetry: Subscriber) -> None:
    delay = 0.6
    clear = adapter.inject("mqtt_delay", target="cdu1", delay=delay)
    began = time.monotonic()
    publish(adapter, 0)
    assert time.monotonic() - began < 0.1  # the caller does not wait
    assert telemetry.wait_for(lambda: telemetry.seqs("cdu2") == [0])
    assert telemetry.seqs("cdu1") == []
    assert telemetry.wait_for(lambda: telemetry.seqs("cdu1") == [0])
    arrived = next(t for t, m in telemetry.messages if "/cdu1/" in m.topic)
    assert arrived - began > delay
    publish(adapter, 1)  # held ...
    cleared = time.monotonic()
    clear()  # ... and sent at once on clear, in order
    publish(adapter, 2)
    assert telemetry.wait_for(lambda: telemetry.seqs("cdu1") == [0, 1, 2])
    cdu1 = [t for t, m in telemetry.messages if "/cdu1/" in m.topic]
    assert cdu1[1] - cleared < delay / 2
    stats = adapter.stats()
    assert (stats["delayed"], stats["held"], stats["dropped"]) == (2, 0, 0)


def test_broker_loss_fires_the_will_and_stays_down_until_cleared(
        mosquitto: Mosquitto, prefix: str, subs: list[Subscriber]) -> None:
    status = topics.status(prefix, SITE)
    ad = make_adapter(mosquitto.url, prefix, reconnect_min_s=0.1,
                      reconnect_max_s=0.2).start(wait_s=WAIT_S)
    try:
        watcher = Subscriber(mosquitto.port, status)
        tele = Subscriber(mosquitto.port, topics.telemetry(prefix, SITE, "+"))
        subs += [watcher, tele]
        assert watcher.wait_for(lambda: watcher.payloads() == [b"online"])
        publish(ad, 0)
        assert tele.wait_for(lambda: tele.seqs("cdu1") == [0])

        clear = ad.inject("broker_loss")
        assert not ad.connected
        assert watcher.wait_for(lambda: watcher.payloads()[-1:] == [b"offline"])
        witness = Subscriber(mosquitto.port, status)  # retained: the will, not a clean close
        subs.append(witness)
        assert witness.wait_for(lambda: witness.payloads() == [b"offline"])
        assert witness.messages[0][1].retain
        publish(ad, 1)
        publish(ad, 2)
        time.sleep(1.0)  # five times the reconnect backoff: paho would be back by now
        stats = ad.stats()
        assert not ad.connected and (stats["connects"], stats["reconnects"]) == (1, 0)
        assert stats["queued"] == 4 and stats["broker_losses"] == 1
        assert watcher.payloads()[-1] == b"offline" and tele.seqs("cdu1") == [0]

        clear()
        assert ad.wait_connected(WAIT_S)
        assert watcher.wait_for(lambda: watcher.payloads()[-1:] == [b"online"])
        publish(ad, 3)
        assert tele.wait_for(lambda: tele.seqs("cdu1") == [0, 1, 2, 3])
        assert tele.wait_for(lambda: tele.seqs("cdu2") == [0, 1, 2, 3])
        stats = ad.stats()
        assert (stats["reconnects"], stats["queued"], stats["dropped"]) == (1, 0, 0)
    finally:
        ad.close()


def test_close_during_broker_loss_is_clean(mosquitto: Mosquitto, prefix: str) -> None:
    ad = make_adapter(mosquitto.url, prefix).start(wait_s=WAIT_S)
    clear = ad.inject("broker_loss")
    publish(ad, 0)
    ad.inject("mqtt_delay", delay=30)
    ad.close()
    clear()  # after close: no reconnect
    assert not ad.connected and not ad.wait_connected(0.3)
    assert ad.stats()["dropped"] == 2  # the two buffered messages


# --------------------------------------------------------------------------- refusals


def test_unknown_kinds_targets_and_parameters_are_refused() -> None:
    tw = make_twin()
    server = ModbusServer(ModbusMap.for_twin(tw), ModbusConfig(port=0))
    ad = MqttAdapter(MqttConfig(site=SITE), tw.points)  # never started: no broker needed
    for inject in (server.inject, ad.inject):
        with pytest.raises(FaultTargetError, match="unknown fault kind 'leak'"):
            inject("leak")
    for kind in ("modbus_exception", "modbus_frozen"):
        with pytest.raises(FaultTargetError, match=r"unknown target 'cdu9'.*cdu1"):
            server.inject(kind, target="cdu9")
    with pytest.raises(FaultTargetError, match="target must be 'modbus'"):
        server.inject("modbus_disconnect", target="cdu1")
    with pytest.raises(FaultTargetError, match="unknown target 'modbus'"):
        ad.inject("mqtt_dropout", target="modbus")
    with pytest.raises(FaultTargetError, match="target must be 'mqtt'"):
        ad.inject("broker_loss", target="cdu1")
    with pytest.raises(FaultTargetError, match="unknown fault kind 'mqtt_dropout'"):
        server.inject("mqtt_dropout")
    with pytest.raises(ValueError, match="delay"):
        server.inject("modbus_latency", target="cdu1")
    with pytest.raises(ValueError, match="code must be"):
        server.inject("modbus_exception", code=0)
    with pytest.raises(ValueError, match="unexpected parameter"):
        ad.inject("mqtt_duplicate", delay=1.0)
    with pytest.raises(ValueError, match="delay must be"):
        ad.inject("mqtt_delay", delay=-1.0)
    assert server.stats()["faults"] == [] and ad.stats()["faults"] == []
    clear = ad.inject("mqtt_dropout", target="cdu1")
    assert ad.stats()["faults"] == ["mqtt_dropout@cdu1"]
    clear()
    assert ad.stats()["faults"] == []
