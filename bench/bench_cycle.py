"""Time one refrigerant cycle evaluation: precomputed map vs CoolProp HEOS, per fluid, and
per two-stage and cascade cycle.

Run: ``python -m bench.bench_cycle`` from the repository root. Prints a table (median and
p99 in us per call; every call timed on its own with ``perf_counter_ns``, whose own cost,
about 0.1 us, is subtracted) and the dict that ``run()`` returns. Budgets: 5 us a
single-stage and 10 us a staged map evaluation (median).
"""

from __future__ import annotations

import math
import random
import time
from importlib import resources

from twin.refrigerant import (
    MIN_LIFT_K,
    REFRIGERANTS,
    CycleSpec,
    cycle_heos,
    cycle_map,
    envelope,
    load_map,
    map_filename,
)
from twin.refrigerant_cascade import CascadeSpec
from twin.refrigerant_staged import HT_MIN_LIFT_K, StagedSpec, staged_heos, staged_map
from twin.refrigerant_two_stage import TwoStageSpec

MAP_POINTS = 200  # distinct operating points, cycled through
STAGED: list[StagedSpec] = [TwoStageSpec("R717"), TwoStageSpec("R1233zd(E)"),
                            TwoStageSpec("R600"), CascadeSpec("R717", "R1233zd(E)"),
                            CascadeSpec("R717", "R600"),
                            CascadeSpec("R717", "R1233zd(E)", t_cascade_C=65.0)]


def _points(spec: CycleSpec, n: int, seed: int = 0) -> list[tuple[float, float]]:
    """n seeded random (t_evap, t_cond) points of the envelope (degC)."""
    rng = random.Random(seed)
    te_lo, te_hi, tc_lo, tc_hi = envelope(spec)
    out: list[tuple[float, float]] = []
    while len(out) < n:
        te, tc = rng.uniform(te_lo, te_hi), rng.uniform(tc_lo, tc_hi)
        if tc - te >= MIN_LIFT_K:
            out.append((te, tc))
    return out


def _stats(samples_us: list[float]) -> tuple[float, float]:
    """(median, p99) of per-call times (us)."""
    s = sorted(samples_us)
    return s[len(s) // 2], s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


def _timer_overhead_ns() -> float:
    """Median cost (ns) of an empty perf_counter_ns pair."""
    clock = time.perf_counter_ns
    out = []
    for _ in range(20000):
        t0 = clock()
        out.append(clock() - t0)
    return sorted(out)[len(out) // 2]


def bench_fluid(fluid: str, map_calls: int = 50000, heos_calls: int = 400,
                overhead_ns: float = 0.0) -> dict[str, float]:
    """Per-call times (us) of ``CycleMap.evaluate`` and ``cycle_heos`` for one fluid."""
    spec = CycleSpec(fluid)
    cmap = cycle_map(spec)
    evaluate = cmap.evaluate
    pts = _points(spec, MAP_POINTS)
    clock = time.perf_counter_ns
    for te, tc in pts:  # warm up
        evaluate(te, tc)
    map_us = []
    for k in range(map_calls):
        te, tc = pts[k % MAP_POINTS]
        t0 = clock()
        evaluate(te, tc)
        map_us.append((clock() - t0 - overhead_ns) * 1e-3)
    if REFRIGERANTS[fluid].mixture:
        heos_calls = max(50, heos_calls // 4)
    cycle_heos(spec, *pts[0])  # warm up: AbstractState, mixture saturation guesses
    heos_us = []
    for te, tc in _points(spec, heos_calls, seed=1):
        t0 = clock()
        cycle_heos(spec, te, tc)
        heos_us.append((clock() - t0 - overhead_ns) * 1e-3)
    m50, m99 = _stats(map_us)
    h50, h99 = _stats(heos_us)
    return {"map_median_us": m50, "map_p99_us": m99, "heos_median_us": h50,
            "heos_p99_us": h99, "ratio": h50 / m50}


def _staged_points(spec: StagedSpec, n: int, seed: int = 0) -> list[tuple[float, float]]:
    """n seeded random (t_evap, t_cond) points of a staged envelope (degC)."""
    rng = random.Random(seed)
    te_lo, te_hi, tc_lo, tc_hi = spec.envelope()
    out: list[tuple[float, float]] = []
    while len(out) < n:
        te, tc = rng.uniform(te_lo, te_hi), rng.uniform(tc_lo, tc_hi)
        if tc - te >= HT_MIN_LIFT_K and spec.outside(te, tc) is None:
            out.append((te, tc))
    return out


def _optimised(spec: StagedSpec) -> bool:
    """True for a cascade that searches its cascade temperature (no fixed one)."""
    return spec.kind == "cascade" and math.isnan(spec.params()[-1])


def _label(spec: StagedSpec) -> str:
    """The spec's label, with its fixed intermediate or cascade temperature if any."""
    fixed = spec.params()[-1]
    return spec.label + ("" if math.isnan(fixed) else f" at {fixed:g} degC")


def bench_staged(spec: StagedSpec, map_calls: int = 50000, heos_calls: int = 100,
                 overhead_ns: float = 0.0) -> dict[str, float]:
    """Per-call times (us) of ``StagedMap.evaluate`` and ``staged_heos`` for one spec
    (an optimised cascade's HEOS time includes its cascade-temperature search)."""
    smap = staged_map(spec)
    evaluate = smap.evaluate
    pts = _staged_points(spec, MAP_POINTS)
    clock = time.perf_counter_ns
    for te, tc in pts:
        evaluate(te, tc)
    map_us = []
    for k in range(map_calls):
        te, tc = pts[k % MAP_POINTS]
        t0 = clock()
        evaluate(te, tc)
        map_us.append((clock() - t0 - overhead_ns) * 1e-3)
    if _optimised(spec):
        heos_calls = max(20, heos_calls // 4)
    staged_heos(spec, *pts[0])
    heos_us = []
    for te, tc in _staged_points(spec, heos_calls, seed=1):
        t0 = clock()
        staged_heos(spec, te, tc)
        heos_us.append((clock() - t0 - overhead_ns) * 1e-3)
    m50, m99 = _stats(map_us)
    h50, h99 = _stats(heos_us)
    return {"map_median_us": m50, "map_p99_us": m99, "heos_median_us": h50,
            "heos_p99_us": h99, "ratio": h50 / m50}


def bench_load() -> float:
    """Time (ms) to read and load all six shipped maps (no cache)."""
    t0 = time.perf_counter()
    for fluid in REFRIGERANTS:
        load_map(resources.files("twin.data").joinpath(map_filename(fluid)).read_bytes())
    return (time.perf_counter() - t0) * 1e3


def run() -> dict[str, object]:
    """All fluids; prints a table and returns {"fluids": {...}, "map_load_ms": ...}."""
    load_ms = bench_load()
    overhead = _timer_overhead_ns()
    results = {fluid: bench_fluid(fluid, overhead_ns=overhead) for fluid in REFRIGERANTS}
    print(f"{'fluid':11s} {'map p50':>8s} {'map p99':>8s} {'HEOS p50':>9s} {'HEOS p99':>9s}"
          f" {'HEOS/map':>9s}   (us per cycle evaluation)")
    for fluid, r in results.items():
        print(f"{fluid:11s} {r['map_median_us']:8.2f} {r['map_p99_us']:8.2f} "
              f"{r['heos_median_us']:9.1f} {r['heos_p99_us']:9.1f} {r['ratio']:8.0f}x")
    print(f"loading the six shipped maps: {load_ms:.0f} ms")
    staged = {_label(spec): bench_staged(spec, overhead_ns=overhead) for spec in STAGED}
    print(f"{'staged cycle':32s} {'map p50':>8s} {'map p99':>8s} {'HEOS p50':>9s} "
          f"{'HEOS p99':>9s} {'HEOS/map':>9s}")
    for label, r in staged.items():
        print(f"{label:32s} {r['map_median_us']:8.2f} {r['map_p99_us']:8.2f} "
              f"{r['heos_median_us']:9.1f} {r['heos_p99_us']:9.1f} {r['ratio']:8.0f}x")
    return {"fluids": results, "map_load_ms": load_ms, "staged": staged}


if __name__ == "__main__":
    print(run())
