"""Rebuild the shipped cycle maps in twin/data/ (one npz per refrigerant, default spec).

Run from the repository root: ``python tools/build_cycle_maps.py [FLUID ...]``
(single-stage maps) and ``python tools/build_cycle_maps.py --staged`` (two-stage and
cascade maps of ``STAGED``). After building, each map is checked against CoolProp HEOS
at random points of its envelope; the run fails (exit 1) if any COP, q_evap or suction
density is off by more than 0.5 % (single-stage) or 0.1 % (staged). Takes about 10 s for
the six original fluids, about 2 minutes for the staged maps.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twin.refrigerant import (  # noqa: E402
    MIN_LIFT_K,
    REFRIGERANTS,
    CycleMap,
    CycleSpec,
    build_map,
    cycle_heos,
    map_filename,
)
from twin.refrigerant_cascade import CascadeSpec  # noqa: E402
from twin.refrigerant_staged import (  # noqa: E402
    HT_MIN_LIFT_K,
    StagedMap,
    StagedSpec,
    build_staged_map,
    staged_heos,
)
from twin.refrigerant_two_stage import TwoStageSpec  # noqa: E402

DATA = ROOT / "twin" / "data"
TOLERANCE = 0.005  # relative, COP, q_evap and rho_suction
STAGED_TOLERANCE = 0.001  # the same for two-stage and cascade maps
STAGED: list[StagedSpec] = [
    *(TwoStageSpec(f) for f in ("R717", "R1233zd(E)", "R1336mzz(Z)",
                                "R245fa", "R600", "R601")),
    CascadeSpec("R717", "R1233zd(E)"),
    CascadeSpec("R717", "R600"),
    CascadeSpec("R717", "R1336mzz(Z)"),
    CascadeSpec("R717", "R1233zd(E)", t_cascade_C=65.0),  # sites/ht-cascade-120.yaml
]


def _worst_deviation(bounds: tuple[float, float, float, float], samples: int, seed: int,
                     inside: Callable[[float, float], bool],
                     got: Callable[[float, float], object],
                     ref: Callable[[float, float], object]) -> float:
    """Largest relative deviation (-) of COP, q_evap and rho_suction of ``got`` from ``ref``
    over ``samples`` seeded random points (t_evap, t_cond in degC) of ``bounds`` that are
    ``inside``."""
    rng = random.Random(seed)
    te_lo, te_hi, tc_lo, tc_hi = bounds
    worst = 0.0
    done = 0
    while done < samples:
        te, tc = rng.uniform(te_lo, te_hi), rng.uniform(tc_lo, tc_hi)
        if not inside(te, tc):
            continue
        done += 1
        r = ref(te, tc)
        g = got(te, tc)
        for name in ("cop", "q_evap_J_kg", "rho_suction_kg_m3"):
            a, b = getattr(g, name), getattr(r, name)
            worst = max(worst, abs(a - b) / abs(b))
    return worst


def check(cmap: CycleMap, samples: int, seed: int = 1) -> float:
    """Largest relative map-vs-HEOS deviation of COP, q_evap and rho_suction (-) over
    ``samples`` random points of the envelope (seeded)."""
    return _worst_deviation(cmap.envelope, samples, seed,
                            lambda te, tc: tc - te >= MIN_LIFT_K, cmap.evaluate,
                            lambda te, tc: cycle_heos(cmap.spec, te, tc))


def check_staged(smap: StagedMap, samples: int, seed: int = 1) -> float:
    """Largest relative map-vs-HEOS deviation of COP, q_evap and rho_suction (-) of a
    staged map over ``samples`` random points of its envelope (seeded)."""
    return _worst_deviation(
        smap.envelope, samples, seed,
        lambda te, tc: tc - te >= HT_MIN_LIFT_K and smap.spec.outside(te, tc) is None,
        smap.evaluate, lambda te, tc: staged_heos(smap.spec, te, tc))


def build_staged(samples: int) -> bool:
    """Build, check and write the staged maps; True if all are within tolerance."""
    ok = True
    for spec in STAGED:
        t0 = time.perf_counter()
        smap = build_staged_map(spec)
        built = time.perf_counter() - t0
        worst = check_staged(smap, samples)
        path = DATA / spec.map_name()
        np.savez_compressed(path, **smap.to_arrays())
        print(f"{spec.label:26s} {smap.n_evap}x{smap.n_cond} nodes, built in {built:6.2f} s, "
              f"worst deviation {worst * 100:.3f} %, "
              f"{path.stat().st_size / 1024:.0f} KiB -> {path.relative_to(ROOT)}")
        ok &= worst <= STAGED_TOLERANCE
    return ok


def main(argv: list[str] | None = None) -> int:
    """Build, check and write the maps; prints one line per fluid."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fluids", nargs="*", default=list(REFRIGERANTS))
    parser.add_argument("--samples", type=int, default=2000, help="random points checked")
    parser.add_argument("--staged", action="store_true",
                        help="build the two-stage and cascade maps instead")
    args = parser.parse_args(argv)
    DATA.mkdir(exist_ok=True)
    start = time.perf_counter()
    if args.staged:
        ok = build_staged(max(1, args.samples // 10))
        print(f"total {time.perf_counter() - start:.1f} s")
        return 0 if ok else 1
    failed = False
    for fluid in args.fluids:
        t0 = time.perf_counter()
        cmap = build_map(CycleSpec(fluid))
        built = time.perf_counter() - t0
        worst = check(cmap, args.samples)
        path = DATA / map_filename(fluid)
        np.savez_compressed(path, **cmap.to_arrays())
        print(f"{fluid:11s} {cmap.n_evap}x{cmap.n_cond} nodes, built in {built:6.2f} s, "
              f"worst deviation {worst * 100:.3f} %, "
              f"{path.stat().st_size / 1024:.0f} KiB -> {path.relative_to(ROOT)}")
        failed |= worst > TOLERANCE
    print(f"total {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
