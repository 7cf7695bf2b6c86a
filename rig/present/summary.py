"""The run summary (`summary.json`) and its KPI table."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

from twin.plant import Twin

SUMMARY_KPIS = (
    ("pue", "PUE", "-"), ("erf", "ERF", "-"), ("ere", "ERE", "-"),
    ("cop", "heat-pump COP (run)", "-"), ("carnot_cop", "Carnot COP (run, weighted)", "-"),
    ("heat_recovered_kwh", "heat recovered (condensers)", "kWh"),
    ("heat_reused_kwh", "heat reused (evaporators)", "kWh"),
    ("heat_rejected_kwh", "heat rejected (dry coolers)", "kWh"),
    ("heat_delivered_kwh", "heat delivered to the network", "kWh"),
    ("demand_kwh", "district demand", "kWh"),
    ("unmet_demand_kwh", "unmet district demand", "kWh"),
    ("boiler_heat_kwh", "peak boiler heat", "kWh"),
    ("it_energy_kwh", "IT energy", "kWh"),
    ("facility_energy_kwh", "data-center energy (IT and cooling)", "kWh"),
    ("compressor_energy_kwh", "heat-pump compressor energy", "kWh"),
    ("co2_avoided_kg", "CO2 avoided", "kg"),
    ("air_outside_recommended_h", "air inlet outside ASHRAE recommended", "h"),
    ("water_outside_class_h", "facility water above its W class", "h"),
)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_summary(twin: Twin, *, wall_s: float, extra_performance: dict[str, float] | None
                  = None, **fields: Any) -> dict[str, Any]:
    """Summary of a finished run: KPIs, energy balance and performance."""
    sim_s = twin.now
    performance = {
        "sim_s": sim_s,
        "wall_s": wall_s,
        "realtime_factor": sim_s / wall_s if wall_s > 0 else 0.0,
        "peak_rss_mb": peak_rss_mb(),
    }
    performance.update(extra_performance or {})
    return {
        **fields,
        "site": twin.site.name,
        "seed": twin.seed,
        "start": twin.calendar.start.isoformat(),
        "duration_s": sim_s,
        "kpis": twin.kpis(),
        "energy_balance": twin.energy_balance(),
        "performance": performance,
        "trips": {hp.name: hp.trip_count for hp in twin.heat_pumps},
        "events": len(twin.events),
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` atomically into the run directory."""
    path = run_dir / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def kpi_table(summary: dict[str, Any]) -> str:
    """The KPIs of a summary as an aligned text table."""
    k = summary["kpis"]
    rows = [(label, f"{k[key]:,.3f}" if abs(k[key]) < 100 else f"{k[key]:,.0f}", unit)
            for key, label, unit in SUMMARY_KPIS if key in k]
    b = summary["energy_balance"]["residual_fraction"]
    rows.append(("energy balance residual / IT energy", f"{b:.2e}", "-"))
    p = summary["performance"]
    rows.append(("real-time factor", f"{p['realtime_factor']:,.0f}", "x"))
    rows.append(("wall time", f"{p['wall_s']:.1f}", "s"))
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    return "\n".join(f"{label:<{width}}  {value:>{vwidth}} {unit}" for label, value, unit in rows)
