"""Expectation kinds count, rate, sequence, alive and ``mode: never``, and ``time_to_s``,
on a synthetic run store: a heat pump reset too early and too often, an alarm flood, a
heartbeat that stops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from rig.assess.expect import Expectation, Verdict, evaluate, record_mqtt
from rig.config.loader import validate_data
from rig.record.store import RunStore
from twin.errors import ConfigError

POINTS = [
    {"id": "hp1.reset", "kind": "command", "type": "bool", "unit": "1"},
    {"id": "hp2.enable", "kind": "command", "type": "bool", "unit": "1"},
    {"id": "cdu1.heartbeat", "kind": "command", "type": "int", "unit": "1"},
]
END = 1800.0
TRIP = 600.0
ALARMS = "sut/det/alarm"
BEATS = "sut/det/heartbeat"
RESETS = [605.0, 610.0, 1000.0]  # two too close to the trip and to each other
FLOOD = [700.0 + 5.0 * k for k in range(20)]  # 20 alarms 5 s apart: 12 in any minute
BEAT_STOP = 1200.0  # the heartbeat counter freezes here


def fill(store: RunStore) -> None:
    beat = 0.0
    for k in range(int(END) + 1):
        t = float(k)
        if t < BEAT_STOP and k % 10 == 0:
            beat += 1.0
        values = np.array([0.0, 1.0 if t >= 602 else 0.0, beat])
        store.write_sample(t, values, values.copy())
    store.write_event(TRIP, "hp1", "fault", "trip onset: compressor trip")
    store.write_command(602.0, "hp2.enable", 1.0, "modbus")
    for t in RESETS:
        store.write_command(t, "hp1.reset", 1.0, "modbus")
    store.write_command(1100.0, "hp1.reset", 0.0, "modbus")  # not a reset pulse
    for t in FLOOD:
        record_mqtt(store, t, ALARMS, f'{{"alarm": "leak", "device": "cdu2", "t": {t}}}')
    record_mqtt(store, 1500.0, ALARMS, '{"alarm": "clear", "device": "cdu2"}')
    for t in np.arange(0.0, 900.0, 20.0):
        record_mqtt(store, float(t), BEATS, "{}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kinds") / "run"
    with RunStore.create(path, {"site": "unit", "scenario": "kinds", "seed": 1}, POINTS) as s:
        fill(s)
    return path


@pytest.fixture
def store(run_dir: Path) -> Iterator[RunStore]:
    with RunStore.open(run_dir) as s:
        yield s


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expect: list[Expectation]


def check(store: RunStore, spec: dict[str, Any]) -> Verdict:
    exp = validate_data({"expect": [{"name": "x", **spec}]}, Doc).expect[0]
    (verdict,) = evaluate([exp], store, {"trip": TRIP}, END)
    return verdict


RESET = {"point": "hp1.reset", "value": 1}


def test_count_bounds(store: RunStore) -> None:
    v = check(store, {"kind": "count", **RESET, "at_most": 2})
    assert v.verdict == "fail" and v.evidence["count"] == 3
    assert v.evidence["times"] == RESETS and "wanted at most 2" in v.message
    v = check(store, {"kind": "count", **RESET, "at_most": 3, "at_least": 3})
    assert v.passed and v.evidence["time_to_s"] == RESETS[2]  # the third, from t = 0
    v = check(store, {"kind": "count", **RESET, "exactly": 2, "after": "trip", "within": 300})
    assert v.passed and v.evidence["time_to_s"] == RESETS[1] - TRIP  # the second
    assert check(store, {"kind": "count", "point": "hp1.reset", "at_least": 4}).passed  # any
    v = check(store, {"kind": "count", "topic": ALARMS, "payload": {"alarm": "clear"},
                      "exactly": 1})
    assert v.passed and v.evidence["times"] == [1500.0]


def test_count_spacing_names_the_closest_pair(store: RunStore) -> None:
    v = check(store, {"kind": "count", **RESET, "at_most": 5, "min_spacing": "5 min"})
    assert v.verdict == "fail" and v.evidence["min_spacing_s"] == 5.0
    assert (v.evidence["previous_t"], v.evidence["t"]) == (605.0, 610.0)
    v = check(store, {"kind": "count", **RESET, "at_most": 5, "min_spacing": "5 min",
                      "after": "trip", "delay": 20})  # only the reset at 1000 s is left
    assert v.passed


def test_never_on_writes_and_messages(store: RunStore) -> None:
    v = check(store, {"kind": "modbus_write", "mode": "never", **RESET, "after": "trip",
                      "within": "5 min"})
    assert v.verdict == "fail" and v.evidence["t"] == 605.0
    assert v.evidence["violations"] == 2 and v.evidence["time_to_s"] is None
    assert check(store, {"kind": "modbus_write", "mode": "never", **RESET, "after": "trip",
                         "delay": 20, "within": 300}).passed
    v = check(store, {"kind": "mqtt", "mode": "never", "topic": ALARMS,
                      "payload": {"device": "cdu1"}})
    assert v.passed and v.evidence["messages_on_topic"] == len(FLOOD) + 1
    v = check(store, {"kind": "mqtt", "mode": "never", "topic": "sut/+/alarm",
                      "payload": {"device": "cdu2"}})
    assert v.verdict == "fail" and v.evidence["t"] == FLOOD[0]


def test_rate_catches_the_flood(store: RunStore) -> None:
    v = check(store, {"kind": "rate", "topic": ALARMS, "at_most": 2, "per": "1 min"})
    assert v.verdict == "fail" and v.evidence["max_in_window"] == 12
    assert v.evidence["t"] == FLOOD[0]
    v = check(store, {"kind": "rate", "topic": ALARMS, "at_most": 12})
    assert v.passed and v.evidence["time_to_s"] == FLOOD[0]
    v = check(store, {"kind": "rate", "topic": ALARMS, "at_most": 1, "per": "4 s"})
    assert v.passed and v.evidence["max_in_window"] == 1  # 5 s apart: never 2 in 4 s
    assert check(store, {"kind": "rate", **RESET, "at_most": 1, "per": 4}).passed
    assert check(store, {"kind": "rate", **RESET, "at_most": 1, "per": 6}).verdict == "fail"


def test_sequence_order_and_gap(store: RunStore) -> None:
    base = {"kind": "sequence", "after": "trip", "first": {"point": "hp2.enable", "value": 1},
            "then": RESET}
    v = check(store, base)
    assert v.passed and v.evidence["gap_s"] == 3.0 and v.evidence["time_to_s"] == 5.0
    v = check(store, {**base, "min_gap": "4 min"})
    assert v.verdict == "fail" and "only 3 s after" in v.message
    v = check(store, {**base, "first": RESET, "then": {"point": "hp2.enable", "value": 1}})
    assert v.verdict == "fail" and "before" in v.message and v.evidence["gap_s"] == -3.0
    v = check(store, {**base, "then": {"topic": ALARMS}, "max_gap": 60})
    assert v.verdict == "fail" and v.evidence["gap_s"] == FLOOD[0] - 602.0
    v = check(store, {**base, "then": {"topic": "sut/none"}})
    assert v.verdict == "fail" and v.evidence["then_count"] == 0


def test_alive_on_a_heartbeat_point_and_on_messages(store: RunStore) -> None:
    v = check(store, {"kind": "alive", "point": "cdu1.heartbeat", "max_gap": 30})
    assert v.verdict == "fail" and v.evidence["gap_from"] == 1190.0
    assert v.evidence["gap_to"] == END and "end of the window" in v.message
    v = check(store, {"kind": "alive", "point": "cdu1.heartbeat", "max_gap": 30,
                      "within": 1000})
    assert v.passed and v.evidence["max_gap_s"] == 10.0 and v.evidence["time_to_s"] == 10.0
    v = check(store, {"kind": "alive", "topic": BEATS, "max_gap": "1 min", "after": "trip"})
    assert v.verdict == "fail" and v.evidence["gap_from"] == 880.0
    assert v.evidence["signs"] == 15  # 600, 620 .. 880 s
    assert check(store, {"kind": "alive", "topic": BEATS, "max_gap": "1 min",
                         "within": 800}).passed
    v = check(store, {"kind": "alive", "topic": "sut/none", "max_gap": 60, "within": 30})
    assert v.passed and v.evidence["signs"] == 0 and v.evidence["time_to_s"] is None


def test_every_windowed_verdict_has_time_to(store: RunStore) -> None:
    v = check(store, {"kind": "condition", "point": "hp2.enable", "op": ">=", "value": 1,
                      "mode": "eventually", "after": "trip"})
    assert v.passed and v.evidence["time_to_s"] == 2.0
    v = check(store, {"kind": "modbus_write", **RESET, "after": "trip"})
    assert v.evidence["time_to_s"] == 5.0
    v = check(store, {"kind": "condition", "point": "hp2.enable", "op": ">=", "value": 0})
    assert v.passed and "time_to_s" in v.evidence and v.evidence["time_to_s"] is None


@pytest.mark.parametrize(("spec", "problem"), [
    ({"kind": "count", "point": "hp1.reset"}, "needs 'at_most', 'at_least' or 'exactly'"),
    ({"kind": "count", "point": "p", "exactly": 1, "at_most": 2}, "give 'exactly' alone"),
    ({"kind": "count", "point": "p", "at_least": 3, "at_most": 2}, "above 'at_most'"),
    ({"kind": "count", "topic": "a", "point": "p", "at_most": 1}, "either 'point'"),
    ({"kind": "count", "topic": "a/#/b", "at_most": 1}, "'#' must be"),
    ({"kind": "rate", "topic": "a", "value": 1, "at_most": 1}, "apply to 'point' only"),
    ({"kind": "rate", "point": "p", "payload": {}, "at_most": 1}, "apply to 'topic' only"),
    ({"kind": "sequence", "first": {"point": "p"}, "then": {"point": "q"}, "min_gap": 10,
      "max_gap": 5}, "'max_gap' is below"),
    ({"kind": "alive", "max_gap": 10}, "either 'point'"),
    ({"kind": "mqtt", "topic": "a", "mode": "always"}, "mode"),
])
def test_schema_problems(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        validate_data({"expect": [{"name": "x", **spec}]}, Doc)


def test_report_shows_time_to(store: RunStore) -> None:
    from rig.present.report import report_html, time_to_text

    v = check(store, {"kind": "modbus_write", **RESET, "after": "trip"})
    never = check(store, {"kind": "mqtt", "mode": "never", "topic": "sut/none"})
    assert time_to_text(v.evidence) == "5 s" and time_to_text(never.evidence) == "\u2013"
    assert time_to_text({"time_to_s": 300.0}) == "5 min"
    text = report_html("kinds", [v, never], store, [], None)
    assert "time to</th>" in text and "<td>5 s</td>" in text
