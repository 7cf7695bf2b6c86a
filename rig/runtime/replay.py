"""Replay: reproduce a recorded run offline from its manifest and its command log.

A run records every external write (Modbus, MQTT, watchdog fallbacks) with the simulated
time it was applied. Replaying rebuilds the same twin (site, seed, start, scenario
faults, rig points and heartbeats), applies each write at its simulated time and records
at the same period, so the recorded samples and commands come out identical.
`data_hash` is what is compared: the point table, every sample of every plant point
(the rig's own run-time statistics such as the achieved speed excluded) and the commands.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from rig.assess.faults import FaultContext, schedule
from rig.present.summary import ReplayCheck, RunSummary, build_summary, write_summary
from rig.record.recorder import Recorder
from rig.record.store import RunStore
from rig.runtime.watchdog import add_heartbeats
from twin.errors import RunError
from twin.plant import Twin
from twin.points import Command, DType, Kind, Point
from twin.site import Site

RIG_DEVICE = "rig"


def add_rig_points(twin: Twin, speed: Any, step: Command,
                   comm_lost: Any = lambda: 0.0, watchdog_trips: Any = lambda: 0.0) -> None:
    """The rig's own points: simulated time, achieved speed, watchdog state and the
    stepped-mode request.

    ``speed``, ``comm_lost`` and ``watchdog_trips`` are zero-argument callables returning
    the achieved speed (-), the devices in communication loss now and the trips so far.
    """
    pts = twin.points
    pts.add(Point("rig.sim_time", RIG_DEVICE, Kind.STATUS, DType.FLOAT, "s", 0, 1e9,
                  "simulated time since the start of the run", lambda: twin.now))
    pts.add(Point("rig.speed", RIG_DEVICE, Kind.STATUS, DType.FLOAT, "1", 0, 1e5,
                  "achieved speed (simulated seconds per wall second)", speed))
    pts.add(Point("rig.comm_lost", RIG_DEVICE, Kind.STATUS, DType.INT, "1", 0, 1000,
                  "devices whose controller heartbeat is lost now", comm_lost))
    pts.add(Point("rig.watchdog_trips", RIG_DEVICE, Kind.STATUS, DType.INT, "1", 0, 1e6,
                  "communication-loss watchdog trips so far", watchdog_trips))

    def request_step(value: float) -> None:
        step.hand_value += value

    pts.add(Point("rig.step", RIG_DEVICE, Kind.COMMAND, DType.FLOAT, "s", 0, 86_400,
                  "stepped mode: advance simulated time by this much (s)",
                  lambda: step.hand_value, request_step))


def controlled_devices(twin: Twin) -> list[str]:
    """Devices with writable points (those that get a heartbeat and a watchdog)."""
    return [d for d in twin.points.devices() if d != RIG_DEVICE and any(
        p.writable for p in twin.points.of_device(d))]


def data_hash(store: RunStore) -> str:
    """SHA-256 of the recorded plant data: point ids, samples and commands."""
    keep = [i for i, pid in enumerate(store.point_ids) if not pid.startswith("rig.")]
    h = hashlib.sha256()
    h.update("\n".join(store.point_ids[i] for i in keep).encode())
    for t, measured, truth in store.samples():
        h.update(struct.pack("<d", t) + measured[keep].tobytes() + truth[keep].tobytes())
    for c in store.commands():
        if not c.point.startswith("rig."):
            h.update(json.dumps([c.t, c.point, c.value, c.source]).encode())
    return h.hexdigest()


def replay(run_dir: Path, out_dir: Path) -> RunSummary:
    """Replay the run in ``run_dir`` offline into ``out_dir``; returns the summary with
    ``record_hash`` and its `ReplayCheck` against the original."""
    from datetime import datetime

    from rig.config.scenario import Scenario

    original = RunStore.open(run_dir)
    m = original.manifest
    site = Site.model_validate(m["site_config"])
    start = datetime.fromisoformat(m["start"])
    twin = Twin(site, seed=int(m["seed"]), start=start)
    add_rig_points(twin, lambda: 0.0, Command(0.0, 0.0, hand=True))
    add_heartbeats(twin.points, controlled_devices(twin), clock=twin)
    if twin.points.ids() != original.point_ids:
        raise RunError(f"{run_dir}: the point table of the replay differs from the "
                         "recording (made by another version of heatrig?)")
    scenario = m.get("scenario_config")
    if scenario:
        schedule(FaultContext(twin), list(Scenario.model_validate(scenario).faults))
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {**m, "mode": "replay", "replay_of": str(run_dir)}
    store = RunStore.create(out_dir, manifest, original.points)
    recorder = Recorder(twin, store, float(m["record_period_s"]))
    end = original.last_sample_time() or 0.0
    commands = original.commands()
    original_hash = data_hash(original)
    original.close()
    import time
    t0 = time.perf_counter()
    for c in commands:
        twin.run_until(c.t)
        if not c.point.startswith("rig."):
            twin.write(c.point, c.value, c.source)
        recorder.record_command(c.t, c.point, c.value, c.source)
    twin.run_until(end)
    recorder.close()
    summary = build_summary(twin, wall_s=time.perf_counter() - t0, mode="replay",
                            run_dir=out_dir)
    store.write_kpis(summary.kpis)
    store.flush()
    summary.record_hash = data_hash(store)
    summary.replay = ReplayCheck(replay_of=str(run_dir), original_hash=original_hash,
                                 identical=summary.record_hash == original_hash)
    store.close()
    write_summary(out_dir, summary)
    return summary
