"""Benchmark of the run store and the InfluxDB export.

    .venv/bin/python -m bench.bench_store [--hours 2] [--export-minutes 30]

Prints: run-store write rate (point values a second, a sample = one point's measured
value plus its truth), bytes on disk per recorded sample, the size of a 24 h
reference-site run recorded every 10 s (extrapolated from a shorter measured run), and the
export rate to InfluxDB 1.x on loopback (Debian's influxd, started on a free port by
tests/servers.py, plain HTTP ``/write`` path with gzip).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rig.record.influx import InfluxTarget, export_run
from rig.record.lineprotocol import SampleEncoder
from rig.record.recorder import Recorder
from rig.record.store import RunStore, describe_size
from twin.plant import Twin
from twin.site import Site

ROOT = Path(__file__).resolve().parent.parent


def record(run_dir: Path, hours: float, period_s: float) -> tuple[RunStore, float]:
    """Record the reference site; return the closed-for-writing store and wall seconds."""
    tw = Twin(Site(name="reference-1mw"), seed=1)
    store = RunStore.create(run_dir, {"site": "reference-1mw", "seed": 1},
                            [p.describe() for p in tw.points])
    rec = Recorder(tw, store, period_s)
    began = time.perf_counter()
    tw.run_until(hours * 3600.0)
    rec.close()
    return store, time.perf_counter() - began


def bench_write(tmp: Path, rows: list[tuple[np.ndarray, np.ndarray]], points: list[dict],
                n_rows: int) -> float:
    """Point values a second through write_sample + commit (real twin rows, replayed)."""
    store = RunStore.create(tmp / "write", {"site": "bench"}, points)
    began = time.perf_counter()
    for k in range(n_rows):
        m, r = rows[k % len(rows)]
        store.write_sample(float(k), m, r)
    store.close()
    return n_rows * len(points) / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_store")
    parser.add_argument("--hours", type=float, default=2.0,
                        help="simulated hours recorded at 10 s for the size figures")
    parser.add_argument("--export-minutes", type=float, default=30.0,
                        help="simulated minutes recorded at 1 s for the export figure")
    parser.add_argument("--write-rows", type=int, default=5000)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="heatrig-bench-store-"))
    try:
        print(f"command: {sys.executable} -m bench.bench_store "
              f"--hours {args.hours:g} --export-minutes {args.export_minutes:g} "
              f"--write-rows {args.write_rows}")
        # 1. size on disk of a real recording at 10 s, extrapolated to 24 h
        store, wall = record(tmp / "size", args.hours, 10.0)
        n_points = len(store.points)
        n_rows = store.count_samples()
        rows = [(m, r) for _, m, r in store.samples()]
        points = store.points
        store.close()
        size = describe_size(tmp / "size")
        per_sample = size / (n_rows * n_points)
        day = size * 24.0 / args.hours
        print(f"points per instant: {n_points}")
        print(f"recorded {args.hours:g} h at 10 s: {n_rows} instants, {size / 1e6:.2f} MB "
              f"on disk ({wall:.1f} s wall incl. simulation)")
        print(f"bytes per recorded sample (measured + truth of one point): {per_sample:.2f}")
        print(f"24 h at 10 s, extrapolated linearly from the {args.hours:g} h run: "
              f"{day / 1e6:.1f} MB")
        # 2. write rate
        rate = bench_write(tmp, rows, points, args.write_rows)
        print(f"run store write: {rate:,.0f} samples/s ({rate / n_points:,.0f} instants/s; "
              f"{args.write_rows} instants of {n_points} points, commit included)")
        # 3. line building alone
        enc = SampleEncoder(points, "bench-run", "reference-1mw", time.time_ns())
        began = time.perf_counter()
        lines = sum(len(enc.lines(float(k), m, r)) for k, (m, r) in enumerate(rows))
        print(f"line protocol building: {lines / (time.perf_counter() - began):,.0f} lines/s")
        # 4. export to InfluxDB 1.x on loopback
        store, _ = record(tmp / "export", args.export_minutes / 60.0, 1.0)
        store.close()
        sys.path.insert(0, str(ROOT / "tests"))
        from servers import InfluxDB1

        with InfluxDB1(workdir=tmp / "influxdb") as influx:
            influx.create_database("bench")
            target = InfluxTarget.from_url(influx.url, api="v1", database="bench", env={})
            stats = export_run(tmp / "export", target)
            stored = sum(influx.count(m, "bench", "value") for m in (
                "cdu", "rack", "heat_pump", "facility", "district", "site", "dry_cooler", "air"))
        print(f"export to InfluxDB 1.x ({influx.binary}, loopback, /write, gzip level 1, "
              f"{stats.batches} batches of <= 5000 lines): {stats.lines:,} lines in "
              f"{stats.seconds:.2f} s = {stats.lines_per_s:,.0f} points/s "
              f"(InfluxDB holds {stored:,} sample points)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
