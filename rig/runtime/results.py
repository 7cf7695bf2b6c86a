"""What a finished live run reports: pacing figures, fault rows, scenario verdicts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rig.assess.expect import evaluate
from rig.assess.faults import ScheduledFault
from rig.present.report import write_reports
from rig.present.summary import FaultRow, Pacing, ScenarioOutcome
from rig.record.store import RunStore
from rig.runtime.clock import PacerStats
from twin.economics import BusinessCase


def pacing(stats: PacerStats, speed: float, total_wall_s: float) -> Pacing:
    """Lateness of the slices (ms), slice counts, the requested speed and the wall time of
    the whole run with start-up (s)."""
    return Pacing(
        lateness_p50_ms=stats.percentile_ms(50), lateness_p99_ms=stats.percentile_ms(99),
        lateness_max_ms=stats.max_ms(), slices=len(stats.lateness),
        behind_slices=stats.behind_slices, skipped_slices=stats.skipped_slices,
        speed_requested=speed, total_wall_s=total_wall_s)


def fault_row(f: ScheduledFault) -> FaultRow:
    """A scheduled fault as the summary and the report list it."""
    spec: Any = f.spec
    return FaultRow(id=spec.id, kind=spec.kind, target=spec.target, onset_s=f.onset_s,
                    end_s=f.end_s, error=f.error)


def plain(stats: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of a statistics mapping."""
    return {k: v for k, v in stats.items() if isinstance(v, int | float | bool | str)}


def judge(scenario: Any, store: RunStore, faults: list[ScheduledFault], now: float,
          out_dir: Path, kpis: Mapping[str, float],
          economics: BusinessCase | None = None) -> ScenarioOutcome:
    """Evaluate the scenario's expectations at simulated time ``now`` (s); store the
    verdicts, write the reports; return the summary's scenario part."""
    verdicts = evaluate(scenario.expect, store, {f.spec.id: f.onset_s for f in faults}, now)
    for v in verdicts:
        store.write_verdict(v.name, v.verdict, v.evidence)
    reports = write_reports(out_dir, scenario.name, verdicts, store,
                            [fault_row(f) for f in faults], kpis, economics=economics)
    return ScenarioOutcome(scenario=scenario.name, verdicts=verdicts,
                           reports={k: str(p) for k, p in reports.items()})
