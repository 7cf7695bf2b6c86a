"""The reference systems under test, run as real processes against a real rig.

The rig is built here as the live runner builds it: a twin of the reference site with the
rig's own points and the heartbeat watchdogs, the real Modbus server on a free port, the
real MQTT adapter on the shared Mosquitto, driven by a paced loop (100 ms slices: apply
queued writes, advance the twin, refresh the registers, check the watchdogs; telemetry at
every sensor period from inside the simulation). The controller and the leak detectors
are separate ``python -m`` processes that know the plant only through the exported point
list and the wire. Times in assertions are simulated seconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from servers import unique_name

from rig.build import add_rig_points, build_plan, controlled_devices
from rig.config.sites import load_site
from rig.present.pointlist import point_list, render
from rig.protocols.modbus.registers import WORD_ORDERS, ModbusMap, encode_float32
from rig.protocols.modbus.server import ModbusConfig, ModbusServer
from rig.protocols.mqtt.adapter import MqttAdapter, MqttConfig
from rig.runtime.watchdog import Watchdog
from rig.sut.controller import Action, PlantLogic, Settings
from rig.sut.leak_detector import DetectorSettings, LeakDetector
from rig.sut.pointmap import PointMap, float32_from_registers, plan_reads
from twin import faults
from twin.plant import Twin
from twin.points import Command
from twin.site import Site

REPO = Path(__file__).resolve().parent.parent
SLICE_S = 0.1
WATCHDOG_S = 60.0  # simulated, as the live rig; the controller beats every 5 s


# --------------------------------------------------------------------------- the rig


class PacedRig:
    """A twin served over Modbus (and MQTT) and paced to the wall clock at ``speed``."""

    def __init__(self, site: Site, speed: float, *, mqtt_url: str | None = None,
                 prefix: str = "heatrig", rig_points: bool = True) -> None:
        self.site, self.speed, self.prefix = site, speed, prefix
        self.twin = Twin(site, seed=0)
        if rig_points:
            add_rig_points(self.twin, lambda: self.speed, Command(0.0, 0.0, hand=True))
        devices = controlled_devices(self.twin)
        self.watchdog = Watchdog(self.twin, dict.fromkeys(devices, WATCHDOG_S),
                                 dict.fromkeys(devices, "safe"))
        self.map = ModbusMap.for_twin(self.twin, options=self.watchdog.modbus_options())
        self.server = ModbusServer(self.map, ModbusConfig(port=0),
                                   quiet_points=self.watchdog.heartbeat_ids)
        self.adapter = None if mqtt_url is None else MqttAdapter(
            MqttConfig(url=mqtt_url, site=site.name, prefix=prefix), self.twin.points)
        self.serving = False

    def write_points(self, path: Path) -> Path:
        """Export the point list (JSON), as ``heatrig run`` does for its SUTs."""
        path.write_text(render(point_list(self.twin, self.map, self.prefix, self.site.name),
                               "json"))
        return path

    async def __aenter__(self) -> PacedRig:
        await self.server.start()
        self.serving = True
        if self.adapter is not None:
            adapter = self.adapter.start(wait_s=10.0)
            self.twin.every(self.site.sensors.period, lambda: adapter.publish_twin(self.twin))
        self.server.refresh(self.twin.measured_values(), self.twin.now)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.adapter is not None:
            self.adapter.close()
        await self.stop_server()

    async def stop_server(self) -> None:
        """Stop serving Modbus (the rig goes away)."""
        if self.serving:
            self.serving = False
            await self.server.stop()

    async def run(self, wall_s: float, until: Callable[[], bool] | None = None) -> bool:
        """Paced slices for at most ``wall_s``; True as soon as ``until()`` holds."""
        tw = self.twin
        deadline = time.monotonic() + wall_s
        next_slice = time.monotonic()
        while time.monotonic() < deadline:
            self.server.apply_pending(tw)
            if self.adapter is not None:
                self.adapter.apply_pending(tw)
            tw.run_until(tw.now + SLICE_S * self.speed)
            self.server.refresh(tw.measured_values(), tw.now)
            self.watchdog.check(tw.now)
            if until is not None and until():
                return True
            next_slice += SLICE_S
            await asyncio.sleep(max(0.0, next_slice - time.monotonic()))
        return until is None

    def modbus_writes(self, point_id: str) -> list[tuple[float, str]]:
        """(t, message) of every Modbus write of a point the twin applied."""
        return [(e.t, e.message) for e in self.twin.events
                if e.source == "modbus" and e.message.startswith(f"{point_id} = ")]


# --------------------------------------------------------------------------- helpers


class Suts:
    """The system-under-test processes of a test; every one is gone at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[IO[bytes]] = []

    def start(self, name: str, module: str, *args: str) -> subprocess.Popen[bytes]:
        out = (self.dir / f"{name}.out").open("wb")
        err = (self.dir / f"{name}.err").open("wb")
        self._files += [out, err]
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdout=out,
                                stderr=err, stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def stop(self, name: str, timeout: float = 10.0) -> int:
        """SIGTERM and wait; the exit status."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def out(self, name: str) -> str:
        return (self.dir / f"{name}.out").read_text()

    def err(self, name: str) -> str:
        return (self.dir / f"{name}.err").read_text()

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        for f in self._files:
            f.close()


@pytest.fixture
def suts(tmp_path: Path) -> Iterator[Suts]:
    procs = Suts(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


class Listener:
    """Records every message under ``<prefix>/<site>/sut/#`` (JSON decoded when possible)."""

    def __init__(self, port: int, base: str) -> None:
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique_name("sutlisten"))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{base}/sut/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5.0), "listener did not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            payload: Any = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload.decode(errors="replace")
        with self._lock:
            self.messages.append((msg.topic, payload))

    def on(self, suffix: str) -> list[Any]:
        with self._lock:
            return [p for t, p in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listener_factory() -> Iterator[Callable[[int, str], Listener]]:
    made: list[Listener] = []

    def make(port: int, base: str) -> Listener:
        made.append(Listener(port, base))
        return made[-1]

    try:
        yield make
    finally:
        for lst in made:
            lst.close()


def reference_site(**cdu_overrides: Any) -> Site:
    site = load_site("reference-1mw")
    if cdu_overrides:
        site = site.model_copy(update={"cdus": site.cdus.model_copy(update=cdu_overrides)})
    return site


def hp_duty_and_standby(tw: Twin) -> None:
    """Operator set-up: hp1 duty and hp2 standby, both in hand."""
    for pid, value in (("hp1.enable", 1), ("hp1.enable.hand", 1), ("hp2.enable", 0),
                       ("hp2.enable.hand", 1)):
        tw.write(pid, value, source="test")


def controller_args(rig: PacedRig, points: Path, variant: str, *extra: str) -> list[str]:
    return ["--modbus", f"127.0.0.1:{rig.server.port}", "--points", str(points),
            "--variant", variant, "--speed", f"{rig.speed:g}", "--period", "0.25", *extra]


def beating(rig: PacedRig, device: str = "cdu1", beats: int = 3) -> Callable[[], bool]:
    return lambda: rig.watchdog.beats[device].changes >= beats


# --------------------------------------------------------------------------- offline units


def export_points(tmp_path: Path) -> tuple[Twin, ModbusMap, PointMap]:
    plan = build_plan(reference_site())  # the live table, as `heatrig run` exports it
    path = tmp_path / "points.json"
    path.write_text(render(plan.point_list(), "json"))
    return plan.twin, plan.modbus_map, PointMap.load(path)


def test_point_map_decodes_what_the_rig_encodes(tmp_path: Path) -> None:
    values = [35.25, -1.5e-3, 123456.0, math.pi]
    for order in WORD_ORDERS:
        regs = encode_float32(values, order)
        got = [float32_from_registers(int(a), int(b), order) for a, b in regs]
        assert got == pytest.approx(values, rel=1e-6), order
    tw, m, pm = export_points(tmp_path)
    assert len(pm) == len(tw.points)
    assert pm.cdus() == ["cdu1", "cdu2", "cdu3", "cdu4"] and pm.heat_pumps() == ["hp1", "hp2"]
    assert pm.facility_pumps() == ["facility.pump1", "facility.pump2"]
    assert pm.spot_sensors("cdu1")[0] == "cdu1.leak" and len(pm.spot_sensors("cdu1")) == 11
    assert pm["cdu1.heartbeat"].encoding == "uint16" and pm["cdu1.heartbeat"].writable
    blocks = plan_reads(pm)
    assert all(b.count <= (2000 if b.table in ("coils", "discrete_inputs") else 125)
               for b in blocks)
    values = tw.measured_values()
    regs, bits = m.encode(values)
    decoded: set[str] = set()
    for b in blocks:
        image = bits if b.table in ("coils", "discrete_inputs") else regs
        start = m.offset(b.unit_id, b.table) + b.start
        for pid, value in b.decode([int(x) for x in image[start:start + b.count]]).items():
            info = pm[pid]  # a scaled 16-bit value is within half a count
            abs_tol = info.scale / 2 if info.encoding in ("int16", "uint16") else 0.0
            assert value == pytest.approx(values[tw.points[pid].index], rel=1e-6,
                                          abs=abs_tol), pid
            decoded.add(pid)
    assert decoded == {e.point.id for e in m}  # every served point was read back
    assert pm["site.outdoor_temp"].encoding == "int16"  # the site's own encodings


def test_level_decay_is_a_mass_balance_with_the_make_up() -> None:
    """A 0.03 kg/s leak while the make-up (0.1 kg/s) refills: the estimate is the leak."""
    det = LeakDetector(DetectorSettings())
    mass, alarms = 120.0, []
    for k in range(200):
        t = float(k)
        makeup = 0.1 if 60 <= k < 150 else 0.0
        level = round(mass / (990 * 0.25), 3)
        alarms += det.telemetry("cdu3", {"t": t, "values": {
            "cdu3.reservoir_level": level, "cdu3.makeup_flow": makeup, "cdu3.leak": 0}})
        mass += (makeup - (0.03 if k >= 20 else 0.0)) * 1.0
    assert [a["alarm"] for a in alarms] == ["leak"]
    assert alarms[0]["reason"] == "level decay" and alarms[0]["location"] == "cdu3"
    assert 20 < alarms[0]["t"] <= 80  # the window's mean rate crossed 0.01 kg/s
    assert alarms[0]["rate_kg_s"] == pytest.approx(0.03, rel=0.2)  # the rate since the onset
    assert det.cdus["cdu3"].leak_rate() == pytest.approx(0.03, rel=0.1)
    quiet = LeakDetector(DetectorSettings(variant="high-threshold"))
    assert not quiet.telemetry("cdu3", {"t": 1.0, "values": {"cdu3.reservoir_level": 0.5,
                                                             "cdu3.leak": 1}})


def test_controller_isolates_when_the_make_up_cannot_hold_the_level(tmp_path: Path) -> None:
    """No spot sensor: low level while the make-up runs, for --confirm s -> a leak."""
    _, _, pm = export_points(tmp_path)
    found, logics = {}, {}
    for variant in ("reference", "no-isolate"):
        logic = PlantLogic(pm, Settings(variant=variant, confirm_s=30.0))
        actions: list[Action] = []
        for k in range(0, 200, 5):
            v = dict.fromkeys(logic.needs(), 0.0) | logic.hold  # read back as written
            v["cdu4.reservoir_level"] = 0.64 - 0.0005 * k
            v["cdu4.makeup_flow"] = 0.1 if k >= 50 else 0.0
            v["cdu4.low_level"] = float(k >= 50)
            actions += [a for a in logic.step(float(k), v) if a.writes]
        found[variant], logics[variant] = actions, logic
    leak, = found["reference"]
    assert leak.text.startswith("leak on cdu4 (reservoir level low") and "80 s" not in leak.text
    assert leak.writes == [("cdu4.isolate", 1.0), ("cdu4.isolate.hand", 1.0),
                           ("cdu4.makeup_enable", 0.0), ("cdu4.makeup_enable.hand", 1.0)]
    broken, = found["no-isolate"]
    assert broken.writes == leak.writes[2:]
    logic = logics["reference"]  # a watchdog fallback put the isolation back in auto:
    v = dict.fromkeys(logic.needs(), 0.0) | logic.hold | {"cdu4.isolate.hand": 0.0}
    assert not [a for a in logic.step(300.0, v) if a.writes]  # one read may be a race
    again, = [a for a in logic.step(305.0, v) if a.writes]
    assert again.writes == [("cdu4.isolate.hand", 1.0)]


# --------------------------------------------------------------------------- live


def test_reference_controller_and_detector(mosquitto: Any, tmp_path: Path, suts: Suts,
                                           listener_factory: Any) -> None:
    """Leak at cdu2.rack04: isolated and alarmed; hp1 trips: hp2 enabled, hp1 reset."""
    prefix = unique_name("sut")
    site = reference_site()
    rig = PacedRig(site, 20.0, mqtt_url=mosquitto.url, prefix=prefix)
    hp_duty_and_standby(rig.twin)
    rig.twin.run_until(60.0)
    points = rig.write_points(tmp_path / "points.json")
    listen = listener_factory(mosquitto.port, f"{prefix}/{site.name}")
    detector_status = "sut/leak_detector/status"

    async def scenario() -> None:
        async with rig:
            suts.start("controller", "rig.sut.controller",
                       *controller_args(rig, points, "reference", "--reset-delay", "60"))
            suts.start("detector", "rig.sut.leak_detector", "--mqtt", mosquitto.url,
                       "--prefix", prefix, "--site", site.name,
                       "--reservoir-area", f"{site.cdus.reservoir_area:g}")
            assert await rig.run(20.0, lambda: beating(rig)() and "online" in listen.on(
                detector_status)), "controller or detector did not come up"
            tw = rig.twin
            t_leak = tw.now
            faults.leak(tw, "cdu2.rack04", 0.2)
            cdu2 = tw.cdus[1]
            assert await rig.run(10.0, lambda: cdu2.isolated and not cdu2.makeup_enable.value
                                 and listen.on("/alarm"))
            (t_iso, _), = rig.modbus_writes("cdu2.isolate")
            assert t_iso - t_leak <= 20.0
            assert not any(c.isolated for i, c in enumerate(tw.cdus) if i != 1)
            alarm, = listen.on("/alarm")
            assert alarm["alarm"] == "leak" and alarm["device"] == "cdu2"
            assert alarm["location"] == "cdu2.rack04" and alarm["reason"] == "spot sensor"
            assert 0 <= alarm["t"] - t_leak <= 10.0
            assert alarm["rate_kg_s"] == pytest.approx(0.2, rel=0.3)

            hp1, hp2 = tw.heat_pumps
            assert hp1.running and not hp2.running, "set-up: hp1 duty, hp2 standby"
            t_trip = tw.now
            faults.compressor_trip(tw, "hp1")
            assert await rig.run(10.0, lambda: hp2.running), "hp2 was not started"
            assert hp2.enable.hand and hp2.enable.hand_value == 1.0  # the controller's write
            assert hp1.enable.hand and hp1.enable.hand_value == 0.0
            assert await rig.run(15.0, lambda: not hp1.tripped), "hp1 was not reset"
            resets = [e.t for e in tw.events if e.source == "hp1" and e.kind == "reset"]
            assert len(resets) == 1 and 60.0 <= resets[0] - t_trip <= 80.0
            assert await rig.run(10.0, lambda: "hp1 reset cleared" in suts.out("controller"))
            assert hp2.running and not hp1.enable.value  # hp1 stays the healthy standby
            assert cdu2.isolated
            assert suts.stop("controller") == 0
            assert suts.stop("detector") == 0
            assert await rig.run(3.0, lambda: listen.on(detector_status)[-1:] == ["offline"])
            assert sum(rig.watchdog.trips.values()) == 0

    asyncio.run(scenario())
    lines = suts.out("controller").splitlines()
    assert any(ln.startswith("t=") and "leak on cdu2" in ln and "isolate cdu2" in ln
               for ln in lines), lines
    assert any("reset hp1" in ln for ln in lines), lines
    assert any("hp1 reset cleared the trip" in ln for ln in lines), lines


def test_no_isolate_controller_never_isolates(tmp_path: Path, suts: Suts) -> None:
    """Same leak: make-up disabled but cdu2 never isolated; pumps still handled; the
    controller rides through a Modbus outage and exits with status 3 when the rig goes
    away for good. No rig.sim_time here, and another word order."""
    site = reference_site().model_copy(update={"protocols": reference_site().protocols
                                               .model_copy(update={"word_order": "CDAB"})})
    rig = PacedRig(site, 20.0, rig_points=False)
    for pid, value in (("facility.pump2.enable", 0), ("facility.pump2.enable.hand", 1)):
        rig.twin.write(pid, value, source="test")
    rig.twin.run_until(30.0)
    points = rig.write_points(tmp_path / "points.json")

    async def scenario() -> None:
        async with rig:
            proc = suts.start("controller", "rig.sut.controller",
                              *controller_args(rig, points, "no-isolate", "--give-up", "4"))
            assert await rig.run(20.0, beating(rig)), "controller did not come up"
            tw = rig.twin
            t_leak = tw.now
            faults.leak(tw, "cdu2.rack04", 0.2)
            faults.pump_trip(tw, "facility.pump1")
            assert await rig.run(20.0, lambda: tw.now - t_leak >= 120.0)
            assert not any(c.isolated for c in tw.cdus)
            assert not rig.modbus_writes("cdu2.isolate")
            cdu2 = tw.cdus[1]
            assert cdu2.makeup_enable.hand and cdu2.makeup_enable.value == 0.0  # leak seen
            assert tw.hydraulics.pumps[1].running  # standby pump enabled
            beats = rig.watchdog.beats["cdu1"]
            clear = rig.server.inject("modbus_disconnect", target="modbus")  # accept + drop
            await rig.run(1.0)
            before = beats.changes
            clear()
            assert await rig.run(10.0, lambda: beats.changes >= before + 3)
            assert proc.poll() is None
            await rig.stop_server()
            t_gone = time.monotonic()
            while proc.poll() is None and time.monotonic() - t_gone < 15.0:
                await asyncio.sleep(0.1)
            assert proc.returncode == 3

    asyncio.run(scenario())
    assert "answers again" in suts.err("controller") and "giving up" in suts.err("controller")
    lines = suts.out("controller").splitlines()
    assert any(ln.startswith("wall=") and "leak on cdu2" in ln and "isolate" not in ln
               for ln in lines), lines
    assert any("facility.pump1 tripped: enable standby facility.pump2" in ln
               for ln in lines), lines


def test_high_threshold_detector_misses_a_slow_leak(mosquitto: Any, tmp_path: Path,
                                                    suts: Suts, listener_factory: Any) -> None:
    """0.03 kg/s at cdu3 where no spot sensor gets wet: the reference detector alarms on the
    level decay (and clears after the leak stops); the high-threshold one says nothing."""
    prefix = unique_name("sut")
    site = reference_site(leak_sensor_volume=10.0)  # 10 m3: no sensor ever gets wet
    rig = PacedRig(site, 40.0, mqtt_url=mosquitto.url, prefix=prefix)
    listen = listener_factory(mosquitto.port, f"{prefix}/{site.name}")
    common = ["--mqtt", mosquitto.url, "--prefix", prefix, "--site", site.name]

    async def scenario() -> None:
        async with rig:
            suts.start("reference", "rig.sut.leak_detector", *common)
            suts.start("high", "rig.sut.leak_detector", *common, "--variant", "high-threshold",
                       "--name", "leak_detector_high")
            assert await rig.run(20.0, lambda: "online" in listen.on(
                "leak_detector/status") and "online" in listen.on("leak_detector_high/status"))
            base = f"{prefix}/{site.name}"  # junk first: no callback error may stop a loop
            listen.client.publish(f"{base}/cdu9/telemetry", b"{not json", qos=1)
            listen.client.publish(f"{base}/cdu9/telemetry", json.dumps(
                {"t": "soon", "values": {"cdu9.reservoir_level": 0.5}}), qos=1)
            tw = rig.twin
            t_leak = tw.now
            clear = faults.leak(tw, "cdu3", 0.03)
            assert await rig.run(15.0, lambda: listen.on("leak_detector/alarm"))
            alarm, = listen.on("leak_detector/alarm")
            assert not tw.points["cdu3.leak"].getter()
            assert alarm["alarm"] == "leak" and alarm["device"] == "cdu3"
            assert alarm["location"] == "cdu3" and alarm["reason"] == "level decay"
            assert 0 < alarm["t"] - t_leak <= 120.0
            assert alarm["rate_kg_s"] == pytest.approx(0.03, rel=0.3)
            clear()
            assert await rig.run(15.0, lambda: len(listen.on("leak_detector/alarm")) == 2)
            cleared = listen.on("leak_detector/alarm")[1]
            assert cleared["alarm"] == "clear" and cleared["device"] == "cdu3"
            assert await rig.run(20.0, lambda: tw.now - t_leak >= 400.0)
            assert listen.on("leak_detector_high/alarm") == []
            assert len(listen.on("leak_detector/alarm")) == 2  # nothing on the other CDUs
            assert suts.stop("reference") == 0 and suts.stop("high") == 0

    asyncio.run(scenario())
    assert "the network loop continues" in suts.err("reference")
