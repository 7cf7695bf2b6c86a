"""The `heatrig` command line."""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import socket
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

from rig.config import defaults
from twin.errors import ConfigError, HeatrigError
from twin.units import parse_quantity

log = logging.getLogger("heatrig")

PREFIX = "heatrig: error: "
MAX_SEED = 2**32 - 1


# ----------------------------------------------------------------------------- argument types
# Each type refuses a bad value with argparse.ArgumentTypeError, whose text argparse shows
# after "argument --option: "; the value is checked before anything is opened or served.


def _duration(text: str) -> float:
    """A positive duration such as ``24h`` or ``90 min``, in s."""
    try:
        value = parse_quantity(text, "duration")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, got {text!r}")
    return value


def _step(text: str) -> float:
    """A physics step up to `twin.site.MAX_TIME_STEP_S`, such as ``60s``, in s."""
    from twin.site import MAX_TIME_STEP_S

    value = _duration(text)
    if value > MAX_TIME_STEP_S:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_TIME_STEP_S:g} s (the controls do not settle in longer "
            f"steps), got {text!r}")
    return value


def _speed(text: str) -> float:
    """Simulated seconds per wall second, > 0 and finite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 such as 60, got {text!r}"
                                         ) from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number > 0 such as 60, got {text!r}")
    return value


def _whole(text: str, hi: int, expected: str) -> int:
    """``text`` as a whole number 0..``hi``; the error says "expected ``expected``"."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= hi:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _seed(text: str) -> int:
    """A random seed, 0..2**32-1."""
    return _whole(text, MAX_SEED, f"an integer 0..{MAX_SEED}")


def _port(text: str) -> int:
    """A TCP port 0..65535 (0 = any free port)."""
    return _whole(text, 65535, "a port 0..65535")


def _modbus_endpoint(text: str) -> str:
    """``HOST:PORT`` (or ``[v6]:PORT``) to listen on; the host must resolve."""
    from rig.protocols.modbus.server import parse_endpoint

    if not re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*):[^:]*", text.strip()):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:5020, got "
                                         f"{text!r}")
    try:
        host, port = parse_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        raise argparse.ArgumentTypeError(f"unknown host {host!r} in {text!r}; give an address "
                                         "such as 127.0.0.1:5020") from None
    return text


def _mqtt_url(text: str) -> str:
    """A broker URL ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]``."""
    from rig.protocols.mqtt.config import parse_url

    try:
        parse_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _influx_url(text: str) -> str:
    """An InfluxDB URL as `rig.record.influx.InfluxTarget.from_url` takes it."""
    from rig.record.influx import InfluxTarget

    try:
        InfluxTarget.from_url(text, env={})
    except (HeatrigError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exits with code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # '-1h' after --duration is its value (then refused as not positive), not an option
        self._negative_number_matcher = re.compile(r"^-\d")

    def error(self, message: str) -> NoReturn:
        """Print ``heatrig: error: MESSAGE`` and exit 2 (no usage block)."""
        hint = ""
        extra = message.split(":", 1)[1].split() if ":" in message else []
        if message.startswith("unrecognized arguments:") and extra and not extra[0].startswith(
                "-"):
            hint = "; quote a value that has spaces, e.g. --duration '90 min'"
        command = self.prog.removeprefix("heatrig").strip()
        where = f"heatrig {command} --help" if command else "heatrig --help"
        self.exit(2, f"{PREFIX}{message}{hint} (see '{where}')\n")


def cmd_sim(args: argparse.Namespace) -> int:
    """Simulate a site offline as fast as possible and print its KPIs."""
    from rig.config.sites import load_site
    from rig.present.summary import economics_table, kpi_table
    from rig.runtime.offline import run_offline

    site = load_site(args.site)
    if args.step is not None:
        site = site.model_copy(update={"time_step": args.step})
    out = Path(args.out or f"runs/{site.name}-offline")
    summary = run_offline(site, duration_s=args.duration, out_dir=out, seed=args.seed,
                          record_period_s=max(args.record_period, site.time_step),
                          progress=not args.quiet, source=str(args.site))
    print(kpi_table(summary))
    print(economics_table(summary))
    print(f"summary: {out / 'summary.json'}")
    return 0


def _shipped(kind: Literal["sites", "scenarios"]) -> list[str]:
    """Names of the shipped sites or example scenarios."""
    from rig.config import shipped

    return shipped.names(kind)


def _is_scenario(path: str) -> bool:
    from rig.config.yamlsafe import load_yaml

    p = Path(path)
    if not p.is_file():  # a name: a shipped example scenario unless a site has it too
        return path in _shipped("scenarios") and path not in _shipped("sites")
    data = load_yaml(p).data
    return isinstance(data, dict) and bool({"faults", "expect", "sut", "duration"} & set(data))


def cmd_run(args: argparse.Namespace) -> int:
    """Serve a site or a scenario live; for a scenario, exit 0 only if every verdict passes."""
    from rig.config.scenario import load_scenario
    from rig.config.sites import load_site
    from rig.runtime.live import LiveOptions, run_live

    scenario = None
    if _is_scenario(args.target):
        loaded = load_scenario(args.target)
        scenario, site = loaded.scenario, loaded.site
        speed = args.speed or scenario.speed
        duration = args.duration or scenario.duration
        seed = scenario.seed if args.seed is None else args.seed
        start, record = scenario.start, scenario.record_period
        controller, detector = scenario.sut.controller, scenario.sut.leak_detector
        timeout = scenario.watchdog.timeout
        fallback = scenario.watchdog.fallback
        name = scenario.name
    else:
        site = load_site(args.target)
        speed, duration = args.speed or defaults.LIVE_SPEED, args.duration
        seed = defaults.DEFAULT_SEED if args.seed is None else args.seed
        start, record = defaults.DEFAULT_START, defaults.LIVE_RECORD_PERIOD_S
        controller, detector = "none", "none"
        timeout, fallback = defaults.WATCHDOG_TIMEOUT_S, defaults.WATCHDOG_FALLBACK
        name = site.name
    if args.no_sut:
        controller = detector = "none"
    controller = args.controller or controller
    detector = args.leak_detector or detector
    out = Path(args.out or f"runs/{name}")
    options = LiveOptions(out_dir=out, speed=speed, duration_s=duration, slice_s=args.slice,
                          policy=args.policy, mode=args.mode, modbus=args.modbus,
                          mqtt=args.mqtt, seed=seed, start=start, record_period_s=record,
                          watchdog_timeout_s=timeout, watchdog_fallback=fallback,
                          status=not args.quiet, controller=controller,
                          leak_detector=detector, source=args.target, influx=args.influx,
                          broker_port=args.broker_port, mqtt_qos=args.mqtt_qos)
    broker = args.mqtt or f"embedded broker on mqtt://127.0.0.1:{args.broker_port}"
    print(f"serving {site.name}: Modbus TCP on {args.modbus}, MQTT {broker}, "
          f"speed {speed:g}x, run dir {out}", file=sys.stderr)
    summary = run_live(site, options, scenario)
    from rig.present.summary import kpi_table

    print(kpi_table(summary))
    pacing = summary.performance.pacing
    assert pacing is not None  # a live run always has one
    print(f"lateness p99 {pacing.lateness_p99_ms:.1f} ms, max {pacing.lateness_max_ms:.1f} ms")
    outcome = summary.scenario
    if outcome is None:
        return 0
    for v in outcome.verdicts:
        print(f"{v.verdict.upper():5}  {v.name}: {v.message}")
    print(f"report: {outcome.reports['html']}")
    return 0 if outcome.passed else 1


def cmd_points(args: argparse.Namespace) -> int:
    """Print the point list of a site: exactly the table a live run serves."""
    from rig.present.pointlist import main_points

    print(main_points(args.site, args.format))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """List the runs under a folder."""
    from rig.record.store import list_runs

    rows = list_runs(Path(args.root))
    if not rows:
        print(f"no runs under {args.root}")
    for r in rows:
        print("  ".join(f"{k}={v}" for k, v in r.items()))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print the KPIs and verdicts of a run."""
    from rig.record.store import show

    print(show(Path(args.run_dir)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a recorded run to InfluxDB (credentials from the environment)."""
    from rig.record.influx import InfluxTarget, export_run
    from rig.record.store import RunStore

    RunStore.open(Path(args.run_dir)).close()  # not a run: say so before trying the server
    target = InfluxTarget.from_url(args.influx, api=args.api, database=args.database,
                                   org=args.org)
    stats = export_run(Path(args.run_dir), target, restart=args.restart)
    print(f"exported to {args.influx}: {stats}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate scenario files."""
    from rig.config.scenario import load_scenario

    for path in args.files:
        loaded = load_scenario(path)
        s = loaded.scenario
        print(f"{path}: ok ({s.name}: {len(s.faults)} faults, {len(s.expect)} expectations,"
              f" site {s.site})")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of scenario (or site) files."""
    import json

    from rig.config.scenario import Scenario
    from twin.site import Site

    model = Site if args.kind == "site" else Scenario
    print(json.dumps(model.model_json_schema(), indent=2))
    return 0


def cmd_faults(args: argparse.Namespace) -> int:
    """List the fault catalog."""
    from rig.assess.faults import catalog_text

    print(catalog_text())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Reproduce a recorded run offline from its command log."""
    from rig.runtime.replay import replay

    out = Path(args.out or f"{args.run_dir.rstrip('/')}-replay")
    summary = replay(Path(args.run_dir), out)
    check = summary.replay
    assert check is not None and summary.record_hash is not None  # a replay has both
    same = "identical to" if check.identical else "DIFFERENT from"
    print(f"replay in {out}: record {same} the original "
          f"({summary.record_hash[:16]} vs {check.original_hash[:16]})")
    return 0 if check.identical else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = _Parser(
        prog="heatrig",
        description="Digital twin and HIL test rig for data-center cooling with heat recovery.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("sim", help="simulate a site offline as fast as possible")
    sim.add_argument("site", help="site file, or the name of a shipped site (e.g. "
                     "reference-1mw)")
    sim.add_argument("--duration", type=_duration, default=defaults.OFFLINE_DURATION_S,
                     help="simulated time, e.g. 24h, 90 min (default "
                     f"{defaults.OFFLINE_DURATION_S / 3600:g}h)")
    sim.add_argument("--out", help="run directory (default runs/<site>-offline)")
    sim.add_argument("--seed", type=_seed, default=defaults.DEFAULT_SEED,
                     help=f"random seed (default {defaults.DEFAULT_SEED})")
    sim.add_argument("--record-period", type=_duration, default=defaults.OFFLINE_RECORD_PERIOD_S,
                     help="recording period, e.g. 10s (default "
                     f"{defaults.OFFLINE_RECORD_PERIOD_S:g} s)")
    sim.add_argument("--step", type=_step, help="physics step up to 60 s, e.g. 60s for "
                     "long studies (default: the site's time_step; recording no faster)")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(func=cmd_sim)

    run = sub.add_parser("run", help="serve a site or a scenario live over Modbus and MQTT")
    run.add_argument("target", help="scenario file or name of a shipped example scenario, "
                     "site file or name of a shipped site")
    run.add_argument("--speed", type=_speed, help="simulated seconds per wall second "
                     f"(default: the scenario's, else {defaults.LIVE_SPEED:g})")
    run.add_argument("--duration", type=_duration, help="simulated time (default: the "
                     "scenario's, else until Ctrl-C)")
    run.add_argument("--modbus", type=_modbus_endpoint, default=defaults.MODBUS_ADDRESS,
                     help=f"Modbus TCP HOST:PORT (default {defaults.MODBUS_ADDRESS})")
    run.add_argument("--mqtt", type=_mqtt_url, help="broker URL mqtt://HOST:PORT (default: "
                     "an embedded broker on loopback)")
    run.add_argument("--broker-port", type=_port, default=1883,
                     help="port of the embedded broker on 127.0.0.1 when --mqtt is not given "
                     "(default 1883; 0 = any free port)")
    run.add_argument("--mqtt-qos", type=int, choices=(0, 1), default=defaults.MQTT_QOS,
                     help=f"QoS of telemetry and replies (default {defaults.MQTT_QOS})")
    run.add_argument("--out", help="run directory (default runs/<scenario or site>)")
    run.add_argument("--influx", type=_influx_url, help="forward to this InfluxDB while "
                     "running (nothing is lost if it goes away; secrets from HEATRIG_INFLUX_*)")
    run.add_argument("--seed", type=_seed, help="random seed")
    run.add_argument("--slice", type=_duration, default=defaults.SLICE_S,
                     help=f"wall time per slice (default {defaults.SLICE_S * 1000:g} ms)")
    run.add_argument("--policy", choices=("warn", "skip", "halt"), default="warn",
                     help="what to do when falling behind real time (default warn)")
    run.add_argument("--mode", choices=("realtime", "stepped", "lockstep"),
                     default="realtime",
                     help="stepped: time advances only when a controller writes rig.step; "
                     "lockstep: each slice (slice x speed of simulated time) is served as "
                     "soon as every system under test has answered the one before")
    run.add_argument("--no-sut", action="store_true",
                     help="do not start the scenario's reference systems")
    from rig.sut import CONTROLLER_VARIANTS, LEAK_DETECTOR_VARIANTS

    run.add_argument("--controller", choices=(*CONTROLLER_VARIANTS, "none"),
                     help="reference plant controller to start (overrides the scenario)")
    run.add_argument("--leak-detector", choices=(*LEAK_DETECTOR_VARIANTS, "none"),
                     help="reference leak detector to start (overrides the scenario)")
    run.add_argument("--quiet", action="store_true", help="no status line")
    run.set_defaults(func=cmd_run)

    points = sub.add_parser("points", help="list every point with its Modbus and MQTT address")
    points.add_argument("site", help="site file or name")
    points.add_argument("--format", choices=("csv", "json", "md"), default="md")
    points.set_defaults(func=cmd_points)

    runs = sub.add_parser("runs", help="list recorded runs")
    runs.add_argument("root", nargs="?", default="runs")
    runs.set_defaults(func=cmd_runs)

    show = sub.add_parser("show", help="print the KPIs and verdicts of a run")
    show.add_argument("run_dir")
    show.set_defaults(func=cmd_show)

    export = sub.add_parser("export", help="export a run to InfluxDB (nothing lost)")
    export.add_argument("run_dir")
    export.add_argument("--influx", required=True, type=_influx_url,
                        help="InfluxDB URL, e.g. http://127.0.0.1:8086 (influx1:// or "
                        "influx2:// to force the API); secrets from HEATRIG_INFLUX_*")
    export.add_argument("--api", choices=("v1", "v2"), help="write API (default: detected)")
    export.add_argument("--database", help="v1 database or v2 bucket (default heatrig)")
    export.add_argument("--org", help="v2 organisation")
    export.add_argument("--restart", action="store_true", help="ignore the checkpoint")
    export.set_defaults(func=cmd_export)

    check = sub.add_parser(
        "check", help="validate scenario files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Validate scenario files: YAML, fields, faults, expectations and the site they "
            "name (a shipped site or a site file next to the scenario)."),
        epilog=textwrap.fill("shipped example scenarios: " + ", ".join(_shipped("scenarios")),
                             break_on_hyphens=False))
    check.add_argument("files", nargs="+", metavar="SCENARIO",
                       help="scenario file, or the name of a shipped example (e.g. cdu-leak)")
    check.set_defaults(func=cmd_check)

    schema = sub.add_parser("schema", help="print the JSON Schema for editors")
    schema.add_argument("kind", nargs="?", choices=("scenario", "site"), default="scenario")
    schema.set_defaults(func=cmd_schema)

    faults = sub.add_parser("faults", help="list the fault catalog with parameters")
    faults.set_defaults(func=cmd_faults)

    rep = sub.add_parser("replay", help="reproduce a recorded run offline")
    rep.add_argument("run_dir")
    rep.add_argument("--out", help="where to write the replay (default RUN_DIR-replay)")
    rep.set_defaults(func=cmd_replay)
    return parser


_SCENARIO_KEYS = frozenset({"faults", "expect", "sut", "duration"})
_SITE_KEYS = frozenset({"racks", "cdus", "facility", "heat_pumps", "district"})


def _top_keys(path: str) -> frozenset[str]:
    """Top-level keys of a YAML file named on the command line (none if unreadable)."""
    from rig.config.yamlsafe import load_yaml

    file = Path(path)
    if not file.is_file():
        return frozenset()
    try:
        data = load_yaml(file).data
    except ConfigError:  # the command itself reports it
        return frozenset()
    return frozenset(data) if isinstance(data, dict) else frozenset()


def _check_inputs(args: argparse.Namespace) -> None:
    """Refuse a scenario where a site is expected and the other way round."""
    if args.command in ("sim", "points") and _top_keys(args.site) & _SCENARIO_KEYS:
        raise ConfigError(f"{args.site}: this is a scenario file; 'heatrig {args.command}' "
                          f"takes a site file or name (serve a scenario with 'heatrig run "
                          f"{args.site}')")
    if args.command == "check":
        for path in args.files:
            keys = _top_keys(path)
            if keys & _SITE_KEYS and not keys & _SCENARIO_KEYS:
                raise ConfigError(f"{path}: this is a site file; 'heatrig check' validates "
                                  f"scenario files (check a site with 'heatrig points {path}')")


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def error_lines(exc: BaseException) -> list[str]:
    """What the CLI prints for an error a user can act on: one line per problem."""
    if isinstance(exc, ConfigError):
        lines = [_one_line(problem) for problem in exc.problems]
    elif isinstance(exc, OSError) and exc.filename is not None:
        what = exc.strerror or str(exc)
        files = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
        lines = [f"{files}: {what}"]
    else:
        lines = [_one_line(str(exc))]
    return [PREFIX + line for line in lines if line] or [PREFIX + type(exc).__name__]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `heatrig` console script.

    A mistake in the input (command line, site or scenario file, a run folder, a file that
    cannot be read or written) exits 2 with ``heatrig: error: ...`` lines, one per problem;
    an unexpected exception is a bug and keeps its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("amqtt", "transitions", "pymodbus"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _check_inputs(args)
        return func(args)
    except HeatrigError as exc:
        log.debug("the error in full", exc_info=True)
        print("\n".join(error_lines(exc)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("heatrig: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except OSError as exc:  # a path given on the command line cannot be read or written
        log.debug("the error in full", exc_info=True)
        print("\n".join(error_lines(exc)), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
