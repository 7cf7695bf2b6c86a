"""Whose job is it: sequences a scenario gives to the SUT are off in the twin; the defect
variants of the reference systems do what their names say (offline, no I/O)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rig.build import build_plan
from rig.config.scenario import load_scenario
from rig.config.sites import load_site
from rig.present.pointlist import render
from rig.sut.controller import PlantLogic, Settings
from rig.sut.leak_detector import DetectorSettings, LeakDetector
from rig.sut.pointmap import PointMap
from twin.plant import Twin
from twin.site import Site

ROOT = Path(__file__).resolve().parent.parent


def site(*owns: str) -> Site:
    return load_site("reference-1mw").model_copy(update={"sut_owns": owns})


def test_an_owned_standby_pump_is_started_by_nobody_but_the_sut() -> None:
    flows = {}
    for owns in ((), ("standby_pump",)):
        tw = Twin(site(*owns))
        tw.run_until(120.0)
        assert tw.hydraulics.pumps[1].running is not bool(owns)
        tw.hydraulics.pumps[0].tripped = True
        tw.run_until(400.0)
        flows[owns] = tw.hydraulics.flow
    assert flows[()] > 6.0  # the other pump runs anyway and hides a missing standby start
    assert flows[("standby_pump",)] == 0.0


def test_an_owned_heat_pump_standby_is_not_replaced_by_the_staging() -> None:
    running = {}
    for owns in ((), ("heatpump_standby",)):
        tw = Twin(site(*owns))
        tw.heat_pumps[0].forced_trip = True  # hp1 trips as soon as it starts
        tw.run_until(900.0)
        assert tw.heat_pumps[0].tripped
        running[owns] = tw.heat_pumps[1].running
    assert running == {(): True, ("heatpump_standby",): False}


def test_the_scenario_sets_the_site_option_and_the_manifest_keeps_it() -> None:
    loaded = load_scenario(ROOT / "scenarios" / "facility-pump-trip.yaml")
    assert loaded.scenario.sut.owns == ["standby_pump"]
    assert loaded.site.sut_owns == ("standby_pump",)
    assert loaded.site.model_dump(mode="json")["sut_owns"] == ["standby_pump"]  # manifest
    tw = build_plan(loaded.site).twin
    assert tw.hydraulics.pumps[-1].enable.auto == 0.0


def point_map(tmp_path: Path) -> PointMap:
    path = tmp_path / "points.json"
    path.write_text(render(build_plan(site()).point_list(), "json"))
    return PointMap.load(path)


def reset_times(variant: str, pm: PointMap) -> list[float]:
    """Times (s) the controller pulses hp1.reset while hp1 stays tripped from t = 100 s."""
    logic = PlantLogic(pm, Settings(variant=variant))
    times = []
    for k in range(0, 1000, 2):
        v = dict.fromkeys(logic.needs(), 0.0) | logic.hold
        v.update({"hp1.running": 1.0 if k < 100 else 0.0, "hp2.running": 1.0,
                  "hp1.trip.compressor": 1.0 if k >= 100 else 0.0,
                  "facility.pump1.enable": 1.0, "facility.pump2.enable": 1.0})
        for action in logic.step(float(k), v):
            times += [float(k) for pid, _ in action.writes if pid == "hp1.reset"]
    return times


def test_reset_loop_resets_again_and_again_the_reference_once(tmp_path: Path) -> None:
    pm = point_map(tmp_path)
    assert reset_times("reference", pm) == [400.0]  # after the anti-short-cycle time
    loop = reset_times("reset-loop", pm)
    assert loop[0] == 100.0 and len(loop) >= 150
    assert max(np.diff(loop)) <= 6.0


def test_no_standby_leaves_the_standby_pump_off(tmp_path: Path) -> None:
    pm = point_map(tmp_path)
    writes = {}
    for variant in ("reference", "no-standby"):
        logic = PlantLogic(pm, Settings(variant=variant))
        got = []
        for k in range(0, 60, 2):
            v = dict.fromkeys(logic.needs(), 0.0) | logic.hold
            v.update({"facility.pump1.enable": 1.0, "facility.pump1.running": float(k < 20),
                      "facility.pump1.trip": float(k >= 20)})
            got += [w for a in logic.step(float(k), v) for w in a.writes
                    if w[0].startswith("facility.")]
        writes[variant] = got
    assert writes["reference"] == [("facility.pump2.enable", 1.0),
                                   ("facility.pump2.enable.hand", 1.0)]
    assert writes["no-standby"] == []


def test_alarm_flood_repeats_the_alarm_with_every_message() -> None:
    alarms = {}
    for variant in ("reference", "alarm-flood"):
        det = LeakDetector(DetectorSettings(variant=variant))
        got = []
        for k in range(30):
            got += det.telemetry("cdu2", {"t": float(k), "values": {
                "cdu2.reservoir_level": 0.5, "cdu2.makeup_flow": 0.0,
                "cdu2.rack04.leak": float(k >= 10)}})
        alarms[variant] = got
    assert [a["alarm"] for a in alarms["reference"]] == ["leak"]
    assert alarms["reference"][0]["location"] == "cdu2.rack04"
    assert len(alarms["alarm-flood"]) == 20
    assert all(a == {**alarms["reference"][0], "t": a["t"], "rate_kg_s": a["rate_kg_s"]}
               for a in alarms["alarm-flood"])


def test_every_variant_is_selectable_on_the_command_line_and_in_a_scenario() -> None:
    from rig.cli import build_parser
    from rig.config.scenario import SystemsUnderTest
    from rig.sut import CONTROLLER_VARIANTS, LEAK_DETECTOR_VARIANTS, controller, leak_detector

    parser = build_parser()
    for variant in CONTROLLER_VARIANTS:
        args = parser.parse_args(["run", "cdu-leak", "--controller", variant])
        assert args.controller == variant
        assert SystemsUnderTest(controller=variant).controller == variant
        assert controller.parse_args(["--modbus", "h:1", "--points", "p",
                                      "--variant", variant]).variant == variant
    for variant in LEAK_DETECTOR_VARIANTS:
        args = parser.parse_args(["run", "cdu-leak", "--leak-detector", variant])
        assert args.leak_detector == variant
        assert SystemsUnderTest(leak_detector=variant).leak_detector == variant
        assert leak_detector.parse_args(["--mqtt", "mqtt://h", "--prefix", "p", "--site", "s",
                                         "--variant", variant]).variant == variant
    assert {"reset-loop", "no-standby"} <= set(CONTROLLER_VARIANTS)
    assert "alarm-flood" in LEAK_DETECTOR_VARIANTS
