"""The KPI registry is the one source of KPI names, units and descriptions, and the run
summary keeps the shape of ``summary.json``."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_expect import POINTS, check

import twin.kpis as kpi_module
from rig.assess.expect import DIMENSIONLESS_UNITS, UNIT_DIMENSION, Verdict, kpi_unit
from rig.present.grafana import GRAFANA_UNIT, dashboards
from rig.present.report import report_html
from rig.present.summary import (
    EnergyBalance,
    Export,
    FaultRow,
    LiveOutcome,
    Pacing,
    Performance,
    ReplayCheck,
    RunSummary,
    ScenarioOutcome,
    build_summary,
    kpi_table,
)
from rig.record.store import STORE_FILE, RunStore, show
from rig.runtime.offline import run_offline
from twin.kpis import J_PER_KWH, REGISTRY, Kpis, Meters, kpis
from twin.plant import Twin
from twin.site import Site

GOLDEN_KEYS = Path(__file__).parent / "golden" / "summary-keys.json"


@pytest.fixture(scope="module")
def short_run() -> Twin:
    twin = Twin(Site(name="reference-1mw"))
    twin.run_until(120.0)
    return twin


def key_paths(data: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every key of nested mappings."""
    out = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        out.append(path)
        if isinstance(value, dict):
            out += key_paths(value, path)
    return out


# --------------------------------------------------------------------------- registry


def test_the_twin_computes_exactly_the_registered_kpis(short_run: Twin) -> None:
    assert list(short_run.kpis()) == list(REGISTRY)
    assert {n: short_run.kpi(n) for n in REGISTRY} == short_run.kpis().as_dict()
    assert short_run.read("site.pue") == short_run.kpi("pue") > 1.0
    assert list(kpis(Meters(), 0.0, 0.0, 1.0)) == list(REGISTRY)
    for name, spec in REGISTRY.items():
        assert spec.name == name
        assert spec.label and spec.title and spec.description, name
        assert spec.unit in GRAFANA_UNIT, name  # the dashboards can show it
        assert spec.unit in DIMENSIONLESS_UNITS or spec.unit in UNIT_DIMENSION, name


def test_kpis_follow_their_definitions() -> None:
    kwh = J_PER_KWH
    m = Meters(it=1000 * kwh, cdu_pumps=20 * kwh, facility_pumps=30 * kwh, crah_fans=10 * kwh,
               dry_cooler_fans=40 * kwh, compressors=100 * kwh, condensers=400 * kwh,
               evaporators=300 * kwh, carnot_weighted=700 * kwh, rejected=50 * kwh,
               boiler_heat=5 * kwh, air_outside_s=1800.0)
    k = kpis(m, emissions_electricity=0.2, emissions_fuel=0.25, boiler_efficiency=0.9)
    assert k["pue"] == pytest.approx(1100 / 1000)
    assert k["erf"] == pytest.approx(300 / 1100)
    assert k["ere"] == pytest.approx(800 / 1000)
    assert k["cop"] == pytest.approx(4.0) and k["carnot_cop"] == pytest.approx(7.0)
    assert k["facility_energy_kwh"] == pytest.approx(1100)
    assert k["heat_rejected_kwh"] == pytest.approx(50) and k["boiler_heat_kwh"] == 5
    assert k["co2_avoided_kg"] == pytest.approx(400 / 0.9 * 0.25 - 100 * 0.2)
    assert k["air_outside_recommended_h"] == 0.5
    assert kpis(Meters(), 0.0, 0.0, 1.0)["pue"] == 0.0  # no IT energy yet: no division


def test_kpis_is_a_read_only_mapping_of_registered_names() -> None:
    k = Kpis({"erf": 0.5, "pue": 1.2})
    assert list(k) == ["pue", "erf"] and k.as_dict() == {"pue": 1.2, "erf": 0.5}
    with pytest.raises(KeyError, match="not a KPI: 'pue_typo'"):
        Kpis({"pue_typo": 1.0})


# --------------------------------------------------------------------------- one source


@pytest.fixture
def pue_in_kg(monkeypatch: pytest.MonkeyPatch) -> kpi_module.KpiSpec:
    """The registry with PUE in kg and a new label (nonsense, but visible everywhere)."""
    spec = dataclasses.replace(REGISTRY["pue"], unit="kg", label="PUE from the registry",
                               description="a description from the registry")
    monkeypatch.setitem(kpi_module._BY_NAME, "pue", spec)
    return spec


def test_kpi_table_shows_the_registry(short_run: Twin, pue_in_kg: kpi_module.KpiSpec) -> None:
    summary = build_summary(short_run, wall_s=1.0, mode="offline", run_dir="x")
    rows = {line.rsplit(" ", 1)[0].split("  ")[0]: line.rsplit(" ", 1)[1]
            for line in kpi_table(summary).splitlines()}
    assert rows["PUE from the registry"] == "kg"
    assert rows["heat recovered (condensers)"] == "kWh" and rows["ERF"] == "-"


def test_report_shows_the_registry(tmp_path: Path, pue_in_kg: kpi_module.KpiSpec) -> None:
    with RunStore.create(tmp_path / "run", {"site": "unit"}, POINTS) as store:
        text = report_html("s", [], store, [], {"pue": 1.1, "erf": 0.5, "unknown_kpi": 2.0})
    assert ('<td title="a description from the registry">PUE from the registry</td>'
            '<td class="num">1.100</td><td>kg</td>') in text
    assert "<td>ERF</td>" in text.replace(f' title="{REGISTRY["erf"].description}"', "")
    assert "<code>unknown_kpi</code>" in text  # shown by name, without a unit


def test_dashboards_show_the_registry(pue_in_kg: kpi_module.KpiSpec) -> None:
    boards = dashboards()
    panels = [p for b in boards.values() for p in b["panels"]]
    pue = next(p for p in panels if p["title"] == REGISTRY["pue"].title)
    assert pue["fieldConfig"]["defaults"]["unit"] == GRAFANA_UNIT["kg"]
    assert pue["description"].startswith("pue [kg]: a description from the registry")
    table = next(p for p in panels if p["title"] == "All KPIs of the run")
    assert '"pue [kg]"' in table["targets"][0]["query"]
    assert "pue [kg]: a description from the registry" in table["description"]


def test_kpi_expectations_convert_into_the_registry_unit(
        tmp_path: Path, pue_in_kg: kpi_module.KpiSpec) -> None:
    assert kpi_unit("pue") == "kg"
    with RunStore.create(tmp_path / "run", {"site": "unit"}, POINTS) as store:
        store.write_kpis({"pue": 1.1})
        spec = {"name": "p", "kind": "kpi", "kpi": "pue", "op": "<="}
        v = check(store, {**spec, "value": "0.0012 t"})
        wrong = check(store, {**spec, "value": "1.2 kWh"})
    assert v.verdict == "pass" and v.evidence["unit"] == "kg", v
    assert wrong.verdict == "error", wrong


def test_show_prints_the_registry_units(tmp_path: Path, pue_in_kg: kpi_module.KpiSpec) -> None:
    with RunStore.create(tmp_path / "run", {"site": "unit"}, POINTS) as store:
        store.write_kpis({"heat_reused_kwh": 1234.5, "pue": 1.1})
    lines = [line.split() for line in show(tmp_path / "run").splitlines()]
    assert ["pue", "1.100", "kg"] in lines and ["heat_reused_kwh", "1,234", "kWh"] in lines
    assert lines.index(["pue", "1.100", "kg"]) < lines.index(["heat_reused_kwh", "1,234", "kWh"])


# --------------------------------------------------------------------------- store rows


def test_a_legacy_kpi_row_reads_as_its_kpis(tmp_path: Path) -> None:
    run = tmp_path / "run"
    RunStore.create(run, {"site": "unit"}, POINTS).close()
    legacy = {"duration_s": 60.0, "kpis": {"pue": 1.2, "erf": 0.4}, "performance": {}}
    with sqlite3.connect(run / STORE_FILE) as db:
        db.execute("INSERT INTO kpis (t, json) VALUES (0, ?)", (json.dumps(legacy),))
    with RunStore.open(run) as store:
        assert store.kpis() == {"pue": 1.2, "erf": 0.4}
        assert [row[2] for row in store.kpi_rows()] == [{"pue": 1.2, "erf": 0.4}]


# --------------------------------------------------------------------------- summary


def test_offline_summary_json_keeps_its_keys(tmp_path: Path) -> None:
    summary = run_offline(Site(name="reference-1mw"), duration_s=3600.0, out_dir=tmp_path,
                          progress=False)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert sorted(key_paths(on_disk)) == json.loads(GOLDEN_KEYS.read_text())
    assert on_disk == json.loads(summary.to_json())
    assert on_disk["kpis"] == summary.kpis.as_dict() and on_disk["mode"] == "offline"
    with RunStore.open(tmp_path) as store:
        assert store.kpis() == summary.kpis.as_dict()


def test_live_scenario_and_replay_parts_keep_their_keys() -> None:
    verdict = Verdict("v", "kpi", "fail", {"value": 1.3}, "pue too high")
    summary = RunSummary(
        site="s", seed=1, start=datetime(2026, 1, 15, tzinfo=UTC), duration_s=60.0,
        mode="live-realtime", kpis=Kpis({"pue": 1.3}),
        energy_balance=EnergyBalance(1.0, 1.0, 0.0, 0.0, 0.0),
        performance=Performance(60.0, 1.0, 60.0, 50.0, pacing=Pacing(
            1.0, 2.0, 3.0, 600, 1, 0, 60.0, 2.0)),
        trips={"hp1": 0}, events=2, run_dir="runs/s", record_hash="abc",
        live=LiveOutcome("warn", None, {"requests": 3}, {"sent": 4},
                         [FaultRow("leak1", "leak", "cdu1", 600.0, None)],
                         Export("http://influx:8086", None, stats="ok")),
        scenario=ScenarioOutcome("scn", [verdict], {"html": "report.html"}),
        replay=ReplayCheck("runs/a", "abc", True))
    data = summary.as_dict()
    assert set(data) == {
        "site", "seed", "start", "duration_s", "mode", "kpis", "energy_balance",
        "performance", "trips", "events", "run_dir", "record_hash", "policy", "error",
        "modbus", "mqtt", "faults", "export", "scenario", "verdicts", "passed", "reports",
        "replay_of", "original_hash", "identical"}
    assert data["start"] == "2026-01-15T00:00:00+00:00" and data["passed"] is False
    assert data["verdicts"] == [verdict.as_dict()]
    assert data["export"] == {"influx": "http://influx:8086", "error": None, "stats": "ok"}
    assert data["faults"] == [{"id": "leak1", "kind": "leak", "target": "cdu1",
                               "onset_s": 600.0, "end_s": None, "error": None}]
    assert set(data["performance"]) == {
        "sim_s", "wall_s", "realtime_factor", "peak_rss_mb", "lateness_p50_ms",
        "lateness_p99_ms", "lateness_max_ms", "slices", "behind_slices", "skipped_slices",
        "speed_requested", "total_wall_s"}
    assert json.loads(summary.to_json()) == data
