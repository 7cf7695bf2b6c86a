"""The live rig end to end: pacing, Modbus and MQTT against real peers, replay, stepping."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import ModbusTcpClient

from rig.config.sites import load_site
from rig.protocols.modbus.registers import decode_float32
from rig.record.store import RunStore
from rig.runtime.clock import FellBehind, Pacer
from rig.runtime.live import LiveOptions, LiveRig
from rig.runtime.replay import replay

# -- pacing ------------------------------------------------------------------------------


async def _paced(policy: str, slow: set[int], slices: int = 12) -> Pacer:
    pacer = Pacer(0.02, policy)  # type: ignore[arg-type]
    pacer.start()
    for k in range(slices):
        await pacer.wait()
        if k in slow:
            time.sleep(0.1)  # a slice whose work takes five slices
    return pacer


def test_pacer_measures_lateness_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    pacer = asyncio.run(_paced("warn", {3}))
    stats = pacer.stats
    assert len(stats.lateness) == 12
    assert stats.behind_slices >= 1 and stats.skipped_slices == 0
    assert stats.max_ms() >= 60.0  # the slice after the slow one woke about 80 ms late
    assert any("fell behind real time" in r.message for r in caplog.records)


def test_pacer_skip_re_anchors() -> None:
    pacer = asyncio.run(_paced("skip", {3}))
    stats = pacer.stats
    assert stats.skipped_slices >= 3
    # after re-anchoring the following slices are on time again
    assert max(stats.lateness[6:]) < 0.02


def test_pacer_halt_stops() -> None:
    with pytest.raises(FellBehind, match="fell behind real time"):
        asyncio.run(_paced("halt", {3}))


# -- a live run against real peers ------------------------------------------------------


def _read_float(client: ModbusTcpClient, row: dict, word_order: str) -> float:
    m = row["modbus"]
    assert m["table"] == "input_registers"
    rr = client.read_input_registers(m["address"], count=2, device_id=m["unit_id"])
    assert not rr.isError(), rr
    return float(decode_float32([rr.registers], word_order)[0])


def test_live_run_serves_records_and_replays(tmp_path: Path, mosquitto) -> None:
    site = load_site("reference-1mw")
    out = tmp_path / "live"
    options = LiveOptions(out_dir=out, speed=30, duration_s=240, modbus="127.0.0.1:0",
                          mqtt=mosquitto.url, status=False)
    rig = LiveRig(site, options)
    messages: list[dict] = []
    sub = paho.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: messages.append(json.loads(m.payload))
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe(f"heatrig/{site.name}/cdu1/telemetry", qos=1)
    sub.loop_start()
    seen: dict[str, object] = {}

    def controller() -> None:
        # waits for the server, then acts like a BMS: reads, takes cdu1's setpoint into hand
        while rig.modbus is None or not rig.modbus.port:
            time.sleep(0.05)
        rows = {r["id"]: r for r in json.loads((out / "points.json").read_text())}
        client = ModbusTcpClient("127.0.0.1", port=rig.modbus.port)
        assert client.connect()
        t1 = _read_float(client, rows["rig.sim_time"], site.protocols.word_order)
        time.sleep(0.5)
        seen["sim_times"] = (t1, _read_float(client, rows["rig.sim_time"], "ABCD"))
        sp = rows["cdu1.supply_temp_sp"]["modbus"]
        hand = rows["cdu1.supply_temp_sp.hand"]["modbus"]
        from rig.protocols.modbus.registers import encode_float32
        regs = [int(x) for x in encode_float32([45.0], "ABCD")[0]]
        assert not client.write_registers(sp["address"], regs, device_id=sp["unit_id"]).isError()
        assert not client.write_coil(hand["address"], True, device_id=hand["unit_id"]).isError()
        bad = client.write_registers(sp["address"], [int(x) for x in encode_float32(
            [500.0], "ABCD")[0]], device_id=sp["unit_id"])
        seen["bad_code"] = getattr(bad, "exception_code", None)
        client.close()

    thread = threading.Thread(target=controller)
    thread.start()
    summary = asyncio.run(rig.run())
    thread.join(timeout=10)
    sub.loop_stop()
    sub.disconnect()

    t1, t2 = seen["sim_times"]  # type: ignore[misc]
    assert 0 <= t1 < t2  # simulated time is a point and advances
    assert seen["bad_code"] == 3
    assert rig.twin.cdus[0].setpoint.hand and rig.twin.cdus[0].setpoint.value == 45.0
    p = summary.performance.pacing
    assert p is not None
    # 240 simulated s at 30x in 0.1 s slices: 80 slices, paced over 8 wall seconds
    assert p.slices == 80 and p.speed_requested == 30
    assert summary.performance.wall_s >= 7.9
    assert p.lateness_p50_ms <= p.lateness_p99_ms <= p.lateness_max_ms
    assert p.lateness_p50_ms < 100.0  # the typical slice starts within its own slice
    assert summary.duration_s == 240
    seqs = [m["seq"] for m in messages]
    assert len(seqs) >= 200 and seqs == sorted(seqs)  # one message per sample period
    store = RunStore.open(out)
    commands = [(c.point, c.value, c.source) for c in store.commands()]
    store.close()
    assert ("cdu1.supply_temp_sp", 45.0, "modbus") in commands
    assert ("cdu1.supply_temp_sp.hand", 1.0, "modbus") in commands
    again = replay(out, tmp_path / "replay")
    assert again.replay is not None
    assert again.replay.identical, (again.record_hash, again.replay.original_hash)


def test_stepped_mode_advances_only_when_asked(tmp_path: Path) -> None:
    site = load_site("reference-1mw")
    options = LiveOptions(out_dir=tmp_path / "stepped", mode="stepped", duration_s=600,
                          modbus="127.0.0.1:0", status=False)
    rig = LiveRig(site, options)
    times: list[float] = []

    def controller() -> None:
        while rig.modbus is None or not rig.modbus.port:
            time.sleep(0.05)
        rows = {r["id"]: r for r in json.loads(
            (tmp_path / "stepped" / "points.json").read_text())}
        client = ModbusTcpClient("127.0.0.1", port=rig.modbus.port)
        assert client.connect()
        from rig.protocols.modbus.registers import encode_float32
        step = rows["rig.step"]["modbus"]
        for seconds in (0.0, 60.0, 60.0, 480.0):
            if seconds:
                regs = [int(x) for x in encode_float32([seconds], "ABCD")[0]]
                client.write_registers(step["address"], regs, device_id=step["unit_id"])
            if len(times) < 3:  # the last step reaches the end of the run
                time.sleep(0.4)
                times.append(_read_float(client, rows["rig.sim_time"], "ABCD"))
        client.close()

    thread = threading.Thread(target=controller)
    thread.start()
    asyncio.run(rig.run())
    thread.join(timeout=10)
    assert times[:3] == [0.0, 60.0, 120.0]
    assert rig.twin.now == 600.0


def test_watchdog_fallback_in_a_live_run(tmp_path: Path) -> None:
    site = load_site("reference-1mw")
    options = LiveOptions(out_dir=tmp_path / "wd", speed=20, duration_s=200,
                          modbus="127.0.0.1:0", status=False, watchdog_timeout_s=30)
    rig = LiveRig(site, options)
    done = threading.Event()

    def controller() -> None:
        while rig.modbus is None or not rig.modbus.port:
            time.sleep(0.05)
        rows = {r["id"]: r for r in json.loads((tmp_path / "wd" / "points.json").read_text())}
        client = ModbusTcpClient("127.0.0.1", port=rig.modbus.port)
        assert client.connect()
        hb = rows["cdu2.heartbeat"]["modbus"]
        hand = rows["cdu2.valve_cmd.hand"]["modbus"]
        client.write_coil(hand["address"], True, device_id=hand["unit_id"])
        for k in range(1, 6):  # beats for about 50 simulated seconds, then goes silent
            client.write_register(hb["address"], k, device_id=hb["unit_id"])
            time.sleep(0.5)
        client.close()
        done.set()

    thread = threading.Thread(target=controller)
    thread.start()
    asyncio.run(rig.run())
    thread.join(timeout=10)
    assert done.is_set()
    trips = [e for e in rig.twin.events if e.kind == "watchdog" and e.source == "cdu2"]
    assert trips, "the watchdog did not trip"
    last_beat = max(c.t for c in RunStore.open(tmp_path / "wd").commands()
                    if c.point == "cdu2.heartbeat")
    slice_sim = options.slice_s * options.speed
    # not before the 30 s timeout, and at most one slice after it
    assert last_beat + 30 < trips[0].t <= last_beat + 30 + slice_sim + 1e-9
    assert not rig.twin.cdus[1].valve_cmd.hand  # safe fallback: back to auto
    store = RunStore.open(tmp_path / "wd")
    commands = [(c.point, c.value, c.source) for c in store.commands()]
    store.close()
    # the controller had put the valve in hand, and the watchdog put it back
    assert ("cdu2.valve_cmd.hand", 1.0, "modbus") in commands
    assert ("cdu2.valve_cmd.hand", 0.0, "watchdog") in commands
