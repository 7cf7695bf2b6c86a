"""The `heatrig` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from twin.errors import HeatrigError
from twin.units import parse_quantity

log = logging.getLogger("heatrig")


def _duration(text: str) -> float:
    try:
        value = parse_quantity(text, "duration")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, got {text!r}")
    return value


def cmd_sim(args: argparse.Namespace) -> int:
    """Simulate a site offline as fast as possible and print its KPIs."""
    from rig.offline import run_offline
    from rig.sites import load_site
    from rig.summary import kpi_table

    site = load_site(args.site)
    out = Path(args.out or f"runs/{site.name}-offline")
    summary = run_offline(site, duration_s=args.duration, out_dir=out, seed=args.seed,
                          record_period_s=args.record_period, progress=not args.quiet,
                          source=str(args.site))
    print(kpi_table(summary))
    print(f"summary: {out / 'summary.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="heatrig",
        description="Digital twin and HIL test rig for data-center cooling with heat recovery.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("sim", help="simulate a site offline as fast as possible")
    sim.add_argument("site", help="site file (sites/*.yaml) or a site name")
    sim.add_argument("--duration", type=_duration, default=86_400.0,
                     help="simulated time, e.g. 24h, 90 min (default 24h)")
    sim.add_argument("--out", help="run directory (default runs/<site>-offline)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument("--record-period", type=_duration, default=10.0,
                     help="recording period, e.g. 10s (default 10 s)")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(func=cmd_sim)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `heatrig` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except HeatrigError as exc:
        print(f"heatrig: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("heatrig: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
