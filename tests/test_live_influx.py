"""Live runs forwarding to a real InfluxDB: outages, SIGTERM, unusable servers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from servers import InfluxDB1, unique_name
from test_influx import expected_counts

from rig.config.sites import load_site
from rig.record.store import RunStore
from rig.runtime.live import LiveOptions, LiveRig

ROOT = Path(__file__).resolve().parent.parent


def _url(server: InfluxDB1, db: str) -> str:
    return f"influx1://127.0.0.1:{server.port}?db={db}"


def influx_counts(server: InfluxDB1, db: str, run_id: str, keys: list[str]) -> dict[str, int]:
    """COUNT of each ``measurement.field`` of one run in InfluxDB."""
    out = {}
    for key in keys:
        m, f = key.split(".", 1)
        res = server.query(f'SELECT COUNT("{f}") FROM "{m}" WHERE run = \'{run_id}\'', db=db)
        series = res["results"][0].get("series")
        out[key] = int(series[0]["values"][0][1] or 0) if series else 0
    return out


def _wait_counts(server: InfluxDB1, db: str, run_dir: Path, timeout: float = 20.0) -> None:
    store = RunStore.open(run_dir)
    expected = expected_counts(store)
    run_id = store.run_id
    store.close()
    deadline = time.time() + timeout
    while True:
        got = influx_counts(server, db, run_id, sorted(expected))
        if got == expected or time.time() > deadline:
            break
        time.sleep(0.5)
    assert got == expected
    assert sum(expected.values()) > 10_000


def test_influxdb_killed_three_times_during_a_live_run(fresh_influxdb: InfluxDB1,
                                                       tmp_path: Path) -> None:
    db = unique_name("live")
    fresh_influxdb.create_database(db)
    out = tmp_path / "run"
    options = LiveOptions(out_dir=out, speed=40, duration_s=800, modbus="127.0.0.1:0",
                          status=False, influx=_url(fresh_influxdb, db))
    rig = LiveRig(load_site("reference-1mw"), options)
    outages: list[float] = []
    result: dict[str, dict] = {}
    # The rig runs in a thread: the server is restarted from the main thread, whose
    # lifetime its parent-death signal is tied to.
    thread = threading.Thread(target=lambda: result.update(summary=asyncio.run(rig.run())))
    thread.start()
    time.sleep(2.0)
    for _ in range(3):
        fresh_influxdb.kill()
        outages.append(rig.twin.now)
        time.sleep(2.0)
        fresh_influxdb.start()
        time.sleep(2.0)
    thread.join()
    summary = result["summary"]
    assert len(outages) == 3 and outages[-1] < summary.duration_s
    assert summary.live is not None and summary.live.export is not None
    assert summary.live.export.error is None
    _wait_counts(fresh_influxdb, db, out)


def test_sigterm_keeps_the_store_consistent_and_exports_everything(
        influxdb: InfluxDB1, mosquitto, tmp_path: Path) -> None:
    db = unique_name("sigterm")
    influxdb.create_database(db)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rig.cli", "run", "reference-1mw", "--speed", "20",
         "--modbus", "127.0.0.1:0", "--mqtt", mosquitto.url, "--influx", _url(influxdb, db),
         "--out", str(out), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 30
    while not (out / "points.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    store = RunStore.open(out)
    assert store.integrity_check() == "ok"
    assert store.count_samples() > 30
    assert any(e.kind == "stop" and "SIGTERM" in e.message for e in store.events())
    store.close()
    _wait_counts(influxdb, db, out)


def test_unusable_influxdb_is_reported_and_the_run_keeps_recording(
        influxdb_auth: InfluxDB1, tmp_path: Path) -> None:
    site = load_site("reference-1mw")
    cases = {
        "wrong credentials": (_url(influxdb_auth, "heatrig"), {
            "HEATRIG_INFLUX_USERNAME": "admin", "HEATRIG_INFLUX_PASSWORD": "not-the-password"}),
        "missing database": (f"influx1://127.0.0.1:{influxdb_auth.port}?db=nope", {
            "HEATRIG_INFLUX_USERNAME": influxdb_auth.username,
            "HEATRIG_INFLUX_PASSWORD": influxdb_auth.password}),
        "unreachable": ("influx1://127.0.0.1:9?db=heatrig", {}),
    }
    for name, (url, env) in cases.items():
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            out = tmp_path / name.replace(" ", "-")
            rig = LiveRig(site, LiveOptions(out_dir=out, speed=50, duration_s=100,
                                            modbus="127.0.0.1:0", status=False, influx=url))
            summary = asyncio.run(rig.run())
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        assert summary.live is not None and summary.live.export is not None
        error = summary.live.export.error
        assert error, name
        assert "127.0.0.1" in error and "not-the-password" not in error, error
        store = RunStore.open(out)
        assert store.count_samples() >= 100, name  # recorded locally all the same
        assert any(e.kind == "export_error" for e in store.events())
        store.close()
