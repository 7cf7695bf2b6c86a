"""Speed of the twin offline: real-time factors, scaling with rack count, memory, start-up.

Run: ``python -m bench.bench_twin [--hours 24] [--campus-hours 6]``. Each figure is
measured in this one run, in fresh subprocesses so that memory and start-up are honest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUN_SNIPPET = """
import json, resource, sys, time
t0 = time.perf_counter()
from pathlib import Path
from rig.runtime.offline import run_offline
from rig.config.sites import load_site
site = load_site(sys.argv[1])
scale = int(sys.argv[4])
if scale:
    site.cdus.count = scale
s = run_offline(site, duration_s=float(sys.argv[2]) * 3600, out_dir=Path(sys.argv[3]),
                progress=False, record_period_s=10.0)
p = s.performance
print(json.dumps({"realtime_factor": p.realtime_factor, "wall_s": p.wall_s,
                  "startup_s": p.startup_s, "peak_rss_mb": p.peak_rss_mb,
                  "racks": site.rack_count, "points": None,
                  "residual": s.energy_balance.residual_fraction,
                  "process_s": time.perf_counter() - t0}))
"""

START_SNIPPET = """
import time
t0 = time.perf_counter()
from rig.config.sites import load_site
from twin.plant import Twin
tw = Twin(load_site("reference-1mw"))
tw.run_until(60)
print(time.perf_counter() - t0)
"""


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         cwd=ROOT, env=env, check=True)
    return out.stdout.strip().splitlines()[-1]


def run(site: str, hours: float, cdus: int = 0) -> dict[str, float]:
    """One offline run in a fresh process; cdus > 0 overrides the CDU count."""
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(_python(RUN_SNIPPET, site, str(hours), tmp, str(cdus)))


def start_times() -> dict[str, float]:
    """Cold (empty bytecode cache) and warm start to a first simulated minute (s)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPYCACHEPREFIX": cache}
        t0 = time.perf_counter()
        _python(START_SNIPPET, env=env)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        _python(START_SNIPPET, env=env)
        warm = time.perf_counter() - t0
    return {"cold_start_s": cold, "warm_start_s": warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--campus-hours", type=float, default=6.0)
    parser.add_argument("--scaling-hours", type=float, default=2.0)
    args = parser.parse_args()
    results: dict[str, object] = {}
    ref = run("reference-1mw", args.hours)
    results["reference"] = ref
    print(f"reference-1mw {args.hours:g} h at 1 s steps, recorded at 10 s: "
          f"{ref['realtime_factor']:,.0f}x real time, {ref['wall_s']:.1f} s wall, "
          f"peak RSS {ref['peak_rss_mb']:.0f} MB, residual {ref['residual']:.1e}")
    campus = run("campus-10mw", args.campus_hours)
    results["campus"] = campus
    print(f"campus-10mw {args.campus_hours:g} h: {campus['realtime_factor']:,.0f}x real time, "
          f"{campus['wall_s']:.1f} s wall, peak RSS {campus['peak_rss_mb']:.0f} MB")
    print("\nscaling (reference site with more CDUs of 10 racks each):")
    print(f"{'racks':>6} {'x real time':>12} {'us per simulated s':>20} {'us per rack-s':>14}")
    scaling = []
    for cdus in (1, 4, 10, 20, 40, 80):
        r = run("reference-1mw", args.scaling_hours, cdus)
        us = 1e6 / r["realtime_factor"]
        scaling.append({"racks": r["racks"], "realtime_factor": r["realtime_factor"],
                        "us_per_sim_s": us})
        print(f"{r['racks']:>6} {r['realtime_factor']:>12,.0f} {us:>20.0f} "
              f"{us / r['racks']:>14.1f}")
    results["scaling"] = scaling
    starts = start_times()
    results["start"] = starts
    print(f"\ncold start (empty bytecode cache) {starts['cold_start_s']:.2f} s, "
          f"warm start {starts['warm_start_s']:.2f} s (to the end of the first simulated "
          "minute, in a new process)")
    print("\n" + json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
