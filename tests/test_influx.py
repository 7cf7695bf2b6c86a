"""Line protocol and the InfluxDB forwarder against real servers: nothing lost, nothing twice."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from servers import InfluxDB1, VictoriaMetrics, free_port, unique_name

from rig.record.influx import Forwarder, InfluxTarget, checkpoint_path_for, export_run
from rig.record.lineprotocol import (
    SampleEncoder,
    escape_tag,
    event_line,
    kpi_line,
    point_key,
    string_field,
    timestamp_ns,
)
from rig.record.recorder import Recorder
from rig.record.store import RunStore
from twin.errors import ConfigError, ServiceError
from twin.plant import Twin
from twin.site import Site

SAMPLE_MEASUREMENTS = ("cdu", "rack", "heat_pump", "facility", "district", "site",
                       "dry_cooler", "air")
NO_SECRETS: dict[str, str] = {}

# --------------------------------------------------------------------------- line protocol


def test_point_keys_give_device_classes() -> None:
    assert point_key("cdu1.rack03.case_temp") == ("rack", "cdu1.rack03", "case_temp")
    assert point_key("cdu2.supply_temp_sp.hand") == ("cdu", "cdu2", "supply_temp_sp.hand")
    assert point_key("hp2.trip.low_pressure") == ("heat_pump", "hp2", "trip.low_pressure")
    assert point_key("drycooler1.fan_speed") == ("dry_cooler", "drycooler1", "fan_speed")
    assert point_key("facility.pump1.enable") == ("facility", "facility", "pump1.enable")
    assert point_key("site.pue") == ("site", "site", "pue")


def test_escaping_and_non_finite_values() -> None:
    assert escape_tag("a b,c=d") == "a\\ b\\,c\\=d"
    assert escape_tag("x\\") == "x/"  # a trailing backslash would escape the separator
    assert string_field('say "hi"\\\nbye') == '"say \\"hi\\"\\\\\\nbye"'
    enc = SampleEncoder([{"id": "cdu1.supply_temp"}, {"id": "hp1.cop"}], "r 1", "s", 10**18)
    lines = enc.lines(1.5, np.array([30.25, np.nan]), np.array([30.0, np.inf]))
    assert lines == ["cdu,device=cdu1,point=supply_temp,run=r\\ 1,site=s "
                     "value=30.25,truth=30.0 1000000001500000000"]
    assert event_line("r", "s", 0, 2.0, 1, "hp1", "trip", "x") == (
        'events,kind=trip,run=r,site=s,source=hp1 message="x",sim_t=2.0 2001000000')
    assert kpi_line("r", "s", 0, 1.0, {"pue": 1.2, "bad": float("nan"), "name": "x"}) == (
        "kpis,run=r,site=s pue=1.2 1000000000")
    assert timestamp_ns(5, 0.1 * 3) == timestamp_ns(5, 0.3) == 300_000_005


# --------------------------------------------------------------------------- helpers


def new_run(run_dir: Path, period_s: float = 2.0) -> tuple[Twin, RunStore, Recorder]:
    tw = Twin(Site(name="reference-1mw"), seed=1)
    store = RunStore.create(run_dir, {"site": "reference-1mw", "seed": 1},
                            [p.describe() for p in tw.points])
    return tw, store, Recorder(tw, store, period_s)


def drive(tw: Twin, rec: Recorder, until_s: float, chunk_s: float = 60.0,
          pause_s: float = 0.0) -> None:
    """Advance the twin with a few external writes, as a live run would."""
    while tw.now < until_s:
        tw.run_until(min(until_s, tw.now + chunk_s))
        if int(tw.now) % 600 == 0:
            value = float(int(tw.now) // 600 % 2)
            tw.write("hp2.enable.hand", value, "test")
            rec.record_command(tw.now, "hp2.enable.hand", value, "test")
        if pause_s:
            time.sleep(pause_s)


def expected_counts(store: RunStore) -> dict[str, int]:
    """What the export must hold: finite values and truths per measurement, and the rest."""
    enc = SampleEncoder(store.points, store.run_id, store.site, store.time_origin_ns)
    index: dict[str, list[int]] = {}
    for i, m in enumerate(enc.measurements):
        index.setdefault(m, []).append(i)
    counts: Counter[str] = Counter()
    for _, measured, truth in store.samples():
        for m, idx in index.items():
            counts[f"{m}.value"] += int(np.isfinite(measured[idx]).sum())
            counts[f"{m}.truth"] += int(np.isfinite(truth[idx]).sum())
    counts["events.message"] = len(store.events())
    counts["verdicts.text"] = len(store.verdict_rows())
    counts["kpis.pue"] = len(store.kpi_rows())
    return dict(counts)


def influx_counts(server: InfluxDB1, db: str, run_id: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for m, fields in [*((m, ("value", "truth")) for m in SAMPLE_MEASUREMENTS),
                      ("events", ("message",)), ("verdicts", ("text",)), ("kpis", ("pue",))]:
        sel = ", ".join(f'COUNT("{f}")' for f in fields)
        res = server.query(f"SELECT {sel} FROM \"{m}\" WHERE run = '{run_id}'", db=db)
        series = res["results"][0].get("series")
        values = series[0]["values"][0][1:] if series else [0] * len(fields)
        out.update({f"{m}.{f}": int(v or 0) for f, v in zip(fields, values, strict=True)})
    return out


def finish(tw: Twin, store: RunStore, rec: Recorder) -> None:
    rec.close()
    store.write_verdict("supply temperature held", "pass", {"max_degC": 31.2})
    store.write_kpis(tw.kpis())


def v1_target(server: InfluxDB1, db: str, **env: str) -> InfluxTarget:
    return InfluxTarget.from_url(server.url, api="v1", database=db, env=env)


# --------------------------------------------------------------------------- InfluxDB 1.x


def test_live_export_matches_the_store_exactly(influxdb: InfluxDB1, tmp_path: Path) -> None:
    db = unique_name("rig")
    influxdb.create_database(db)
    tw, store, rec = new_run(tmp_path / "run")
    target = InfluxTarget.from_url(f"{influxdb.url}?db={db}", env=NO_SECRETS)  # auto: v1
    fwd = Forwarder(store, target, poll_s=0.1)
    fwd.start()
    drive(tw, rec, 30 * 60.0, pause_s=0.01)
    finish(tw, store, rec)
    stats = fwd.stop(drain=True)
    assert fwd.error is None and stats.pending_samples == 0 and stats.pending_events == 0
    expected = expected_counts(store)
    assert expected["rack.value"] == 901 * 240 and expected["events.message"] >= 4
    assert influx_counts(influxdb, db, store.run_id) == expected
    # one series compared value by value, timestamp by timestamp
    t, measured, truth = store.series("cdu2.supply_temp")
    res = influxdb.query("SELECT value, truth FROM cdu WHERE device = 'cdu2' AND "
                         f"point = 'supply_temp' AND run = '{store.run_id}'", db=db, epoch="ns")
    rows = res["results"][0]["series"][0]["values"]
    assert [r[0] for r in rows] == [store.time_origin_ns + round(x * 1e9) for x in t]
    assert [r[1] for r in rows] == measured.tolist() and [r[2] for r in rows] == truth.tolist()
    # exporting again sends nothing; starting over rewrites the same points
    assert export_run(tmp_path / "run", target).lines == 0
    again = export_run(tmp_path / "run", target, restart=True)
    assert again.lines == stats.lines
    assert influx_counts(influxdb, db, store.run_id) == expected
    store.close()


def test_server_killed_and_restarted_loses_and_duplicates_nothing(
        fresh_influxdb: InfluxDB1, tmp_path: Path) -> None:
    fresh_influxdb.create_database("rig")
    tw, store, rec = new_run(tmp_path / "run")
    target = v1_target(fresh_influxdb, "rig")
    fwd = Forwarder(store, target, batch_lines=2000, poll_s=0.05, backoff_initial_s=0.05,
                    backoff_max_s=0.5)
    checkpoint = checkpoint_path_for(tmp_path / "run", target)
    fwd.start()
    for outage in range(3):
        drive(tw, rec, (outage + 1) * 8 * 60.0)
        progress = fwd.stats.lines
        deadline = time.monotonic() + 20
        while fwd.stats.lines == progress and time.monotonic() < deadline:
            time.sleep(0.01)  # kill it while it is exporting
        fresh_influxdb.kill()
        drive(tw, rec, tw.now + 120.0, pause_s=0.3)  # recording goes on during the outage
        fresh_influxdb.start()
    drive(tw, rec, 28 * 60.0)
    fresh_influxdb.kill()  # down at the end of the run: the drain gives up, nothing is lost
    drive(tw, rec, 30 * 60.0)
    finish(tw, store, rec)
    began = time.monotonic()
    stats = fwd.stop(drain=True, timeout=1.0)
    assert time.monotonic() - began < 5.0
    assert fresh_influxdb.starts == 4 and stats.retries >= 4
    assert fwd.error is None and stats.pending_samples > 0 and checkpoint.exists()
    fresh_influxdb.start()
    resumed = export_run(tmp_path / "run", target)  # `heatrig export` backfills the rest
    assert resumed.lines >= stats.pending_samples * len(store.points)
    assert influx_counts(fresh_influxdb, "rig", store.run_id) == expected_counts(store)
    store.close()


# --------------------------------------------------------------------------- influxdb-client


def test_influxdb_client_path_to_victoria_metrics(victoria_metrics: VictoriaMetrics,
                                                 tmp_path: Path) -> None:
    tw, store, rec = new_run(tmp_path / unique_name("vm"), period_s=10.0)
    drive(tw, rec, 30 * 60.0)
    finish(tw, store, rec)
    target = InfluxTarget.from_url(f"influx2://127.0.0.1:{victoria_metrics.port}/rig/heatrig",
                                   env={"HEATRIG_INFLUX_TOKEN": "vm-ignores-it"})
    assert target.api == "v2" and target.org == "rig" and target.database == "heatrig"
    stats = export_run(store.run_dir, target, batch_lines=3000)
    expected = expected_counts(store)
    assert stats.lines == sum(expected[f"{m}.value"] for m in SAMPLE_MEASUREMENTS) \
        + expected["events.message"] + 2
    run = store.run_id
    for m in SAMPLE_MEASUREMENTS:
        for f in ("value", "truth"):
            stored = victoria_metrics.export_count(f'{{__name__="{m}_{f}",run="{run}"}}')
            assert stored == expected[f"{m}.{f}"], (m, f)
    assert victoria_metrics.export_count(f'{{__name__="events_sim_t",run="{run}"}}') == \
        expected["events.message"]
    assert victoria_metrics.export_count(f'{{__name__="kpis_pue",run="{run}"}}') == 1
    assert victoria_metrics.rejected_rows() == 0
    store.close()


# --------------------------------------------------------------------------- errors


def assert_keeps_recording(tw: Twin, store: RunStore, rec: Recorder) -> None:
    before = store.count_samples()
    drive(tw, rec, tw.now + 120.0)
    rec.close()
    assert store.count_samples() == before + 12 + 1
    store.close()


def test_wrong_credentials(influxdb_auth: InfluxDB1, tmp_path: Path,
                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    db = unique_name("auth")
    influxdb_auth.create_database(db)
    secret = "not-the-password-s3cr3t"
    tw, store, rec = new_run(tmp_path / "run", period_s=10.0)
    drive(tw, rec, 600.0)
    target = v1_target(influxdb_auth, db, HEATRIG_INFLUX_USERNAME="admin",
                       HEATRIG_INFLUX_PASSWORD=secret)
    assert secret not in repr(target)
    fwd = Forwarder(store, target)
    with pytest.raises(ServiceError) as err:
        fwd.start()
    message = str(err.value)
    assert influxdb_auth.url in message and "not authorised" in message
    assert "HTTP 401" in message and "HEATRIG_INFLUX_PASSWORD" in message
    assert secret not in message and secret not in caplog.text
    assert_keeps_recording(tw, store, rec)
    # the right password works, and is written nowhere in the run directory
    good = v1_target(influxdb_auth, db, HEATRIG_INFLUX_USERNAME=influxdb_auth.username,
                     HEATRIG_INFLUX_PASSWORD=influxdb_auth.password)
    stats = export_run(tmp_path / "run", good)
    assert stats.lines > 0 and influxdb_auth.count("events", db) == len(tw.events)
    for path in (tmp_path / "run").iterdir():
        assert influxdb_auth.password.encode() not in path.read_bytes()


def test_missing_database(influxdb: InfluxDB1, tmp_path: Path) -> None:
    tw, store, rec = new_run(tmp_path / "run", period_s=10.0)
    drive(tw, rec, 300.0)
    missing = unique_name("missing")
    with pytest.raises(ServiceError, match=f"database '{missing}' not found") as err:
        Forwarder(store, v1_target(influxdb, missing)).start()
    assert influxdb.url in str(err.value) and "HTTP 404" in str(err.value)
    assert_keeps_recording(tw, store, rec)


def test_unreachable_server(tmp_path: Path) -> None:
    tw, store, rec = new_run(tmp_path / "run", period_s=10.0)
    drive(tw, rec, 300.0)
    url = f"http://127.0.0.1:{free_port()}"
    target = InfluxTarget.from_url(url, env=NO_SECRETS)
    with pytest.raises(ServiceError, match="connection refused") as err:
        Forwarder(store, target).start()
    assert f"cannot reach InfluxDB at {url}" in str(err.value)
    with pytest.raises(ServiceError, match="cannot reach"):
        export_run(store.run_dir, target)
    assert_keeps_recording(tw, store, rec)


def test_database_dropped_mid_run_stops_the_forwarder_not_the_run(
        influxdb: InfluxDB1, tmp_path: Path) -> None:
    db = unique_name("dropped")
    influxdb.create_database(db)
    tw, store, rec = new_run(tmp_path / "run", period_s=10.0)
    errors: list[ServiceError] = []
    fwd = Forwarder(store, v1_target(influxdb, db), poll_s=0.05, on_error=errors.append)
    fwd.start()
    drive(tw, rec, 300.0)
    deadline = time.monotonic() + 10
    while fwd.stats.lines == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    influxdb.query(f'DROP DATABASE "{db}"')
    drive(tw, rec, 600.0)
    deadline = time.monotonic() + 10
    while fwd.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not fwd.running and errors and errors[0] is fwd.error
    assert "not found" in str(fwd.error) and influxdb.url in str(fwd.error)
    stats = fwd.stop()
    assert stats.error == str(fwd.error) and stats.pending_samples > 0
    assert_keeps_recording(tw, store, rec)


def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(ConfigError, match="credentials in the URL") as err:
        InfluxTarget.from_url("http://admin:pa55word@127.0.0.1:8086?db=x")
    assert "pa55word" not in str(err.value)
    t = InfluxTarget.from_url("influx1s://db.example:8443/rig/autogen", env=NO_SECRETS)
    assert (t.url, t.api, t.database, t.retention_policy) == (
        "https://db.example:8443", "v1", "rig", "autogen")
