"""Every kind of user mistake, fed through the `heatrig` command line in a subprocess.

Each must end with exit code 2 and ``heatrig: error: ...`` lines on stderr, one per
problem, naming the file, line and field where there is one, and never a traceback.
Files are written to ``tmp_path`` and the commands run there, so messages name them by
their relative path. `run` mistakes are ones that fail before anything is served.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rig.config.sites import site_path

PREFIX = "heatrig: error: "
SITE_TEXT = site_path("reference-1mw").read_text(encoding="utf-8")

# A valid scenario; each scenario case changes one thing in it.
SCENARIO_TEXT = """\
name: cli-check
site: reference-1mw
duration: 10 min
faults:
  - id: leak1
    kind: leak
    target: cdu2.rack04
    at: 1 min
    rate: 0.2 kg/s
expect:
  - name: reservoir stays up
    kind: condition
    after: leak1
    point: cdu2.reservoir_level
    op: ">="
    value: 0.1
"""


def heatrig(*args: str, cwd: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``heatrig ARGS`` in ``cwd`` as a user would, capturing its output."""
    return subprocess.run([sys.executable, "-m", "rig.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, check=False)


def line_of(text: str, fragment: str) -> int:
    """1-based number of the one line of ``text`` that contains ``fragment``."""
    numbers = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(numbers) == 1, f"{fragment!r} is on lines {numbers}"
    return numbers[0]


def edit(text: str, old: str, new: str) -> str:
    """``text`` with the one occurrence of ``old`` replaced by ``new``."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


@dataclass(frozen=True)
class Mistake:
    """A command with one kind of mistake and what its error lines must say."""

    args: tuple[str, ...]
    expected: tuple[str, ...]  # fragments, each in its own line of stderr, in order
    files: Callable[[Path], None] = lambda tmp: None  # writes the input files


def site_file(name: str, text: str) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        (tmp / name).write_text(text, encoding="utf-8")
    return write


def scenario_files(text: str, extra: dict[str, str] | None = None) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        (tmp / "scen").mkdir()
        (tmp / "scen" / "s.yaml").write_text(text, encoding="utf-8")
        for name, body in (extra or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(body, encoding="utf-8")
    return write


def site_case(old: str, new: str, *expected: str) -> Mistake:
    """A site file with ``old`` replaced by ``new``; ``{line}`` is the line of ``new``."""
    text = edit(SITE_TEXT, old, new)
    line = line_of(text, new.splitlines()[-1])
    return Mistake(("points", "site.yaml"), tuple(e.format(line=line) for e in expected),
                   site_file("site.yaml", text))


def scenario_case(old: str, new: str, *expected: str, command: str = "check",
                  extra: dict[str, str] | None = None) -> Mistake:
    """The scenario with ``old`` replaced by ``new``; ``{line}`` is the line of ``new``."""
    text = edit(SCENARIO_TEXT, old, new)
    line = line_of(text, new.splitlines()[-1]) if new else 0
    args = (command, "scen/s.yaml", *(("--out", "out") if command == "run" else ()))
    return Mistake(args, tuple(e.format(line=line) for e in expected),
                   scenario_files(text, extra))


def run_dir_folder(tmp: Path) -> None:
    (tmp / "notarun").mkdir()
    (tmp / "notarun" / "notes.txt").write_text("not a run\n")


def offline_run(tmp: Path) -> None:
    done = heatrig("sim", "reference-1mw", "--duration", "10 s", "--quiet", "--out", "day",
                   cwd=tmp)
    assert done.returncode == 0, done.stderr


MISTAKES: dict[str, Mistake] = {
    # ---------------------------------------------------------------- sites
    "unknown site name": Mistake(
        ("sim", "no-such-site"),
        ("no-such-site: no such site file (known sites: ",)),
    "site bad unit": site_case(
        "max_power: 25 kW", "max_power: 25 parsecs",
        "site.yaml:{line}: racks.max_power: expected a power such as"),
    "site unknown key": site_case(
        "  per_cdu: 10\n", "  per_cdu: 10\n  colour: red\n",
        "site.yaml:{line}: racks.colour: unknown key 'colour' (allowed: per_cdu,"),
    "site out of range": site_case(
        "idle_fraction: 0.3", "idle_fraction: 3.5",
        "site.yaml:{line}: racks.idle_fraction: must be <= "),
    "site wrong type": site_case(
        "per_cdu: 10", "per_cdu: ten",
        "site.yaml:{line}: racks.per_cdu: expected an integer (got 'ten')"),
    "site yaml syntax": site_case(
        "\nracks:\n", "\nracks: [oops\n  per_cdu: 3\n",
        "site.yaml:{line}:10: YAML syntax error: did not find expected ',' or ']'"),
    "site two problems": site_case(
        "  per_cdu: 10\n  max_power: 25 kW\n", "  per_cdu: ten\n  max_power: 25 parsecs\n",
        "racks.per_cdu: expected an integer", "site.yaml:{line}: racks.max_power: "),
    "site duplicate unit ids": site_case(
        "  mqtt_prefix: heatrig\n", "  mqtt_prefix: heatrig\n  unit_ids: {cdu1: 3, cdu2: 3}\n",
        "site.yaml:{line}: protocols.unit_ids: unit id 3 given to both cdu1 and cdu2"),
    "site not a mapping": Mistake(
        ("points", "list.yaml"), ("list.yaml:1: expected a mapping",),
        site_file("list.yaml", "- racks\n- cdus\n")),
    "site empty file": Mistake(
        ("sim", "empty.yaml"), ("empty.yaml:1: the file is empty",),
        site_file("empty.yaml", "")),
    "sim of a scenario": Mistake(
        ("sim", "scen/s.yaml"), ("scen/s.yaml: this is a scenario file; 'heatrig sim' takes",),
        scenario_files(SCENARIO_TEXT)),
    "check of a site": Mistake(
        ("check", "site.yaml"), ("site.yaml: this is a site file; 'heatrig check' validates",),
        site_file("site.yaml", SITE_TEXT)),
    # ---------------------------------------------------------------- scenarios
    "scenario unknown fault kind": scenario_case(
        "kind: leak", "kind: meteor",
        "scen/s.yaml:{line}: faults[0].kind: unknown kind 'meteor' (allowed: leak, "),
    "scenario unknown target": scenario_case(
        "target: cdu2.rack04", "target: cdu9.rack04",
        "scen/s.yaml:{line}: faults[0].target: cdu9.rack04: no such CDU"),
    "scenario unknown point": scenario_case(
        "point: cdu2.reservoir_level", "point: cdu2.reservoir_levle",
        "scen/s.yaml:{line}: expect[0].point: no such point 'cdu2.reservoir_levle'"),
    "scenario bad duration": scenario_case(
        "duration: 10 min", "duration: 10 parsecs",
        "scen/s.yaml:{line}: duration: expected a duration such as"),
    "scenario missing field": scenario_case(
        "name: cli-check\n", "",
        "scen/s.yaml:1: name: missing required field"),
    "scenario missing field, run": scenario_case(
        "name: cli-check\n", "", "scen/s.yaml:1: name: missing required field",
        command="run"),
    "scenario include outside its folder": scenario_case(
        "duration: 10 min\n", "duration: 10 min\ninclude: [../more/faults.yaml]\n",
        "scen/s.yaml:{line}: include[0]: include '../more/faults.yaml' resolves to ",
        extra={"more/faults.yaml": "faults: []\n"}),
    "scenario unknown site, run": scenario_case(
        "site: reference-1mw", "site: nowhere-1mw",
        "scen/s.yaml:{line}: site: no site named 'nowhere-1mw'", command="run"),
    # ---------------------------------------------------------------- files and folders
    "missing scenario file": Mistake(("check", "nothere.yaml"),
                                     ("nothere.yaml: no such scenario file",)),
    "missing site file": Mistake(("sim", "nothere.yaml"), ("nothere.yaml: no such site file",)),
    "folder instead of a scenario file": Mistake(("check", "."), (".:1: not a regular file",)),
    "folder instead of a site file": Mistake(
        ("points", "data/site.yaml"), ("data/site.yaml:1: not a regular file",),
        lambda tmp: (tmp / "data" / "site.yaml").mkdir(parents=True)),
    "show of a folder that is not a run": Mistake(
        ("show", "notarun"), ("notarun: not a run directory",), run_dir_folder),
    "replay of a folder that is not a run": Mistake(
        ("replay", "notarun"), ("notarun: not a run directory",), run_dir_folder),
    "replay onto the run itself": Mistake(
        ("replay", "notarun", "--out", "notarun/"),
        ("--out notarun: the replay would overwrite the run it replays",), run_dir_folder),
    "replay of an offline run": Mistake(
        ("replay", "day"), ("day: an offline run; replay reproduces live runs",), offline_run),
    "export of a folder that is not a run": Mistake(
        ("export", "notarun", "--influx", "http://127.0.0.1:9"),
        ("notarun: not a run directory",), run_dir_folder),
    "out is a file": Mistake(
        ("sim", "reference-1mw", "--duration", "10 s", "--quiet", "--out", "taken"),
        ("taken: File exists",), site_file("taken", "a file\n")),
    # ---------------------------------------------------------------- command line
    "points unknown format": Mistake(
        ("points", "reference-1mw", "--format", "xml"),
        ("argument --format: invalid choice: 'xml'",)),
    "negative duration": Mistake(
        ("sim", "reference-1mw", "--duration", "-1h"),
        ("argument --duration: duration must be positive, got '-1h'",)),
    "duration with an unknown unit": Mistake(
        ("sim", "reference-1mw", "--duration", "3 parsecs"),
        ("argument --duration: expected a duration such as",)),
    "duration in two words": Mistake(
        ("sim", "reference-1mw", "--duration", "3", "parsecs"),
        ("unrecognized arguments: parsecs; quote a value that has spaces",)),
    "modbus not an address": Mistake(
        ("run", "reference-1mw", "--modbus", "notaport", "--out", "out"),
        ("argument --modbus: expected HOST:PORT such as 127.0.0.1:5020, got 'notaport'",)),
    "modbus port out of range": Mistake(
        ("run", "reference-1mw", "--modbus", "127.0.0.1:99999", "--out", "out"),
        ("argument --modbus: modbus address '127.0.0.1:99999': port must be 0..65535",)),
    "mqtt not a broker url": Mistake(
        ("run", "reference-1mw", "--mqtt", "foo", "--out", "out"),
        ("argument --mqtt: mqtt url 'foo': scheme must be mqtt:// or mqtts://",)),
    "broker port out of range": Mistake(
        ("run", "reference-1mw", "--broker-port", "99999", "--out", "out"),
        ("argument --broker-port: expected a port 0..65535, got '99999'",)),
    "speed not positive": Mistake(
        ("run", "reference-1mw", "--speed", "-1", "--out", "out"),
        ("argument --speed: must be a number > 0",)),
    "run influx not a url": Mistake(
        ("run", "reference-1mw", "--influx", "foo", "--out", "out"),
        ("argument --influx: InfluxDB URL 'foo': expected http(s)://HOST:PORT",)),
    "export influx not a url": Mistake(
        ("export", "notarun", "--influx", "foo"),
        ("argument --influx: InfluxDB URL 'foo': expected http(s)://HOST:PORT",),
        run_dir_folder),
    "unknown command": Mistake(("simulate", "reference-1mw"),
                               ("argument command: invalid choice: 'simulate'",)),
    "no command": Mistake((), ("the following arguments are required: command",)),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_mistake_is_one_error_line_per_problem(name: str, tmp_path: Path) -> None:
    mistake = MISTAKES[name]
    mistake.files(tmp_path)
    result = heatrig(*mistake.args, cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(mistake.expected), result.stderr
    for line, fragment in zip(lines, mistake.expected, strict=True):
        assert line.startswith(PREFIX), line
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert result.stdout == ""
    assert not (tmp_path / "out").exists(), "a refused run must not start"


def test_the_valid_inputs_of_the_mistakes_are_accepted(tmp_path: Path) -> None:
    """The unchanged scenario and site pass, so each mistake above is the one change."""
    scenario_files(SCENARIO_TEXT)(tmp_path)
    site_file("site.yaml", SITE_TEXT)(tmp_path)
    check = heatrig("check", "scen/s.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("scen/s.yaml: ok (cli-check: 1 faults, 1 expectations")
    points = heatrig("points", "site.yaml", "--format", "csv", cwd=tmp_path)
    assert points.returncode == 0, points.stderr
    assert re.search(r"^cdu1\.supply_temp,", points.stdout, re.MULTILINE)


def test_a_bug_still_shows_its_traceback(tmp_path: Path) -> None:
    """An unexpected exception is not dressed up as a user mistake."""
    code = ("import sys, rig.cli\n"
            "def broken(args):\n"
            "    raise ZeroDivisionError('a bug')\n"
            "rig.cli.cmd_faults = broken\n"
            "sys.exit(rig.cli.main(['faults']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, text=True,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError: a bug" in result.stderr
    assert PREFIX not in result.stderr


def test_verbose_adds_the_traceback_of_a_mistake_for_a_report(tmp_path: Path) -> None:
    result = heatrig("-v", "sim", "no-such-site", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"{PREFIX}no-such-site: no such site")
