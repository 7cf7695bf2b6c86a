"""Offline runner: simulate a site as fast as possible and record it into a run directory."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rig.build import build_plan
from rig.config.defaults import DEFAULT_SEED, DEFAULT_START, OFFLINE_RECORD_PERIOD_S
from rig.present.progress import Progress
from rig.present.summary import RunSummary, build_summary, write_summary
from rig.record.recorder import Recorder
from rig.record.store import RunStore
from twin.plant import Twin
from twin.site import Site

log = logging.getLogger(__name__)


def manifest_for(site: Site, *, seed: int, start: datetime, mode: str,
                 source: str | None = None, **extra: Any) -> dict[str, Any]:
    """The manifest of a run: what was simulated, and a hash of the configuration."""
    config = site.model_dump_json()
    return {
        "site": site.name,
        "seed": seed,
        "start": start.isoformat(),
        "mode": mode,
        "source": source,
        "config_hash": hashlib.sha256(config.encode()).hexdigest(),
        "site_config": site.model_dump(mode="json"),
        **extra,
    }


def run_offline(site: Site, *, duration_s: float, out_dir: Path, seed: int = DEFAULT_SEED,
                start: datetime = DEFAULT_START,
                record_period_s: float = OFFLINE_RECORD_PERIOD_S,
                progress: bool = True, source: str | None = None,
                prepare: Callable[[Twin], None] | None = None) -> RunSummary:
    """Run ``site`` for ``duration_s`` simulated seconds; return the summary.

    ``prepare(twin)`` may schedule faults or commands before the run starts.
    """
    t_start = time.perf_counter()
    twin = build_plan(site, seed=seed, start=start, live=False).twin
    if prepare is not None:
        prepare(twin)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = manifest_for(site, seed=seed, start=start, mode="offline", source=source,
                            record_period_s=record_period_s)
    store = RunStore.create(out_dir, manifest, [p.describe() for p in twin.points])
    recorder = Recorder(twin, store, record_period_s)
    startup_s = time.perf_counter() - t_start
    bar = Progress(duration_s, site.name) if progress else None
    chunk = max(record_period_s, duration_s / 500.0)
    t_loop = time.perf_counter()
    try:
        while twin.now < duration_s:
            twin.run_until(min(duration_s, twin.now + chunk))
            if bar is not None:
                bar.update(twin.now)
    finally:
        recorder.close()
    wall_s = time.perf_counter() - t_loop
    summary = build_summary(twin, wall_s=wall_s, mode="offline", run_dir=out_dir,
                            startup_s=startup_s)
    summary.record_hash = store.content_hash()
    store.write_kpis(summary.kpis)
    store.close()
    write_summary(out_dir, summary)
    log.info("run written to %s", out_dir)
    return summary
