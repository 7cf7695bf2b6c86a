"""Grafana dashboards and provisioning: no drift from the point table, and every query of
every panel, annotation and template variable answers from a real run in real InfluxDB.

There is no Grafana here, so the test does what Grafana does with a query: substitutes
``$timeFilter``, ``$__interval`` and the template variables (escaped and as ``(a|b)`` inside
regex literals), sends it to InfluxDB and reads the series.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter
from servers import InfluxDB1, unique_name

from rig.assess import faults as rf
from rig.build import add_live_points, build_plan
from rig.config.sites import load_site
from rig.present.grafana import (
    DASHBOARD_DIR,
    DATASOURCE_UID,
    DEFAULT_SITE,
    check,
    main,
)
from rig.record.influx import InfluxTarget, export_run
from rig.record.lineprotocol import point_key
from rig.record.store import RunStore
from rig.runtime.offline import run_offline
from twin.plant import Twin

GRAFANA = Path(__file__).resolve().parents[1] / "grafana"
INTERVAL = "60s"
NAMES = ("overview", "racks-cdus", "heat-pumps", "district", "test-campaign")
FAULTS = [
    {"id": "cdu_leak", "kind": "leak", "target": "cdu2", "at": "15 min", "rate": "0.5 kg/s",
     "duration": "30 min"},
    {"id": "rack_leak", "kind": "leak", "target": "cdu1.rack03", "at": "20 min",
     "rate": "0.2 kg/s", "duration": "20 min"},
    {"id": "hp_trip", "kind": "compressor_trip", "target": "hp1", "at": "40 min"},
    {"id": "dropout", "kind": "sensor_dropout", "target": "district.supply_temp",
     "at": "60 min", "duration": "5 min"},
]


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARD_DIR / f"{name}.json").read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, InfluxQL) of every panel target and annotation query."""
    for p in panels(dashboard):
        for t in p.get("targets", []):
            yield f"panel {p['title']!r} {t['refId']}", t["query"]
    for a in dashboard["annotations"]["list"]:
        if "query" in a:
            yield f"annotation {a['name']!r}", a["query"]


# --------------------------------------------------------------------------- (a) no drift


def test_checked_in_dashboards_match_the_point_table(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    assert sorted(p.stem for p in DASHBOARD_DIR.glob("*.json")) == sorted(NAMES)
    assert check() == []
    assert main(["--check"]) == 0
    out = tmp_path / "dashboards"
    assert main(["--out", str(out)]) == 0
    for name in NAMES:
        assert (out / f"{name}.json").read_bytes() == (DASHBOARD_DIR / f"{name}.json").read_bytes()
    # drift: an edited, a missing and a stray file are all reported, exit 1
    (out / "district.json").write_text((out / "district.json").read_text().replace(
        "tank_soc", "tank_charge"))
    (out / "overview.json").unlink()
    shutil.copy(out / "heat-pumps.json", out / "old.json")
    capsys.readouterr()
    assert main(["--check", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "district.json: differs" in err and "overview.json: missing" in err
    assert "old.json: not generated" in err


def test_dashboard_structure() -> None:
    for name in NAMES:
        d = load(name)
        assert d["uid"] == f"heatrig-{name}" and d["schemaVersion"] == 39
        names = [v["name"] for v in d["templating"]["list"]]
        assert {"datasource", "run", "site"} <= set(names), name
        ds = d["templating"]["list"][0]
        assert ds["type"] == "datasource" and ds["current"]["value"] == DATASOURCE_UID
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids)), name
        for p in panels(d):
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, (name, p["title"])
            if p["type"] == "row":
                continue
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}"
            for t in p["targets"]:
                assert t["rawQuery"] is True
        for where, q in queries(d):
            assert '"run" =~ /^$run$/' in q and '"site" =~ /^$site$/' in q, (name, where)
            if 'FROM "kpis"' not in q:  # final KPIs belong to the run, not a time range
                assert "$timeFilter" in q, (name, where)
            if "GROUP BY time(" in q:
                assert "GROUP BY time($__interval)" in q and q.endswith("fill(null)"), where


# --------------------------------------------------------------------------- a real run


@dataclass
class Recorded:
    """A real run exported to the InfluxDB fixture."""

    influx: InfluxDB1
    db: str
    start_ms: int
    end_ms: int

    def query(self, q: str) -> list[dict[str, Any]]:
        """Series of a query (raises on any error)."""
        res = self.influx.query(q, db=self.db, epoch="ms")
        return [s for r in res["results"] for s in r.get("series", [])]


@pytest.fixture(scope="module")
def recorded(influxdb: InfluxDB1, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    run_dir = tmp_path_factory.mktemp("grafana") / "run"
    specs = TypeAdapter(list[rf.FaultSpec]).validate_python(FAULTS)

    def prepare(tw: Twin) -> None:  # record the point table of a live run, with faults
        add_live_points(tw)
        rf.schedule(rf.FaultContext(tw), specs)

    run_offline(load_site(DEFAULT_SITE), duration_s=2 * 3600, out_dir=run_dir, seed=7,
                record_period_s=20, progress=False, prepare=prepare)
    with RunStore.open(run_dir, readonly=False) as store:
        store.write_verdict("leak_alarm_published", "pass", {"t": 930.0}, t=960.0)
        store.write_verdict("hp1_restarted", "fail", {"reason": "latched trip"}, t=3000.0)
        store.write_verdict("kpi_erf", "error", {"message": "no kpis yet"})
        origin, last_t = store.time_origin_ns, store.last_sample_time()
    db = unique_name("grafana")
    influxdb.create_database(db)
    stats = export_run(run_dir, InfluxTarget.from_url(f"{influxdb.url}?db={db}", env={}))
    assert stats.error is None and stats.pending_samples == 0
    assert last_t == 2 * 3600
    return Recorded(influxdb, db, origin // 1_000_000,
                    (origin + round(last_t * 1e9)) // 1_000_000 + 1)


_REGEX_LITERAL = re.compile(r"/(?:[^/\\\n]|\\.)*/")
_REGEX_META = re.compile(r"([\\.^$*+?()\[\]{}|/])")


def interpolate(query: str, variables: dict[str, list[str]], run: Recorded,
                every_value: bool = False) -> str:
    """Grafana's substitution: time filter, interval, variables (the first value, or with
    ``every_value`` all of them; regex-escaped and ``(a|b)`` inside regex literals)."""
    query = query.replace("$timeFilter", f"time >= {run.start_ms}ms and time <= {run.end_ms}ms")
    query = query.replace("$__interval", INTERVAL)

    def sub(text: str, regex: bool) -> str:
        for name in sorted(variables, key=len, reverse=True):
            values = variables[name] if every_value else variables[name][:1]
            if regex:
                escaped = [_REGEX_META.sub(r"\\\1", v) for v in values]
                value = escaped[0] if len(escaped) == 1 else f"({'|'.join(escaped)})"
            else:
                value = values[0]
            text = text.replace("${" + name + "}", value).replace("$" + name, value)
        return text

    out, pos = [], 0
    for m in _REGEX_LITERAL.finditer(query):
        out += [sub(query[pos:m.start()], False), sub(m.group(), True)]
        pos = m.end()
    return "".join([*out, sub(query[pos:], False)])


def resolve_variables(dashboard: dict[str, Any], run: Recorded) -> dict[str, list[str]]:
    """Every variable's values as Grafana would list them, in dashboard order."""
    values: dict[str, list[str]] = {}
    for v in dashboard["templating"]["list"]:
        if v["type"] == "custom":
            values[v["name"]] = [o.split(" : ")[-1].strip() for o in v["query"].split(",")]
        elif v["type"] == "query":
            found = [val[1] for s in run.query(interpolate(v["query"], values, run))
                     for val in s["values"]]
            values[v["name"]] = list(dict.fromkeys(found))
            assert values[v["name"]], f"{dashboard['uid']}: variable {v['name']} is empty"
    return values


def test_every_query_answers_from_a_real_run(recorded: Recorded) -> None:
    empty = []
    for name in NAMES:
        d = load(name)
        variables = resolve_variables(d, recorded)
        for where, q in queries(d):
            series = recorded.query(interpolate(q, variables, recorded))
            if not any(x is not None for s in series for row in s["values"] for x in row[1:]):
                empty.append(f"{name}: {where}: {interpolate(q, variables, recorded)}")
    assert not empty, "queries without a value:\n" + "\n".join(empty)


def test_faults_and_verdicts_reach_the_campaign_dashboard(recorded: Recorded) -> None:
    d = load("test-campaign")
    variables = resolve_variables(d, recorded)
    found = {where: recorded.query(interpolate(q, variables, recorded))
             for where, q in queries(d)}
    faults = found["annotation 'Faults'"][0]
    assert {row[1] for row in faults["values"]} >= {
        "cdu_leak onset: leak rate=0.5", "hp_trip onset: compressor_trip", "cdu_leak cleared"}
    verdicts = found["panel 'Verdicts (latest per expectation)' A"]
    assert {s["tags"]["name"]: s["values"][0][1] for s in verdicts} == {
        "leak_alarm_published": "leak_alarm_published: pass",
        "hp1_restarted": "hp1_restarted: fail", "kpi_erf": "kpi_erf: error"}
    alarms = found["panel 'Alarms (1 = active on any device of the class)' D"]
    trip = next(s for s in alarms if s["tags"]["point"] == "trip.compressor")
    assert max(v[1] for v in trip["values"] if v[1] is not None) == 1.0


# --------------------------------------------------------------------------- (c) coverage

_FROM = re.compile(r'FROM "(\w+)"')
_COND = {tag: re.compile(rf"\"{tag}\" (=~|=) (/(?:[^/\\]|\\.)*/|'[^']*')")
         for tag in ("point", "device")}


def _matcher(segment: str, tag: str) -> re.Pattern[str] | None:
    m = _COND[tag].search(segment)
    if m is None:
        return None
    op, value = m.groups()
    return re.compile(value[1:-1] if op == "=~" else f"^{re.escape(value[1:-1])}$")


def test_every_measurement_and_point_is_on_a_panel(recorded: Recorded) -> None:
    segments: list[tuple[str, re.Pattern[str] | None, re.Pattern[str] | None, str]] = []
    for name in NAMES:
        d = load(name)
        variables = resolve_variables(d, recorded)
        for _, q in queries(d):
            full = interpolate(q, variables, recorded, every_value=True)
            for seg in re.split(r"(?=\bSELECT\b)", full):
                m = _FROM.search(seg)
                if m:
                    segments.append((m[1], _matcher(seg, "point"), _matcher(seg, "device"), seg))
    measurements = {s[0] for s in segments}
    recorded_ms = [v[0] for s in recorded.query("SHOW MEASUREMENTS") for v in s["values"]]
    assert set(recorded_ms) == {"air", "cdu", "dry_cooler", "district", "events", "facility",
                                "heat_pump", "kpis", "rack", "rig", "site", "verdicts"}
    assert set(recorded_ms) <= measurements
    missing = []
    for p in build_plan(load_site(DEFAULT_SITE)).twin.points:
        m, device, point = point_key(p.id)
        if not any(seg_m == m and (pm is None or pm.search(point))
                   and (dm is None or dm.search(device)) for seg_m, pm, dm, _ in segments):
            missing.append(p.id)
    assert not missing, f"points on no panel: {missing}"
    kpi_text = " ".join(seg for m, _, _, seg in segments if m == "kpis")
    fields = [v[0] for s in recorded.query('SHOW FIELD KEYS FROM "kpis"') for v in s["values"]]
    assert fields and all(f'"{f}"' in kpi_text for f in fields)


# --------------------------------------------------------------------------- (d) provisioning

_ENV_REF = re.compile(r"^\$(\{[A-Z][A-Z0-9_]*\}|[A-Z][A-Z0-9_]*)$")
_SECRET_KEY = re.compile(r"password|token|secret|httpheadervalue|apikey", re.I)


def _strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, str(k))
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, key)
    elif isinstance(node, str):
        yield key, node


def test_provisioning_parses_and_holds_no_secrets() -> None:
    prov = GRAFANA / "provisioning"
    ds_file = yaml.safe_load((prov / "datasources" / "influxdb.yaml").read_text())
    assert ds_file["apiVersion"] == 1
    [ds] = ds_file["datasources"]
    assert ds["type"] == "influxdb" and ds["uid"] == DATASOURCE_UID
    assert ds["jsonData"]["version"] == "InfluxQL"
    for value in (ds["url"], ds["user"], ds["jsonData"]["dbName"],
                  ds["secureJsonData"]["password"]):
        assert _ENV_REF.match(value), value
    for path in [*prov.rglob("*.yaml"), GRAFANA / "docker-compose.yml"]:
        for key, value in _strings(yaml.safe_load(path.read_text())):
            if _SECRET_KEY.search(key):
                assert _ENV_REF.match(value) or value.startswith("${"), (path, key, value)
    env_used = {m for _, v in _strings(ds_file) for m in re.findall(r"\$\{?([A-Z]\w*)", v)}
    assert env_used == {"INFLUX_URL", "INFLUX_DB", "INFLUX_USER", "INFLUX_PASSWORD"}

    [provider] = yaml.safe_load((prov / "dashboards" / "heatrig.yaml").read_text())["providers"]
    assert provider["type"] == "file"
    dash_path = provider["options"]["path"]

    compose = yaml.safe_load((GRAFANA / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"influxdb", "grafana", "mosquitto"}
    for name, svc in services.items():
        assert svc["ports"], name
        for port in svc["ports"]:
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert services["influxdb"]["image"].startswith("influxdb:1.8")
    assert services["influxdb"]["environment"]["INFLUXDB_DB"]
    grafana = services["grafana"]
    assert env_used <= set(grafana["environment"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts[dash_path] == "./dashboards"
    assert mounts["/etc/grafana/provisioning/datasources"] == "./provisioning/datasources"
    # every variable compose needs is in the example .env, with a placeholder value
    example = dict(line.split("=", 1) for line in (GRAFANA / ".env.example").read_text()
                   .splitlines() if line and not line.startswith("#"))
    needed = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (GRAFANA / "docker-compose.yml")
                            .read_text()))
    assert needed <= set(example)
    assert all(v.startswith("change-me") for k, v in example.items() if "PASSWORD" in k)
    assert ".env" in (GRAFANA / ".gitignore").read_text().split()
