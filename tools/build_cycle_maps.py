"""Rebuild the shipped cycle maps in twin/data/ (one npz per refrigerant, default spec).

Run from the repository root: ``python tools/build_cycle_maps.py [FLUID ...]``.
After building, each map is checked against CoolProp HEOS at random points of its
envelope; the run fails (exit 1) if any COP, q_evap or suction density is off by more
than 0.5 %. Takes about 10 s for all six fluids.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
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

DATA = ROOT / "twin" / "data"
TOLERANCE = 0.005  # relative, COP, q_evap and rho_suction


def check(cmap: CycleMap, samples: int, seed: int = 1) -> float:
    """Largest relative map-vs-HEOS deviation of COP, q_evap and rho_suction (-) over
    ``samples`` random points of the envelope (seeded)."""
    rng = random.Random(seed)
    te_lo, te_hi, tc_lo, tc_hi = cmap.envelope
    worst = 0.0
    done = 0
    while done < samples:
        te, tc = rng.uniform(te_lo, te_hi), rng.uniform(tc_lo, tc_hi)
        if tc - te < MIN_LIFT_K:
            continue
        done += 1
        ref = cycle_heos(cmap.spec, te, tc)
        got = cmap.evaluate(te, tc)
        for name in ("cop", "q_evap_J_kg", "rho_suction_kg_m3"):
            a, b = getattr(got, name), getattr(ref, name)
            worst = max(worst, abs(a - b) / abs(b))
    return worst


def main(argv: list[str] | None = None) -> int:
    """Build, check and write the maps; prints one line per fluid."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fluids", nargs="*", default=list(REFRIGERANTS))
    parser.add_argument("--samples", type=int, default=2000, help="random points checked")
    args = parser.parse_args(argv)
    DATA.mkdir(exist_ok=True)
    start = time.perf_counter()
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
