"""Run directories for the ``runs`` and ``show`` commands: listing, text view, size."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from rig.record.reader import StoreReader
from rig.record.schema import STORE_FILE, dump_json
from twin.errors import RunStoreError
from twin.kpis import REGISTRY

log = logging.getLogger(__name__)


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run directory directly under ``root`` (or ``root`` itself), oldest first."""
    root = Path(root)
    dirs = [root] if (root / STORE_FILE).is_file() else sorted(
        p.parent for p in root.glob(f"*/{STORE_FILE}"))
    runs = []
    for run_dir in dirs:
        try:
            with StoreReader.open(run_dir) as store:
                runs.append(store.summary())
        except (RunStoreError, sqlite3.Error) as exc:
            log.warning("%s: skipped: %s", run_dir, exc)
    return sorted(runs, key=lambda r: (r["wall_start"] or "", r["run_dir"]))


def _kpi_unit(name: str) -> str:
    """The unit `show` prints after a KPI (none for a ratio or a KPI of another version)."""
    spec = REGISTRY.get(name)
    return "" if spec is None or spec.unit == "1" else spec.unit


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def show(run_dir: str | Path) -> str:
    """A run's manifest highlights, KPIs and verdicts as text."""
    with StoreReader.open(run_dir) as store:
        s = store.summary()
        kpis = store.kpis()
        verdicts = store.verdicts()
    end = f"{s['sim_end_s']:,.0f} s" if s["sim_end_s"] is not None else "-"
    lines = [
        f"run       {s['run_id']}  ({s['run_dir']})",
        f"site      {s['site'] or '-'}   scenario {s['scenario'] or '-'}   "
        f"seed {s['seed']}   mode {s['mode'] or '-'}",
        f"wall      {s['wall_start']} -> {s['wall_end'] or 'not closed (crashed or running)'}",
        f"recorded  {s['samples']} samples up to t = {end}, {s['events']} events, "
        f"{s['commands']} commands",
    ]
    if kpis:
        lines.append("KPIs")
        names = [k for k in REGISTRY if k in kpis] + [k for k in kpis if k not in REGISTRY]
        width = max(len(k) for k in names)
        lines += [f"  {k:<{width}}  {_fmt(kpis[k])} {_kpi_unit(k)}".rstrip() for k in names]
    else:
        lines.append("KPIs      none recorded")
    if verdicts:
        lines.append(f"verdicts  {len(verdicts)}, {s['failed']} not passed")
        width = max(len(v.name) for v in verdicts)
        for v in verdicts:
            evidence = v.evidence if isinstance(v.evidence, str) else dump_json(v.evidence)
            if len(evidence) > 100:
                evidence = evidence[:97] + "..."
            lines.append(f"  {v.verdict.upper():<6} {v.name:<{width}}  {evidence}")
    else:
        lines.append("verdicts  none recorded")
    return "\n".join(lines)


def describe_size(run_dir: str | Path) -> int:
    """Bytes on disk of a run store (the file plus its WAL and shared memory)."""
    run_dir = Path(run_dir)
    return sum(p.stat().st_size for p in run_dir.glob(STORE_FILE + "*") if p.is_file())
