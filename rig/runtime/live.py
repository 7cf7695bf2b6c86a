"""The live rig: the twin paced to the wall clock and served over Modbus TCP and MQTT.

Everything that touches the twin runs on one asyncio thread. Each slice (default 100 ms
of wall time): apply the writes queued by the Modbus server and the MQTT adapter (and
record them for replay), advance the twin, refresh the Modbus registers from one
snapshot, check the communication watchdogs, record what the systems under test
published. Telemetry is published from inside the simulation at every sensor period, so
it keeps one message per device and period at any speed.

The twin and its point table come from `rig.build.build_plan`. Every resource a run
opens (`rig.runtime.services`, `rig.runtime.suts`) belongs to one `AsyncExitStack`, so a
start-up that fails at any step releases all that it had opened; the orderly end stops
the systems under test, then the services, then summarises, then lets the stack drain
the InfluxDB export and close the store.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from rig.assess.expect import record_mqtt
from rig.assess.faults import FaultContext, ScheduledFault, schedule
from rig.build import RIG_DEVICE, RigPlan, build_plan
from rig.config.defaults import (
    DEFAULT_SEED,
    DEFAULT_START,
    LIVE_RECORD_PERIOD_S,
    LIVE_SPEED,
    MODBUS_ADDRESS,
    MQTT_QOS,
    SLICE_S,
    WATCHDOG_FALLBACK,
    WATCHDOG_TIMEOUT_S,
)
from rig.present.summary import Export, LiveOutcome, RunSummary, build_summary, write_summary
from rig.protocols.modbus.registers import ModbusMap
from rig.protocols.modbus.server import ModbusServer
from rig.protocols.mqtt import topics
from rig.protocols.mqtt.adapter import MqttAdapter, MqttConfig
from rig.protocols.mqtt.broker import EmbeddedBroker
from rig.protocols.mqtt.observer import Observer
from rig.record.datahash import data_hash
from rig.record.influx import Forwarder
from rig.record.recorder import Recorder
from rig.record.store import RunStore
from rig.runtime import services
from rig.runtime.clock import Pacer, Policy
from rig.runtime.lockstep import Answer, Lockstep
from rig.runtime.offline import manifest_for
from rig.runtime.results import fault_row, judge, pacing, plain
from rig.runtime.services import startup_step
from rig.runtime.status import SlidingRate, StatusLine
from rig.runtime.suts import Suts, reference_answers, sut_commands
from rig.runtime.watchdog import Watchdog
from twin.errors import ServiceError
from twin.points import Kind
from twin.site import Site

__all__ = ["LiveOptions", "LiveRig", "SlidingRate", "StatusLine", "run_live"]

log = logging.getLogger(__name__)

SUT_FILTER = "sut/#"


@dataclass
class LiveOptions:
    """How a live run is served. Times in seconds (wall unless stated)."""

    out_dir: Path
    speed: float = LIVE_SPEED
    duration_s: float | None = None  # simulated; None = until interrupted
    slice_s: float = SLICE_S
    policy: Policy = "warn"
    mode: Literal["realtime", "stepped", "lockstep"] = "realtime"
    modbus: str = MODBUS_ADDRESS
    mqtt: str | None = None  # None = embedded broker on loopback
    broker_port: int = 0  # of the embedded broker; 0 = any free port
    mqtt_qos: int = MQTT_QOS
    seed: int = DEFAULT_SEED
    start: datetime = DEFAULT_START
    record_period_s: float = LIVE_RECORD_PERIOD_S  # simulated
    watchdog_timeout_s: float = WATCHDOG_TIMEOUT_S  # simulated
    watchdog_fallback: Literal["hold", "safe"] = WATCHDOG_FALLBACK
    status: bool = True
    controller: str = "none"  # reference | no-isolate | none
    leak_detector: str = "none"  # reference | high-threshold | none
    source: str | None = None
    influx: str | None = None  # InfluxDB URL to forward to while running


class LiveRig:
    """One live run of a site (optionally a scenario with faults and expectations).

    ``plan`` (from `build_plan` with the options' seed and start) is built here if not
    given; constructing a rig opens nothing."""

    def __init__(self, site: Site, options: LiveOptions, scenario: Any = None, *,
                 plan: RigPlan | None = None) -> None:
        self.site = site
        self.opt = options
        self.scenario = scenario
        self.plan = plan or build_plan(site, seed=options.seed, start=options.start)
        self.twin = self.plan.twin
        self.faults: list[ScheduledFault] = []
        self.ctx = FaultContext(self.twin)
        beats = self.plan.heartbeats
        self.watchdog = Watchdog(self.twin, dict.fromkeys(beats, options.watchdog_timeout_s),
                                 dict.fromkeys(beats, options.watchdog_fallback), beats=beats)
        self.pacer = Pacer(options.slice_s, options.policy)
        self.store: RunStore | None = None
        self.recorder: Recorder | None = None
        self.forwarder: Forwarder | None = None
        self.modbus: ModbusServer | None = None
        self.broker: EmbeddedBroker | None = None
        self.mqtt: MqttAdapter | None = None
        self.observer: Observer | None = None
        self.suts = Suts(options.out_dir)
        self.lockstep: Lockstep | None = None
        self.export_error: str | None = None
        self.mqtt_url = ""
        self.stop_requested = False
        self._started = False  # start-up complete: the end drains the export
        self._services: AsyncExitStack | None = None
        self._hand_state: dict[str, float] = {}

    @property
    def modbus_map(self) -> ModbusMap:
        """The served register map (the plan's)."""
        return self.plan.modbus_map

    @property
    def achieved_speed(self) -> float:
        """Simulated seconds per wall second so far."""
        return self.plan.state.speed

    def request_stop(self, why: str = "requested") -> None:
        """End the run at the next slice boundary."""
        log.info("stopping the run (%s)", why)
        self.stop_requested = True
        self.twin.emit(RIG_DEVICE, "stop", f"run stopped: {why}")

    # -- start-up -----------------------------------------------------------------------
    def _scenario_manifest(self) -> dict[str, Any]:
        if self.scenario is None:
            return {}
        return {"scenario": self.scenario.name,
                "scenario_config": self.scenario.model_dump(mode="json")}

    async def _start(self, stack: AsyncExitStack) -> None:
        """Open everything, each release pushed on ``stack`` as soon as it is open."""
        opt, plan = self.opt, self.plan
        opt.out_dir.mkdir(parents=True, exist_ok=True)
        if self.scenario is not None:
            self.faults = schedule(self.ctx, list(self.scenario.faults))
        manifest = manifest_for(self.site, seed=opt.seed, start=opt.start, mode="live",
                                source=opt.source, speed=opt.speed, slice_s=opt.slice_s,
                                record_period_s=opt.record_period_s,
                                **self._scenario_manifest())
        with startup_step("store"):
            self.store = services.open_store(stack, opt.out_dir, manifest,
                                             [p.describe() for p in self.twin.points])
        self.recorder = Recorder(self.twin, self.store, opt.record_period_s)
        if opt.influx:
            with startup_step("forwarder"):
                self._start_forwarder(stack, opt.influx)
        with startup_step("points.json"):
            services.write_point_list(opt.out_dir / "points.json", plan.point_list())
        # the services end before the summary; the store and the export after it
        serving = self._services = await stack.enter_async_context(AsyncExitStack())
        with startup_step("modbus"):
            self.modbus = await services.start_modbus(serving, plan.modbus_map, opt.modbus,
                                                      plan.heartbeat_ids)
        self.ctx.adapters["modbus"] = self.modbus
        if opt.mqtt is None:
            with startup_step("broker"):
                self.broker, self.mqtt_url = services.start_broker(serving, opt.broker_port)
        else:
            self.mqtt_url = opt.mqtt
        with startup_step("mqtt adapter"):
            config = MqttConfig.for_site(self.site, self.mqtt_url, qos=opt.mqtt_qos)
            self.mqtt = services.start_mqtt(serving, config, self.twin.points)
        self.ctx.adapters["mqtt"] = self.mqtt
        base = topics.base(plan.topics_prefix, plan.site_name)
        with startup_step("observer"):
            self.observer = services.start_observer(serving, self.mqtt_url, [
                f"{base}/{SUT_FILTER}", topics.status(plan.topics_prefix, plan.site_name)])
        self.twin.every(self.site.sensors.period, self._publish)
        self._hand_state = self._hand_values()
        serving.push_async_callback(self.suts.stop)
        for name, args in sut_commands(
                self.site, controller=opt.controller, leak_detector=opt.leak_detector,
                modbus_at=f"127.0.0.1:{self.modbus.port}", points_json=opt.out_dir /
                "points.json", mqtt_url=self.mqtt_url, speed=opt.speed,
                lockstep=opt.mode == "lockstep"):
            with startup_step(f"sut {name}"):
                self.suts.spawn(name, args)
        if opt.mode == "lockstep":
            self._start_lockstep(reference_answers(opt.controller, opt.leak_detector))
        self._started = True

    def _start_lockstep(self, answers: list[Answer]) -> None:
        """Wait for ``answers`` after every slice (see `rig.runtime.lockstep`)."""
        assert self.modbus is not None and self.mqtt is not None and self.observer is not None
        plan, mqtt = self.plan, self.mqtt

        def alive(name: str) -> bool | None:
            proc = self.suts.procs.get(name)
            return None if proc is None else proc.poll() is None

        lock = self.lockstep = Lockstep(
            answers, slice_s=self.opt.slice_s, announce=mqtt.publish_step, alive=alive,
            ack_topic=lambda name: topics.ack(plan.topics_prefix, plan.site_name, name))
        self.modbus.image.on_commit = lambda w: lock.on_modbus_write(w.point, w.value)
        self.observer.listener = lock.on_mqtt

    def _start_forwarder(self, stack: AsyncExitStack, url: str) -> None:
        """Forward to InfluxDB; when that cannot start, say why and keep recording locally."""
        assert self.store is not None
        try:
            self.forwarder = services.start_forwarder(stack, self.store, url,
                                                      drain=lambda: self._started)
        except (ServiceError, ValueError) as exc:
            self.export_error = str(exc)
            log.error("InfluxDB export disabled, the run keeps recording locally: %s", exc)
            self.twin.emit(RIG_DEVICE, "export_error", str(exc))

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
        changed = self.watchdog.check(self.twin.now)
        state = self.plan.state
        state.comm_lost = sum(self.watchdog.tripped.values())
        state.watchdog_trips = sum(self.watchdog.trips.values())
        if not changed:
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
            step = self.plan.state.step
            request, step.hand_value = step.hand_value, 0.0
            return self.twin.now + request
        return self.twin.now + sim_per_slice

    async def _loop(self, status: StatusLine | None) -> None:
        duration = self.opt.duration_s
        sim_per_slice = self.opt.slice_s * self.opt.speed
        lock = self.lockstep
        loop_start = time.perf_counter()
        if lock is not None:  # serve the start and wait until every system answers it
            assert self.modbus is not None
            self.modbus.refresh(self.twin.measured_values(), self.twin.now)
            lock.serve(self.twin.now)
            await lock.wait()
        self.pacer.start()
        while not self.stop_requested and (duration is None or self.twin.now < duration):
            if lock is None:
                await self.pacer.wait()
            self._apply_external()
            target = self._next_target(sim_per_slice)
            if duration is not None:
                target = min(target, duration)
            self.twin.run_until(target)
            elapsed = time.perf_counter() - loop_start
            self.plan.state.speed = self.twin.now / elapsed if elapsed > 0 else 0.0
            assert self.modbus is not None
            self.modbus.refresh(self.twin.measured_values(), self.twin.now)
            self._check_watchdog()
            if lock is not None:
                lock.serve(self.twin.now)
                await lock.wait()
            self._record_observed()
            if status is not None:
                status.update()

    def _status_line(self) -> StatusLine:
        assert self.modbus is not None and self.mqtt is not None
        return StatusLine(self.twin, self.pacer.stats, self.opt.slice_s,
                          lambda: self.achieved_speed, self.modbus.stats, self.mqtt.stats)

    # -- the run ------------------------------------------------------------------------
    async def run(self) -> RunSummary:
        """Serve the twin until the duration is reached or the run is stopped."""
        wall0 = time.perf_counter()
        summary: RunSummary | None = None
        try:
            async with AsyncExitStack() as stack:
                await self._start(stack)
                status = self._status_line() if self.opt.status else None
                loop_start = time.perf_counter()
                error: str | None = None
                try:
                    await self._loop(status)
                except Exception as exc:  # report every failure in the summary, then re-raise
                    error = f"{type(exc).__name__}: {exc}"
                    raise
                finally:
                    wall = time.perf_counter() - loop_start
                    if status is not None:
                        status.finish()
                    summary = await self._finish(wall, time.perf_counter() - wall0, error)
            # leaving the stack drained the export (after the last write) and closed the store
        finally:
            if summary is not None:
                assert summary.live is not None and summary.live.export is not None
                self._export_outcome(summary.live.export)
                write_summary(self.opt.out_dir, summary)
        assert summary is not None
        return summary

    async def _finish(self, wall_s: float, total_s: float, error: str | None) -> RunSummary:
        """Stop the systems under test and the services, then summarise into the store."""
        assert self.store is not None and self.recorder is not None
        assert self.observer is not None and self._services is not None
        await self.suts.stop()  # the services keep serving them while they stop
        self._record_observed()
        mqtt_stats = self.mqtt.stats() if self.mqtt else {}
        modbus_stats = self.modbus.stats() if self.modbus else {}
        await self._services.aclose()
        self.recorder.close()
        summary = build_summary(self.twin, wall_s=wall_s, mode=f"live-{self.opt.mode}",
                                run_dir=self.opt.out_dir,
                                pacing=pacing(self.pacer.stats, self.opt.speed, total_s))
        summary.live = LiveOutcome(policy=self.opt.policy, error=error, modbus=modbus_stats,
                                   mqtt=plain(mqtt_stats),
                                   faults=[fault_row(f) for f in self.faults],
                                   export=Export(influx=self.opt.influx,
                                                 error=self.export_error),
                                   lockstep=self.lockstep.stats.as_dict()
                                   if self.lockstep else None)
        self.store.write_kpis(summary.kpis)
        if self.scenario is not None:
            summary.scenario = judge(self.scenario, self.store, self.faults, self.twin.now,
                                     self.opt.out_dir, summary.kpis,
                                     economics=summary.economics)
        self.store.flush()
        summary.record_hash = data_hash(self.store)
        return summary

    def _export_outcome(self, export: Export) -> None:
        """Put the forwarder's final stats and the error that stopped it (once it has
        stopped) into ``export``."""
        if self.forwarder is None:
            return
        export.stats = str(self.forwarder.stats)
        export.error = str(self.forwarder.error) if self.forwarder.error else None


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
