"""The run store and the recorder: exact round trip, SIGKILL durability, CLI helpers."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from rig.record.recorder import Recorder
from rig.record.store import STORE_FILE, RunStore, list_runs, show
from twin.errors import RunStoreError
from twin.plant import Twin
from twin.site import Site

ROOT = Path(__file__).resolve().parent.parent

POINTS = [
    {"id": "cdu1.supply_temp", "device": "cdu1", "kind": "sensor", "type": "float",
     "unit": "degC", "min": 0.0, "max": 80.0, "description": "supply", "brick": None},
    {"id": "cdu1.rack01.power", "device": "cdu1", "kind": "status", "type": "float",
     "unit": "W", "min": 0.0, "max": math.inf, "description": "rack power", "brick": None},
    {"id": "hp1.running", "device": "hp1", "kind": "status", "type": "bool", "unit": "1",
     "min": 0, "max": 1, "description": "running", "brick": None},
]


def make_store(run_dir: Path, **manifest: object) -> RunStore:
    return RunStore.create(run_dir, {"site": "unit", "seed": 7, **manifest}, POINTS)


def test_round_trip_is_exact(tmp_path: Path) -> None:
    store = make_store(tmp_path / "run", scenario="leak", db_password="hunter2")
    rng = np.random.default_rng(1)
    written = []
    for k in range(50):
        m = rng.normal(size=3) * 1e6
        r = m.copy()
        r[0] += 0.5  # a noisy sensor differs from its truth
        if k == 7:
            m[0] = math.nan  # a dropped-out sensor
        store.write_sample(k * 10.0, m, r)
        written.append((k * 10.0, m, r))
    store.write_event(10.0, "hp1", "trip", "low pressure")
    store.write_event(10.0, "hp1", "trip", "second trip, same instant")
    store.write_event(10.0, "hp2", "trip", 'quote " and \\ backslash\nnewline')
    store.write_event(20.0, "hp1", "trip", "later")
    store.write_command(15.0, "hp1.enable", 1.0, "modbus")
    store.write_verdict("leak alarm", "fail", {"deadline_s": 60, "seen": None})
    store.write_verdict("leak alarm", "pass", {"seen_at_s": 42.0}, t=42.0)
    store.write_kpis({"pue": 1.1, "erf": 0.6})
    with pytest.raises(RunStoreError, match="KPIs must be numbers; not: kpis"):
        store.write_kpis({"kpis": {"pue": 1.1}})  # a summary is not a KPI row
    digest = store.content_hash()
    with pytest.raises(ValueError, match="not after"):
        store.write_sample(490.0, np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="expected 3 values"):
        store.write_sample(1e6, np.zeros(4), np.zeros(4))
    store.close()

    with RunStore.open(tmp_path / "run") as ro:
        assert ro.count_samples() == 50
        got = list(ro.samples())
        for (t, m, r), (t2, m2, r2) in zip(written, got, strict=True):
            assert t == t2
            assert m.tobytes() == m2.tobytes() and r.tobytes() == r2.tobytes()  # bitwise, NaN too
        assert [t for t, _, _ in ro.samples(100.0, 200.0)] == [100.0 + 10 * i for i in range(11)]
        t, m, r = ro.series("cdu1.rack01.power", t1=30.0)
        assert t.tolist() == [0.0, 10.0, 20.0, 30.0]
        assert m.tolist() == [w[1][1] for w in written[:4]]
        assert [(e.t, e.tie, e.source) for e in ro.events()] == [
            (10.0, 0, "hp1"), (10.0, 1, "hp1"), (10.0, 0, "hp2"), (20.0, 0, "hp1")]
        assert ro.commands()[0][1:] == (15.0, "hp1.enable", 1.0, "modbus")
        assert [(v.name, v.verdict, v.t) for v in ro.verdicts()] == [("leak alarm", "pass", 42.0)]
        assert ro.kpis() == {"pue": 1.1, "erf": 0.6}
        assert ro.content_hash() == digest
        assert ro.points[1]["max"] == math.inf and ro.point_ids == [p["id"] for p in POINTS]
        man = ro.manifest
        assert man["site"] == "unit" and man["scenario"] == "leak" and man["seed"] == 7
        assert man["db_password"] == "***"
        assert man["packages"]["numpy"] == np.__version__ and man["wall_end"] is not None
        assert man["time_origin_ns"] > 1.7e18 and man["run_id"].startswith("run-")
        assert ro.integrity_check() == "ok"
        with pytest.raises(RunStoreError, match="read-only"):
            ro.write_event(1.0, "x", "y", "z")
        with pytest.raises(RunStoreError, match="no point"):
            ro.series("nope")
    assert "hunter2" not in (tmp_path / "run" / STORE_FILE).read_bytes().decode("latin-1")


def test_missing_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunStoreError, match="not a run directory"):
        RunStore.open(tmp_path)


def test_list_runs_and_show(tmp_path: Path) -> None:
    for name, verdict in (("b", "fail"), ("a", "pass")):
        store = make_store(tmp_path / name)
        store.write_sample(0.0, np.ones(3), np.ones(3))
        store.write_verdict("supply temperature held", verdict, {"max_degC": 31.5})
        store.write_kpis({"pue": 1.0734, "heat_reused_kwh": 1234.5})
        store.close()
        time.sleep(0.01)
    (tmp_path / "not-a-run").mkdir()
    runs = list_runs(tmp_path)
    assert [Path(r["run_dir"]).name for r in runs] == ["b", "a"]  # oldest first
    assert runs[0]["failed"] == 1 and runs[1]["failed"] == 0 and runs[0]["complete"]
    text = show(tmp_path / "b")
    assert "pue" in text and "1.073" in text and "1,234" in text
    assert "FAIL" in text and "supply temperature held" in text and "31.5" in text


def test_recorder_records_twin_values_events_and_commands(tmp_path: Path) -> None:
    tw = Twin(Site(name="reference-1mw"), seed=1)
    store = RunStore.create(tmp_path, {"site": "reference-1mw", "seed": 1},
                            [p.describe() for p in tw.points])
    rec = Recorder(tw, store, 10.0)
    tw.run_until(300.0)
    tw.write("hp1.enable.hand", 1)
    rec.record_command(tw.now, "hp1.enable.hand", 1.0, "test")
    tw.run_until(605.0)
    rec.close()
    assert store.count_samples() == 62  # 0, 10, ..., 600 and the final 605
    t, m, r = list(store.samples(600.0))[-1]
    assert t == 605.0
    assert np.array_equal(m, tw.measured_values()) and np.array_equal(r, tw.truth_values())
    assert [(e.t, e.source, e.kind) for e in store.events()] == [
        (e.t, e.source, e.kind) for e in tw.events]
    assert store.commands()[0][1:] == (300.0, "hp1.enable.hand", 1.0, "test")
    store.close()


def test_offline_runner_writes_a_showable_run(tmp_path: Path) -> None:
    from rig.runtime.offline import run_offline

    summary = run_offline(Site(name="reference-1mw"), duration_s=1200.0, out_dir=tmp_path,
                          seed=2, progress=False)
    with RunStore.open(tmp_path) as store:
        assert store.count_samples() == 121
        assert summary.record_hash == store.content_hash()
        assert store.kpis() == summary.kpis.as_dict()
    assert "pue" in show(tmp_path)


WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from rig.record.store import RunStore
    points = [{"id": f"dev.p{i}", "device": "dev", "kind": "sensor", "type": "float",
               "unit": "1", "min": 0, "max": 1, "description": ""} for i in range(450)]
    store = RunStore.create(sys.argv[1], {"site": "crash"}, points)
    print("ready", flush=True)
    k = 0
    while True:
        t = time.time()
        row = np.full(450, t)
        if k % 50 == 0:
            store.write_event(t, "writer", "tick", str(k))
        store.write_sample(t, row, row + k)
        k += 1
        time.sleep(0.002)
""")


def test_sigkill_loses_at_most_the_last_second(tmp_path: Path) -> None:
    run_dir = tmp_path / "crash"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir)], cwd=ROOT,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(1.0)
        with RunStore.open(run_dir) as live:  # a reader while it writes
            seen = live.last_sample_time()
            assert seen is not None and time.time() - seen < 1.5
        time.sleep(1.5)
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert (run_dir / f"{STORE_FILE}-wal").exists()  # not closed: recovered on open
    with RunStore.open(run_dir) as store:
        assert store.integrity_check() == "ok"
        rows = store.sample_rows(limit=10**6)
        assert [r.id for r in rows] == list(range(1, len(rows) + 1))  # no gap
        assert len(rows) > 200
        for k, row in enumerate(rows):  # every row whole and in order
            assert np.all(row.measured == row.t) and np.all(row.truth == row.t + k)
        last = rows[-1].t
        assert killed_at - 1.0 <= last <= killed_at, f"last sample {killed_at - last:.2f} s old"
        ticks = [int(e.message) for e in store.events()]
        expected = list(range(0, len(rows), 50))  # an event may precede its sample's commit
        assert ticks in (expected, [*expected, len(rows)])
        assert store.manifest["wall_end"] is None
    (run_info,) = list_runs(tmp_path)
    assert not run_info["complete"] and run_info["samples"] == len(rows)
    assert json.loads(json.dumps(run_info))  # plain JSON for the CLI
