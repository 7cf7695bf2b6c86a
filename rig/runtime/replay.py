"""Replay: reproduce a recorded run offline from its manifest and its command log.

A run records every external write (Modbus, MQTT, watchdog fallbacks) with the simulated
time it was applied. Replaying rebuilds the same twin (site, seed, start, scenario
faults, rig points and heartbeats), applies each write at its simulated time and records
at the same period, so the recorded samples and commands come out identical.
The twin comes from `rig.build.build_plan`, as the live run's did. `rig.record.datahash`
is what is compared: the point table, every sample of every plant point (the rig's own
run-time statistics such as the achieved speed excluded) and the commands.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from rig.assess.faults import FaultContext, schedule
from rig.build import build_plan
from rig.config.scenario import Scenario
from rig.present.summary import ReplayCheck, RunSummary, build_summary, write_summary
from rig.record.datahash import data_hash
from rig.record.recorder import Recorder
from rig.record.store import RunStore
from twin.errors import ConfigError, RunError
from twin.site import Site


def replay(run_dir: Path, out_dir: Path) -> RunSummary:
    """Replay the run in ``run_dir`` offline into ``out_dir``; returns the summary with
    ``record_hash`` and its `ReplayCheck` against the original."""
    if out_dir.resolve() == Path(run_dir).resolve():
        raise ConfigError(f"--out {out_dir}: the replay would overwrite the run it replays; "
                          "give another folder")
    original = RunStore.open(run_dir)
    m = original.manifest
    if m.get("mode") == "offline":
        original.close()
        raise RunError(f"{run_dir}: an offline run; replay reproduces live runs from their "
                       "command log (the same 'heatrig sim' again reproduces an offline run)")
    try:
        site = Site.model_validate(m["site_config"])
        start = datetime.fromisoformat(m["start"])
        seed = int(m["seed"])
    except (KeyError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        original.close()
        raise RunError(f"{run_dir}: its manifest cannot be replayed by this version of "
                       f"heatrig ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    twin = build_plan(site, seed=seed, start=start).twin
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
