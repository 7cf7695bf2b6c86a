"""The scenario library: every scenario validates and passes live with the reference
systems; each broken reference variant fails exactly the expectations it should; a live
scenario run replays identically; malformed scenario files get specific errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from rig.config.scenario import load_scenario
from rig.runtime.replay import replay
from twin.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


def run_scenario(path: Path, out: Path, *extra: str) -> tuple[int, dict]:
    """``heatrig run`` exactly as a user types it; returns exit code and summary."""
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "run", str(path), "--modbus", "127.0.0.1:0",
         "--broker-port", "0",
         "--out", str(out), "--quiet", *extra], cwd=ROOT, capture_output=True, text=True,
        timeout=600)
    summary_path = out / "summary.json"
    assert summary_path.exists(), proc.stderr[-3000:]
    return proc.returncode, json.loads(summary_path.read_text())


def test_the_library_has_the_scenarios_the_rig_promises() -> None:
    names = {p.stem for p in SCENARIOS}
    assert len(names) >= 10
    assert {"baseline-day", "cdu-leak", "slow-leak", "compressor-trip", "facility-pump-trip",
            "summer-demand-loss", "heat-wave", "stuck-sensor", "controller-comm-loss",
            "broker-loss", "it-load-step", "hp-trip-again"} <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_validates(path: Path) -> None:
    loaded = load_scenario(path)
    assert loaded.scenario.name == path.stem
    assert loaded.scenario.expect


@pytest.mark.slow
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_passes_with_the_reference_systems(path: Path, tmp_path: Path) -> None:
    code, summary = run_scenario(path, tmp_path / path.stem)
    failed = [v for v in summary["verdicts"] if v["verdict"] != "pass"]
    assert code == 0 and summary["passed"], failed
    assert (tmp_path / path.stem / "report.html").exists()
    assert (tmp_path / path.stem / "junit.xml").exists()
    if path.stem == "cdu-leak":  # a live run with faults and a controller replays exactly
        again = replay(tmp_path / path.stem, tmp_path / "replay")
        assert again.replay is not None and again.replay.identical


BROKEN = [
    ("cdu-leak", ["--controller", "no-isolate"],
     {"controller isolates cdu2", "cdu2 reservoir never runs low"}),
    ("slow-leak", ["--leak-detector", "high-threshold"],
     {"leak detector finds the slow leak"}),
    ("cdu-leak", ["--leak-detector", "alarm-flood", "--speed", "15", "--duration", "8 min"],
     {"no alarm flood"}),
    ("hp-trip-again", ["--controller", "reset-loop"],
     {"no reset of hp1 before the anti-short-cycle time", "standby before the reset"}),
    ("facility-pump-trip", ["--controller", "no-standby", "--mode", "lockstep"],
     {"controller starts standby pump2", "pump2 running within 2 min",
      "facility flow above 6 kg/s from 2 min after the trip",
      "rack coolant supply stays within 45 degC"}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "args", "expected"), BROKEN, ids=[b[1][1] for b in BROKEN])
def test_broken_variant_fails_exactly_what_it_should(name: str, args: list[str],
                                                     expected: set[str],
                                                     tmp_path: Path) -> None:
    code, summary = run_scenario(ROOT / "scenarios" / f"{name}.yaml", tmp_path / name, *args)
    assert code == 1
    failed = {v["name"] for v in summary["verdicts"] if v["verdict"] != "pass"}
    assert failed == expected
    for v in summary["verdicts"]:
        if v["name"] in expected:
            assert v["verdict"] == "fail" and v["evidence"], v


GOOD = """name: probe
duration: 10 min
faults:
  - id: leak1
    kind: leak
    target: cdu1
    at: 1 min
    rate: 0.1 kg/s
expect:
  - name: level
    kind: condition
    after: leak1
    point: cdu1.reservoir_level
    op: ">="
    value: 0.1
    mode: always
"""

MALFORMED = {
    "bad unit": (GOOD.replace("0.1 kg/s", "0.1 kW"), ["faults[0].rate", "mass flow"]),
    "unknown fault": (GOOD.replace("kind: leak", "kind: meltdown"), ["faults[0]", "meltdown",
                                                                   "leak"]),
    "unknown target": (GOOD.replace("target: cdu1", "target: cdu9"),
                       ["faults[0].target", "cdu9", "no such CDU"]),
    "missing field": (GOOD.replace("    rate: 0.1 kg/s\n", ""), ["faults[0].rate",
                                                              "missing required field"]),
    "negative duration": (GOOD.replace("duration: 10 min", "duration: -5 min"),
                          ["duration", "must be >"]),
    "python tag": (GOOD.replace("name: probe", "name: !!python/object/apply:os.system [ls]"),
                   ["tag", "not allowed"]),
    "custom tag": (GOOD + "include: [!include x.yaml]\n", ["tag", "not allowed"]),
    "alias bomb": ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip(
            "abcdefgh", "bcdefghi", strict=True)) + GOOD, ["after expanding aliases"]),
    "include escaping": (GOOD + "include: [../../etc/passwd]\n", ["outside"]),
    "absolute include": (GOOD + "include: [/etc/passwd]\n", ["include"]),
    "duplicate fault id": (GOOD.replace("expect:", """  - id: leak1
    kind: pump_trip
    target: cdu2
    at: 2 min
expect:"""), ["duplicate fault id 'leak1'"]),
    "unknown anchor": (GOOD.replace("after: leak1", "after: leak2"),
                       ["expect[0].after", "no fault 'leak2'"]),
    "unknown point": (GOOD.replace("point: cdu1.reservoir_level", "point: cdu1.nothing"),
                      ["expect[0].point", "no such point"]),
    "onset after end": (GOOD.replace("at: 1 min", "at: 20 min"), ["faults[0].at", "before the"
                                                                  " end"]),
    "unknown key": (GOOD + "speed_up: 3\n", ["unknown key 'speed_up'"]),
    "bad site override": (GOOD + "site_overrides:\n  heat_pumps:\n    refrigerant: R290\n",
                          ["heat_pumps.refrigerant", "R290"]),
    "unknown site": (GOOD + "site: nowhere\n", ["no site named 'nowhere'"]),
    "bad expectation op": (GOOD.replace('op: ">="', 'op: "=>"'), ["expect[0].op"]),
    "not a mapping": ("- just\n- a list\n", ["expected a mapping"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED), ids=lambda c: c.replace(" ", "-"))
def test_malformed_scenario_gets_its_specific_error(case: str, tmp_path: Path) -> None:
    text, fragments = MALFORMED[case]
    folder = tmp_path / "scenarios"
    folder.mkdir()
    path = folder / "probe.yaml"
    path.write_text(text)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert elapsed < 5.0
    assert peak < 200 * 2**20


def test_oversized_scenario_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(GOOD + "# " + "x" * (300 * 1024) + "\n")
    with pytest.raises(ConfigError, match="bytes"):
        load_scenario(path)


def test_include_inside_the_folder_adds_faults_and_expectations(tmp_path: Path) -> None:
    (tmp_path / "common.yaml").write_text("""faults:
  - id: trip
    kind: compressor_trip
    target: hp1
    at: 2 min
expect:
  - name: pue ok
    kind: kpi
    kpi: pue
    op: "<="
    value: 1.5
""")
    path = tmp_path / "s.yaml"
    path.write_text(GOOD + "include: [common.yaml]\n")
    s = load_scenario(path).scenario
    assert [f.id for f in s.faults] == ["leak1", "trip"]
    assert [e.name for e in s.expect] == ["level", "pue ok"]
