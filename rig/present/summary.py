"""The run summary (`RunSummary`, written as ``summary.json``) and its KPI table.

``summary.json`` is `RunSummary.as_dict`: ``site``, ``seed``, ``start`` (ISO 8601),
``duration_s``, ``mode``, ``kpis`` (name -> value in the unit of `twin.kpis.REGISTRY`),
``energy_balance`` (J, residual fraction of IT energy), ``performance``, ``trips``,
``events``, ``run_dir``, ``record_hash``, ``economics`` (`twin.economics.BusinessCase.as_dict`:
``currency``, ``figures``, ``units``, ``sensitivity``); a live run adds ``policy``, ``error``,
``modbus``, ``mqtt``, ``faults`` and ``export``, a scenario ``scenario``, ``verdicts``,
``passed`` and ``reports``, a replay ``replay_of``, ``original_hash`` and ``identical``.
"""

from __future__ import annotations

import json
import resource
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rig.assess.expect import Verdict
from rig.record.credentials import redact_url
from twin.economics import REGISTRY as ECONOMICS
from twin.economics import BusinessCase
from twin.kpis import REGISTRY, Kpis
from twin.plant import Twin


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass(slots=True)
class EnergyBalance:
    """The site energy balance of a run: energies in J, residual over IT energy (-)."""

    inputs_j: float
    outputs_j: float
    stored_change_j: float
    residual_j: float
    residual_fraction: float

    def as_dict(self) -> dict[str, float]:
        """``energy_balance`` of ``summary.json``."""
        return asdict(self)


@dataclass(slots=True)
class Pacing:
    """How a live run kept time: lateness of slices (ms), slice counts, the requested speed
    (simulated s per wall s) and the wall time of the whole run with start-up (s)."""

    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    slices: int
    behind_slices: int
    skipped_slices: int
    speed_requested: float
    total_wall_s: float


@dataclass(slots=True)
class Performance:
    """Simulated and wall time of the loop (s), their ratio, peak memory (MB); an offline
    run adds its start-up time (s), a live run its `Pacing`."""

    sim_s: float
    wall_s: float
    realtime_factor: float
    peak_rss_mb: float
    startup_s: float | None = None
    pacing: Pacing | None = None

    def as_dict(self) -> dict[str, float]:
        """``performance`` of ``summary.json`` (one flat mapping)."""
        out: dict[str, float] = {"sim_s": self.sim_s, "wall_s": self.wall_s,
                                 "realtime_factor": self.realtime_factor,
                                 "peak_rss_mb": self.peak_rss_mb}
        if self.startup_s is not None:
            out["startup_s"] = self.startup_s
        if self.pacing is not None:
            out.update(asdict(self.pacing))
        return out


@dataclass(slots=True)
class Export:
    """InfluxDB forwarding of a live run: the URL (None: not forwarded), the error that
    stopped it (None: none) and the forwarder's final statistics."""

    influx: str | None
    error: str | None
    stats: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """``export`` of ``summary.json``."""
        influx = redact_url(self.influx) if self.influx else self.influx
        out: dict[str, Any] = {"influx": influx, "error": self.error}
        if self.stats is not None:
            out["stats"] = self.stats
        return out


@dataclass(frozen=True, slots=True)
class FaultRow:
    """A scheduled fault of a run: its id, kind and target, its onset and clear time (s;
    None when it did not start / was not cleared) and the error that kept it from
    applying (None: none)."""

    id: str
    kind: str
    target: str
    onset_s: float | None
    end_s: float | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """One entry of ``faults`` in ``summary.json``."""
        return asdict(self)


@dataclass(slots=True)
class LiveOutcome:
    """What a live run adds: its policy, the error that ended it (None: none), protocol
    statistics, its faults and the export."""

    policy: str
    error: str | None
    modbus: dict[str, Any]
    mqtt: dict[str, Any]
    faults: list[FaultRow]
    export: Export | None = None
    lockstep: dict[str, Any] | None = None  # what a lockstep run waited for

    def as_dict(self) -> dict[str, Any]:
        """The live keys of ``summary.json``."""
        out = {"policy": self.policy, "error": self.error, "modbus": self.modbus,
               "mqtt": self.mqtt, "faults": [f.as_dict() for f in self.faults]}
        if self.lockstep is not None:
            out["lockstep"] = self.lockstep
        if self.export is not None:
            out["export"] = self.export.as_dict()
        return out


@dataclass(slots=True)
class ScenarioOutcome:
    """The verdicts of a scenario run and the paths of its reports."""

    scenario: str
    verdicts: list[Verdict]
    reports: dict[str, str]

    @property
    def passed(self) -> bool:
        """True when every verdict passed."""
        return all(v.passed for v in self.verdicts)

    def as_dict(self) -> dict[str, Any]:
        """The scenario keys of ``summary.json``."""
        return {"scenario": self.scenario, "verdicts": [v.as_dict() for v in self.verdicts],
                "passed": self.passed, "reports": self.reports}


@dataclass(slots=True)
class ReplayCheck:
    """A replay: the run it replays and whether its record hash equals the original's."""

    replay_of: str
    original_hash: str
    identical: bool

    def as_dict(self) -> dict[str, Any]:
        """The replay keys of ``summary.json``."""
        return asdict(self)


@dataclass(slots=True)
class RunSummary:
    """A finished run: what ran, its KPIs, energy balance and performance (see the module
    docstring for ``summary.json``)."""

    site: str
    seed: int
    start: datetime
    duration_s: float
    mode: str
    kpis: Kpis
    energy_balance: EnergyBalance
    performance: Performance
    trips: dict[str, int]
    events: int
    run_dir: str
    record_hash: str | None = None
    economics: BusinessCase | None = None
    live: LiveOutcome | None = None
    scenario: ScenarioOutcome | None = None
    replay: ReplayCheck | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``summary.json``."""
        out: dict[str, Any] = {
            "site": self.site, "seed": self.seed, "start": self.start.isoformat(),
            "duration_s": self.duration_s, "mode": self.mode, "kpis": self.kpis.as_dict(),
            "energy_balance": self.energy_balance.as_dict(),
            "performance": self.performance.as_dict(), "trips": dict(self.trips),
            "events": self.events, "run_dir": self.run_dir}
        if self.record_hash is not None:
            out["record_hash"] = self.record_hash
        if self.economics is not None:
            out["economics"] = self.economics.as_dict()
        for part in (self.live, self.scenario, self.replay):
            if part is not None:
                out.update(part.as_dict())
        return out

    def to_json(self) -> str:
        """``summary.json`` text: sorted keys, two-space indent, a final newline."""
        return json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n"


def build_summary(twin: Twin, *, wall_s: float, mode: str, run_dir: str | Path,
                  startup_s: float | None = None, pacing: Pacing | None = None) -> RunSummary:
    """Summary of a finished run: KPIs, energy balance and performance (``wall_s`` and
    ``startup_s`` in s)."""
    sim_s = twin.now
    performance = Performance(sim_s=sim_s, wall_s=wall_s,
                              realtime_factor=sim_s / wall_s if wall_s > 0 else 0.0,
                              peak_rss_mb=peak_rss_mb(), startup_s=startup_s, pacing=pacing)
    return RunSummary(
        site=twin.site.name, seed=twin.seed, start=twin.calendar.start, duration_s=sim_s,
        mode=mode, kpis=twin.kpis(), energy_balance=EnergyBalance(**twin.energy_balance()),
        performance=performance, trips={hp.name: hp.trip_count for hp in twin.heat_pumps},
        events=len(twin.events), run_dir=str(run_dir),
        economics=twin.business_case() if twin.meters.time > 0 else None)


def write_summary(run_dir: Path, summary: RunSummary) -> Path:
    """Write ``summary.json`` atomically into the run directory."""
    path = run_dir / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(summary.to_json())
    tmp.replace(path)
    return path


def _number(value: float) -> str:
    return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"


def unit_shown(unit: str) -> str:
    """A unit as tables show it: ``-`` for a ratio (``1``)."""
    return "-" if unit in ("", "1") else unit


def kpi_table(summary: RunSummary) -> str:
    """The KPIs of a summary (those `twin.kpis.REGISTRY` puts in the summary) and the run's
    balance and speed as an aligned text table."""
    k = summary.kpis
    rows = [(spec.label, _number(k[name]), unit_shown(spec.unit))
            for name, spec in REGISTRY.items() if spec.summary and name in k]
    rows.append(("energy balance residual / IT energy",
                 f"{summary.energy_balance.residual_fraction:.2e}", "-"))
    p = summary.performance
    rows.append(("real-time factor", f"{p.realtime_factor:,.0f}", "x"))
    rows.append(("wall time", f"{p.wall_s:.1f}", "s"))
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    return "\n".join(f"{label:<{width}}  {value:>{vwidth}} {unit}" for label, value, unit in rows)


def _figure(value: float, unit: str) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return "never" if unit == "a" else "-"
    if unit == "1" and abs(value) < 1:
        return f"{value:.3f}"
    return _number(value)


def economics_table(summary: RunSummary) -> str:
    """The business case of a summary (`twin.economics.REGISTRY`, annualised from the run)
    as an aligned text table; empty when the summary has none."""
    case = summary.economics
    if case is None:
        return ""
    rows = [(spec.label, _figure(case.values[name], spec.unit), unit_shown(case.unit(name)))
            for name, spec in ECONOMICS.items() if name in case.values]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    span = summary.duration_s
    shown = (f"{span / 60:.3g} min" if span < 7200 else f"{span / 3600:.3g} h"
             if span < 172800 else f"{span / 86400:.4g} d")
    head = f"economics (annualised from {shown}, {case.currency})"
    return "\n".join([head] + [f"{label:<{width}}  {value:>{vwidth}} {unit}"
                               for label, value, unit in rows])
