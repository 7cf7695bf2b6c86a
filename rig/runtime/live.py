"""The live rig: the twin paced to the wall clock and served over Modbus TCP and MQTT.

Everything that touches the twin runs on one asyncio thread. Each slice (default 100 ms
of wall time): apply the writes queued by the Modbus server and the MQTT adapter (and
record them for replay), advance the twin, refresh the Modbus registers from one
snapshot, check the communication watchdogs, record what the systems under test
published. Telemetry is published from inside the simulation at every sensor period, so
it keeps one message per device and period at any speed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from rig.assess.expect import evaluate, record_mqtt
from rig.assess.faults import FaultContext, ScheduledFault, schedule
from rig.present.pointlist import point_list, render
from rig.present.report import write_reports
from rig.present.summary import (
    Export,
    LiveOutcome,
    Pacing,
    RunSummary,
    ScenarioOutcome,
    build_summary,
    write_summary,
)
from rig.protocols.modbus.registers import ModbusMap
from rig.protocols.modbus.server import ModbusConfig, ModbusServer
from rig.protocols.mqtt import topics
from rig.protocols.mqtt.adapter import MqttAdapter, MqttConfig
from rig.protocols.mqtt.broker import EmbeddedBroker
from rig.protocols.mqtt.observer import Observer
from rig.record.influx import Forwarder, InfluxTarget
from rig.record.recorder import Recorder
from rig.record.store import RunStore
from rig.runtime.clock import Pacer, Policy
from rig.runtime.offline import manifest_for
from rig.runtime.replay import RIG_DEVICE, add_rig_points, controlled_devices, data_hash
from rig.runtime.watchdog import Watchdog
from twin.errors import ConfigError, ServiceError
from twin.plant import DEFAULT_START, Twin
from twin.points import Command, Kind
from twin.site import Site

log = logging.getLogger(__name__)

SUT_FILTER = "sut/#"


@dataclass
class LiveOptions:
    """How a live run is served. Times in seconds (wall unless stated)."""

    out_dir: Path
    speed: float = 1.0
    duration_s: float | None = None  # simulated; None = until interrupted
    slice_s: float = 0.1
    policy: Policy = "warn"
    mode: Literal["realtime", "stepped"] = "realtime"
    modbus: str = "127.0.0.1:5020"
    mqtt: str | None = None  # None = embedded broker on loopback
    broker_port: int = 0  # of the embedded broker; 0 = any free port
    mqtt_qos: int = 1
    seed: int = 0
    start: datetime = DEFAULT_START
    record_period_s: float = 1.0  # simulated
    watchdog_timeout_s: float = 60.0  # simulated
    watchdog_fallback: Literal["hold", "safe"] = "safe"
    status: bool = True
    controller: str = "none"  # reference | no-isolate | none
    leak_detector: str = "none"  # reference | high-threshold | none
    source: str | None = None
    influx: str | None = None  # InfluxDB URL to forward to while running


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


class LiveRig:
    """One live run of a site (optionally a scenario with faults and expectations)."""

    def __init__(self, site: Site, options: LiveOptions, scenario: Any = None) -> None:
        self.site = site
        self.opt = options
        self.scenario = scenario
        self.twin = Twin(site, seed=options.seed, start=options.start)
        self.step_request = Command(0.0, 0.0, hand=True)
        self.achieved_speed = 0.0
        self._add_rig_points()
        self.faults: list[ScheduledFault] = []
        self.ctx = FaultContext(self.twin)
        devices = controlled_devices(self.twin)
        self.watchdog = Watchdog(self.twin, dict.fromkeys(devices, options.watchdog_timeout_s),
                                 dict.fromkeys(devices, options.watchdog_fallback))
        self.modbus_map = self._modbus_map()
        self.pacer = Pacer(options.slice_s, options.policy)
        self.broker: EmbeddedBroker | None = None
        self.mqtt: MqttAdapter | None = None
        self.observer: Observer | None = None
        self.modbus: ModbusServer | None = None
        self.store: RunStore | None = None
        self.recorder: Recorder | None = None
        self.suts: dict[str, subprocess.Popen[bytes]] = {}
        self.forwarder: Forwarder | None = None
        self.export_error: str | None = None
        self.mqtt_url = ""
        self.stop_requested = False
        self._hand_state: dict[str, float] = {}

    def _modbus_map(self) -> ModbusMap:
        """The register map with the site's unit ids and scaled encodings."""
        proto = self.site.protocols
        problems = [f"protocols.scaled: no point {pid!r}" for pid in proto.scaled
                    if pid not in self.twin.points]
        problems += [f"protocols.unit_ids: no device {dev!r}" for dev in proto.unit_ids
                     if dev not in self.twin.points.devices()]
        if problems:
            raise ConfigError([f"site {self.site.name}: {p}" for p in problems])
        options = {pid: (enc.type, enc.scale) for pid, enc in proto.scaled.items()}
        options.update(self.watchdog.modbus_options())
        return ModbusMap.for_twin(self.twin, options=options,
                                  unit_ids=proto.unit_ids or None)

    def request_stop(self, why: str = "requested") -> None:
        """End the run at the next slice boundary."""
        log.info("stopping the run (%s)", why)
        self.stop_requested = True
        self.twin.emit(RIG_DEVICE, "stop", f"run stopped: {why}")

    # -- set-up -------------------------------------------------------------------------
    def _add_rig_points(self) -> None:
        add_rig_points(self.twin, lambda: self.achieved_speed, self.step_request,
                       lambda: float(sum(self.watchdog.tripped.values())),
                       lambda: float(sum(self.watchdog.trips.values())))

    def _scenario_manifest(self) -> dict[str, Any]:
        if self.scenario is None:
            return {}
        return {"scenario": self.scenario.name,
                "scenario_config": self.scenario.model_dump(mode="json")}

    async def _setup(self) -> None:
        opt = self.opt
        opt.out_dir.mkdir(parents=True, exist_ok=True)
        if self.scenario is not None:
            self.faults = schedule(self.ctx, list(self.scenario.faults))
        manifest = manifest_for(self.site, seed=opt.seed, start=opt.start, mode="live",
                                source=opt.source, speed=opt.speed, slice_s=opt.slice_s,
                                record_period_s=opt.record_period_s,
                                **self._scenario_manifest())
        self.store = RunStore.create(opt.out_dir, manifest,
                                     [p.describe() for p in self.twin.points])
        self.recorder = Recorder(self.twin, self.store, opt.record_period_s)
        if opt.influx:
            self._start_forwarder(opt.influx)
        prefix = self.site.protocols.mqtt_prefix
        rows = point_list(self.twin, self.modbus_map, prefix, self.site.name)
        (opt.out_dir / "points.json").write_text(render(rows, "json"))
        self.modbus = ModbusServer(self.modbus_map, ModbusConfig.from_endpoint(opt.modbus),
                                   quiet_points=self.watchdog.heartbeat_ids)
        try:
            await self.modbus.start()
        except OSError as exc:
            raise ServiceError(f"{exc}: is another program using that port? choose one with "
                               "--modbus HOST:PORT") from exc
        self.ctx.adapters["modbus"] = self.modbus
        if opt.mqtt is None:
            self.broker = EmbeddedBroker(port=opt.broker_port)
            self.mqtt_url = self.broker.start()
        else:
            self.mqtt_url = opt.mqtt
        config = MqttConfig.for_site(self.site, self.mqtt_url, qos=opt.mqtt_qos)
        self.mqtt = MqttAdapter(config, self.twin.points).start(wait_s=10.0)
        self.ctx.adapters["mqtt"] = self.mqtt
        self.observer = Observer(self.mqtt_url, [
            f"{topics.base(prefix, self.site.name)}/{SUT_FILTER}",
            topics.status(prefix, self.site.name)]).start()
        self.twin.every(self.site.sensors.period, self._publish)
        self._hand_state = self._hand_values()
        self._start_suts(prefix)

    def _start_forwarder(self, url: str) -> None:
        """Forward to InfluxDB; when that cannot start, say why and keep recording locally."""
        assert self.store is not None
        try:
            forwarder = Forwarder(self.store, InfluxTarget.from_url(url))
            forwarder.start()
        except (ServiceError, ValueError) as exc:
            self.export_error = str(exc)
            log.error("InfluxDB export disabled, the run keeps recording locally: %s", exc)
            self.twin.emit(RIG_DEVICE, "export_error", str(exc))
            return
        self.forwarder = forwarder

    def _start_suts(self, prefix: str) -> None:
        opt = self.opt
        modbus_at = f"127.0.0.1:{self.modbus.port}" if self.modbus else opt.modbus
        if opt.controller != "none":
            self._spawn("controller", [
                "-m", "rig.sut.controller", "--modbus", modbus_at,
                "--points", str(opt.out_dir / "points.json"), "--variant", opt.controller,
                "--speed", f"{opt.speed:g}"])
        if opt.leak_detector != "none":
            self._spawn("leak_detector", [
                "-m", "rig.sut.leak_detector", "--mqtt", self.mqtt_url, "--prefix", prefix,
                "--site", self.site.name, "--variant", opt.leak_detector,
                "--reservoir-area", f"{self.site.cdus.reservoir_area:g}"])

    def _spawn(self, name: str, args: list[str]) -> None:
        logfile = (self.opt.out_dir / f"sut-{name}.log").open("wb")
        self.suts[name] = subprocess.Popen([sys.executable, *args], stdout=logfile,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.info("started %s (pid %d), log %s", name, self.suts[name].pid, logfile.name)

    # -- per slice ----------------------------------------------------------------------
    def _publish(self) -> None:
        if self.mqtt is not None:
            self.mqtt.publish_twin(self.twin)

    def _apply_external(self) -> None:
        assert self.modbus is not None and self.mqtt is not None and self.recorder is not None
        t = self.twin.now
        applied = [(w.point, w.value, "modbus") for w in self.modbus.apply_pending(self.twin)
                   if w.accepted]
        applied += [(c.point, float(c.value), "mqtt") for c in self.mqtt.apply_pending(self.twin)
                    if c.accepted and c.value is not None]
        for point, value, source in applied:
            self.recorder.record_command(t, point, value, source)
            if point in self._hand_state:
                self._hand_state[point] = value

    def _hand_values(self) -> dict[str, float]:
        return {p.id: p.getter() for p in self.twin.points
                if p.kind is Kind.COMMAND and p.id.endswith(".hand")}

    def _check_watchdog(self) -> None:
        """Run the watchdogs; record their fallback writes as commands for replay."""
        assert self.recorder is not None
        if not self.watchdog.check(self.twin.now):
            return
        now = self._hand_values()
        t = self.twin.now
        for hand_id, value in now.items():
            if value == self._hand_state.get(hand_id):
                continue
            if value:
                target = hand_id[:-5]
                self.recorder.record_command(t, target, self.twin.points[target].getter(),
                                             "watchdog")
            self.recorder.record_command(t, hand_id, value, "watchdog")
        self._hand_state = now

    def _record_observed(self) -> None:
        assert self.observer is not None and self.store is not None
        for topic, payload in self.observer.drain():
            record_mqtt(self.store, self.twin.now, topic, payload)

    def _next_target(self, sim_per_slice: float) -> float:
        if self.opt.mode == "stepped":
            step = self.step_request.hand_value
            self.step_request.hand_value = 0.0
            return self.twin.now + step
        return self.twin.now + sim_per_slice

    # -- the run ------------------------------------------------------------------------
    async def run(self) -> RunSummary:
        """Serve the twin until the duration is reached or the run is stopped."""
        wall0 = time.perf_counter()
        try:
            await self._setup()
        except BaseException:
            await self._abort_setup()
            raise
        status = StatusLine(self) if self.opt.status else None
        duration = self.opt.duration_s
        sim_per_slice = self.opt.slice_s * self.opt.speed
        loop_start = time.perf_counter()
        error: str | None = None
        try:
            self.pacer.start()
            while not self.stop_requested and (duration is None or self.twin.now < duration):
                await self.pacer.wait()
                self._apply_external()
                target = self._next_target(sim_per_slice)
                if duration is not None:
                    target = min(target, duration)
                self.twin.run_until(target)
                elapsed = time.perf_counter() - loop_start
                self.achieved_speed = self.twin.now / elapsed if elapsed > 0 else 0.0
                assert self.modbus is not None
                self.modbus.refresh(self.twin.measured_values(), self.twin.now)
                self._check_watchdog()
                self._record_observed()
                if status is not None:
                    status.update()
        except Exception as exc:  # report every failure in the summary, then re-raise
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            wall = time.perf_counter() - loop_start
            if status is not None:
                status.finish()
            summary = await self._teardown(wall, time.perf_counter() - wall0, error)
        return summary

    async def _abort_setup(self) -> None:
        """Release what a failed set-up had already opened."""
        await self._stop_suts()
        for close in (self.observer and self.observer.close, self.mqtt and self.mqtt.close,
                      self.broker and self.broker.stop):
            if close:
                close()
        if self.modbus is not None:
            await self.modbus.stop()
        if self.recorder is not None:
            self.recorder.close()
        if self.store is not None:
            self.store.close()

    async def _teardown(self, wall_s: float, total_s: float, error: str | None) -> RunSummary:
        await self._stop_suts()
        if self.observer is not None:
            self._record_observed()
            self.observer.close()
        mqtt_stats = self.mqtt.stats() if self.mqtt else {}
        modbus_stats = self.modbus.stats() if self.modbus else {}
        if self.mqtt is not None:
            self.mqtt.close()
        if self.broker is not None:
            self.broker.stop()
        if self.modbus is not None:
            await self.modbus.stop()
        assert self.store is not None and self.recorder is not None
        self.recorder.close()
        stats = self.pacer.stats
        pacing = Pacing(
            lateness_p50_ms=stats.percentile_ms(50), lateness_p99_ms=stats.percentile_ms(99),
            lateness_max_ms=stats.max_ms(), slices=len(stats.lateness),
            behind_slices=stats.behind_slices, skipped_slices=stats.skipped_slices,
            speed_requested=self.opt.speed, total_wall_s=total_s)
        summary = build_summary(self.twin, wall_s=wall_s, mode=f"live-{self.opt.mode}",
                                run_dir=self.opt.out_dir, pacing=pacing)
        summary.live = LiveOutcome(policy=self.opt.policy, error=error, modbus=modbus_stats,
                                   mqtt=_plain(mqtt_stats),
                                   faults=[_fault_row(f) for f in self.faults])
        self.store.write_kpis(summary.kpis)
        if self.scenario is not None:
            self._verdicts(summary)
        self.store.flush()
        export = summary.live.export = Export(influx=self.opt.influx, error=self.export_error)
        if self.forwarder is not None:  # after the last write, so everything is exported
            export.stats = str(self.forwarder.stop(drain=True))
            export.error = str(self.forwarder.error) if self.forwarder.error else None
        summary.record_hash = data_hash(self.store)
        self.store.close()
        write_summary(self.opt.out_dir, summary)
        return summary

    def _verdicts(self, summary: RunSummary) -> None:
        """Evaluate the scenario's expectations; store verdicts and write the reports."""
        assert self.store is not None and self.scenario is not None
        faults = [_fault_row(f) for f in self.faults]
        verdicts = evaluate(self.scenario.expect, self.store,
                            {f.spec.id: f.onset_s for f in self.faults}, self.twin.now)
        for v in verdicts:
            self.store.write_verdict(v.name, v.verdict, v.evidence)
        reports = write_reports(self.opt.out_dir, self.scenario.name, verdicts, self.store,
                                faults, summary.kpis)
        summary.scenario = ScenarioOutcome(scenario=self.scenario.name, verdicts=verdicts,
                                           reports={k: str(p) for k, p in reports.items()})

    async def _stop_suts(self) -> None:
        """SIGTERM the systems under test; the loop keeps serving them while they stop."""
        for proc in self.suts.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.perf_counter() + 5.0
        while any(p.poll() is None for p in self.suts.values()) and \
                time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        for name, proc in self.suts.items():
            if proc.poll() is None:
                log.warning("%s did not stop in 5 s; killing it", name)
                proc.kill()
                proc.wait()


def _fault_row(f: ScheduledFault) -> dict[str, Any]:
    spec: Any = f.spec
    return {"id": spec.id, "kind": spec.kind, "target": spec.target, "onset_s": f.onset_s,
            "end_s": f.end_s, "error": f.error}


def _plain(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if isinstance(v, int | float | bool | str)}


class StatusLine:
    """A compact status view: one line, redrawn each second (every 10 s off a terminal)."""

    def __init__(self, rig: LiveRig) -> None:
        self.rig = rig
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
        rig = self.rig
        mb = rig.modbus.stats() if rig.modbus else {}
        mq = rig.mqtt.stats() if rig.mqtt else {}
        lat = rig.pacer.stats.lateness[-int(10 / rig.opt.slice_s):]
        p99 = sorted(lat)[int(0.99 * (len(lat) - 1))] * 1000 if lat else 0.0
        alarms = sum(1 for p in rig.twin.points.of_kind(Kind.ALARM) if p.getter() >= 0.5)
        t = int(rig.twin.now)
        line = (f"sim {t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}  "
                f"speed {rig.achieved_speed:6.1f}x  lateness p99 {p99:5.1f} ms  "
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


def run_live(site: Site, options: LiveOptions, scenario: Any = None) -> RunSummary:
    """Run a live rig to completion (blocking); SIGTERM and SIGINT end it cleanly (the
    run is recorded, exported and reported as far as it got). Returns its summary."""
    rig = LiveRig(site, options, scenario)

    async def main() -> RunSummary:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, rig.request_stop, sig.name)
        return await rig.run()

    return asyncio.run(main())
