"""Expectations: YAML models, and verdicts with evidence on a synthetic run store."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from rig.assess.expect import (
    Expectation,
    Verdict,
    evaluate,
    fault_onsets_from_events,
    mqtt_events,
    payload_contains,
    read_columns,
    record_mqtt,
    to_unit,
    topic_matches,
)
from rig.config.loader import validate_data
from rig.config.yamlsafe import parse_yaml
from rig.record.store import RunStore
from twin.errors import ConfigError, UnitError

POINTS = [
    {"id": "cdu1.supply_temp", "kind": "sensor", "type": "float", "unit": "degC"},
    {"id": "cdu1.leak_alarm", "kind": "alarm", "type": "bool", "unit": "1"},
    {"id": "cdu1.valve_cmd", "kind": "command", "type": "float", "unit": "1"},
    {"id": "site.supply_sp", "kind": "command", "type": "float", "unit": "degC"},
    {"id": "hp1.power", "kind": "sensor", "type": "float", "unit": "W"},
]
END = 3600.0
LEAK = 1200.0
ALARM = '{"alarm": "leak", "cdu": "cdu1", "severity": 2, "tags": ["water", "rack03"]}'


def supply_truth(t: np.ndarray | float) -> Any:
    """The synthetic supply temperature: 30 degC ramping to 50 degC over the hour."""
    return 30.0 + 20.0 * np.asarray(t) / 3600.0


def fill(store: RunStore) -> None:
    """A 1 h run at 1 s: ramp, a +0.5 K sensor bias from 1800 s, a dropout, an alarm."""
    for k in range(int(END) + 1):
        t = float(k)
        truth = np.array([supply_truth(t), 1.0 if t >= 1260 else 0.0,
                          0.0 if t >= 1230 else 0.7, 40.0 if t >= 1300 else 35.0, 100e3])
        measured = truth.copy()
        if t >= 1800:
            measured[0] += 0.5
        if 2000 <= t < 2010:
            measured[0] = math.nan
        store.write_sample(t, measured, truth)
    store.write_event(LEAK, "cdu1", "fault", "leak1 onset: leak rate=0.2")
    record_mqtt(store, 500.0, "sut/leakdet/cdu1/alarm", b'{"alarm": "none"}')
    record_mqtt(store, 1250.0, "sut/leakdet/cdu1/alarm", ALARM.encode())
    record_mqtt(store, 1255.0, "sut/leakdet/status", b"online")
    record_mqtt(store, 1256.0, "$SYS/broker/uptime", b"77")
    store.write_command(100.0, "cdu1.valve_cmd", 0.7, "modbus")
    store.write_command(1230.0, "cdu1.valve_cmd", 0.0, "modbus")
    store.write_command(1300.0, "site.supply_sp", 40.0, "mqtt")
    store.write_kpis({"pue": 1.12, "erf": 0.55, "heat_reused_kwh": 5000.0,
                      "air_outside_recommended_h": 0.25})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("expect") / "run"
    with RunStore.create(path, {"site": "unit", "scenario": "leak", "seed": 3}, POINTS) as s:
        fill(s)
    return path


@pytest.fixture
def store(run_dir: Path) -> Iterator[RunStore]:
    with RunStore.open(run_dir) as s:
        yield s


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expect: list[Expectation]


def load(text: str) -> list[Any]:
    """Validate a YAML ``expect:`` document the way scenario files are validated."""
    loaded = parse_yaml(text, source="scn.yaml")
    return validate_data(loaded.data, Doc, source="scn.yaml", locate=loaded.locate).expect


def check(store: RunStore, spec: dict[str, Any], onsets: dict[str, float | None] | None
          = None, end: float = END) -> Verdict:
    """The verdict of one expectation given as a dict."""
    exp = validate_data({"expect": [spec]}, Doc).expect[0]
    (verdict,) = evaluate([exp], store, {"leak1": LEAK} if onsets is None else onsets, end)
    return verdict


# --------------------------------------------------------------------------- helpers


def test_topic_filters_follow_mqtt() -> None:
    assert topic_matches("a/+/c", "a/b/c")
    assert topic_matches("a/#", "a") and topic_matches("a/#", "a/b/c")
    assert topic_matches("+/+", "a/") and not topic_matches("a/+", "a/b/c")
    assert not topic_matches("#", "$SYS/x") and topic_matches("$SYS/#", "$SYS/x")
    assert not topic_matches("a/b", "a/b/c")


def test_payload_subset() -> None:
    doc = {"a": 1, "b": {"c": [1, 2, {"d": True}]}, "e": "x"}
    assert payload_contains(doc, {"a": 1.0, "b": {"c": [{"d": True}, 2]}})
    assert not payload_contains(doc, {"b": {"c": [{"d": 1}]}})  # true is not 1
    assert not payload_contains(doc, {"a": "1"})
    assert not payload_contains(doc, {"z": None})
    assert payload_contains("online", "online")


def test_units_convert_into_the_point_unit() -> None:
    assert to_unit("318.15 K", "degC") == pytest.approx(45.0)
    assert to_unit("2 K", "degC", difference=True) == 2.0
    assert to_unit("1.5 MW", "W") == 1.5e6
    assert to_unit("75 %", "1") == 0.75
    assert to_unit("5 MWh", "kWh") == pytest.approx(5000.0)
    assert to_unit(12, "Pa") == 12.0
    with pytest.raises(UnitError, match="expected a temperature"):
        to_unit("45 kW", "degC")


def test_read_columns_and_mqtt_convention(store: RunStore) -> None:
    t, m, r = read_columns(store, ["hp1.power", "cdu1.supply_temp"], 100.0, 200.0)
    assert t[0] == 100.0 and t[-1] == 200.0 and m.shape == (101, 2)
    assert np.allclose(r[:, 1], supply_truth(t))
    msgs = mqtt_events(store)
    assert [m.topic for m in msgs][:2] == ["sut/leakdet/cdu1/alarm"] * 2
    assert msgs[1].t == 1250.0 and msgs[1].payload == ALARM
    assert fault_onsets_from_events(store) == {"leak1": LEAK}


# --------------------------------------------------------------------------- mqtt


def test_mqtt_pass_with_evidence(store: RunStore) -> None:
    v = check(store, {"name": "alarm", "kind": "mqtt", "after": "leak1", "within": "60 s",
                      "topic": "sut/+/cdu1/alarm",
                      "payload": {"alarm": "leak", "tags": ["rack03"]}})
    assert v.verdict == "pass", v.message
    assert v.evidence["t"] == 1250.0 and v.evidence["delay_s"] == 50.0
    assert v.evidence["topic"] == "sut/leakdet/cdu1/alarm" and v.evidence["payload"] == ALARM
    assert v.evidence["window"] == [LEAK, LEAK + 60]


def test_mqtt_fails_past_the_deadline_or_on_another_payload(store: RunStore) -> None:
    late = check(store, {"name": "a", "kind": "mqtt", "after": "leak1", "within": "30 s",
                         "topic": "sut/+/cdu1/alarm"})
    assert late.verdict == "fail" and late.evidence["messages_on_topic"] == 0
    assert late.evidence["deadline_s"] == LEAK + 30 and "t" not in late.evidence
    assert "no message on sut/+/cdu1/alarm" in late.message
    other = check(store, {"name": "a", "kind": "mqtt", "topic": "sut/#",
                          "payload": {"alarm": "fire"}})
    assert other.verdict == "fail" and other.evidence["messages_on_topic"] == 3
    assert other.evidence["last_payload"] == "online"


def test_mqtt_regex_and_bare_text(store: RunStore) -> None:
    rx = check(store, {"name": "a", "kind": "mqtt", "topic": "sut/#",
                       "payload_regex": r'"severity":\s*2'})
    assert rx.verdict == "pass" and rx.evidence["t"] == 1250.0
    text = check(store, {"name": "b", "kind": "mqtt", "topic": "sut/leakdet/status",
                         "payload": "online", "delay": "50 s", "after": "leak1"})
    assert text.verdict == "pass" and text.evidence["t"] == 1255.0
    sys_topic = check(store, {"name": "c", "kind": "mqtt", "topic": "#", "payload": 77})
    assert sys_topic.verdict == "fail"  # '#' does not match $SYS topics


# --------------------------------------------------------------------------- modbus_write


def test_modbus_write_value_and_range(store: RunStore) -> None:
    v = check(store, {"name": "close", "kind": "modbus_write", "after": "leak1",
                      "within": "1 min", "point": "cdu1.valve_cmd", "value": "0 %"})
    assert v.verdict == "pass" and (v.evidence["t"], v.evidence["value"]) == (1230.0, 0.0)
    assert v.evidence["source"] == "modbus"
    rng = check(store, {"name": "sp", "kind": "modbus_write", "point": "site.supply_sp",
                        "min": "35 degC", "max": "313.15 K", "source": "mqtt"})
    assert rng.verdict == "pass" and rng.evidence["value"] == 40.0
    by_modbus = check(store, {"name": "sp", "kind": "modbus_write", "point": "site.supply_sp",
                              "min": "35 degC"})
    assert by_modbus.verdict == "fail" and by_modbus.evidence["writes"] == 0
    wrong = check(store, {"name": "v", "kind": "modbus_write", "point": "cdu1.valve_cmd",
                          "value": 0.5, "tolerance": 0.1})
    assert wrong.verdict == "fail" and wrong.evidence["values"] == [0.7, 0.0]
    assert wrong.evidence["times"] == [100.0, 1230.0] and wrong.evidence["deadline_s"] == END
    assert "no write of cdu1.valve_cmd = 0.5 +/- 0.1" in wrong.message


# --------------------------------------------------------------------------- condition


def test_condition_always_fails_at_the_first_violation(store: RunStore) -> None:
    v = check(store, {"name": "cool", "kind": "condition", "point": "cdu1.supply_temp",
                      "op": "<=", "value": "45 degC"})
    assert v.verdict == "fail"
    assert v.evidence["t"] == 2701.0 and v.evidence["value"] == pytest.approx(
        supply_truth(2701.0))
    assert v.evidence["violations"] == 900 and v.evidence["unit"] == "degC"
    assert "at t = 2701 s" in v.message


def test_condition_always_pass_reports_the_extreme(store: RunStore) -> None:
    v = check(store, {"name": "cool", "kind": "condition", "point": "cdu1.supply_temp",
                      "after": "leak1", "within": "10 min", "op": "<", "value": "318.15 K"})
    assert v.verdict == "pass", v.message
    assert v.evidence["t"] == 1800.0 and v.evidence["value"] == pytest.approx(40.0)
    assert v.evidence["samples"] == 601 and v.evidence["window"] == [1200.0, 1800.0]


def test_condition_eventually_and_never(store: RunStore) -> None:
    ev = check(store, {"name": "hot", "kind": "condition", "point": "cdu1.supply_temp",
                       "op": ">=", "value": 45, "mode": "eventually"})
    assert ev.verdict == "pass" and ev.evidence["t"] == 2700.0
    miss = check(store, {"name": "hot", "kind": "condition", "point": "cdu1.supply_temp",
                         "op": ">", "value": "60 degC", "mode": "eventually"})
    assert miss.verdict == "fail" and miss.evidence["t"] == 3600.0
    assert miss.evidence["value"] == pytest.approx(50.0)
    never = check(store, {"name": "boil", "kind": "condition", "point": "cdu1.supply_temp",
                          "op": ">", "value": "60 degC", "mode": "never"})
    assert never.verdict == "pass" and never.evidence["value"] == pytest.approx(50.0)
    hit = check(store, {"name": "alarm", "kind": "condition", "point": "cdu1.leak_alarm",
                        "op": "==", "value": True, "mode": "never"})
    assert hit.verdict == "fail" and hit.evidence["t"] == 1260.0


def test_condition_on_measured_with_between_and_dropout(store: RunStore) -> None:
    spec = {"name": "band", "kind": "condition", "point": "cdu1.supply_temp",
            "signal": "measured", "after": "leak1", "delay": "10 min", "within": "5 min",
            "between": ["40.4 degC", "45 degC"]}
    v = check(store, spec)
    assert v.verdict == "pass", v.message  # measured = truth + 0.5 from 1800 s
    assert v.evidence["nan_samples"] == 10 and v.evidence["samples"] == 291
    assert v.evidence["value"] == pytest.approx(40.5)
    truth = check(store, {**spec, "signal": "truth"})
    assert truth.verdict == "fail" and truth.evidence["t"] == 1800.0


def test_condition_equal_within_tolerance(store: RunStore) -> None:
    v = check(store, {"name": "sp", "kind": "condition", "point": "cdu1.supply_temp",
                      "op": "==", "value": "40 degC", "tolerance": "0.001 K",
                      "mode": "eventually"})
    assert v.verdict == "pass" and v.evidence["t"] == 1800.0


# --------------------------------------------------------------------------- kpi


def test_kpi_expectations(store: RunStore) -> None:
    assert check(store, {"name": "pue", "kind": "kpi", "kpi": "pue", "op": "<=",
                         "value": 1.2}).verdict == "pass"
    erf = check(store, {"name": "erf", "kind": "kpi", "kpi": "erf", "op": ">=",
                        "value": "60 %"})
    assert erf.verdict == "fail" and erf.evidence == {"kpi": "erf", "value": 0.55, "unit": "1"}
    reused = check(store, {"name": "reuse", "kind": "kpi", "kpi": "heat_reused_kwh",
                           "op": ">", "value": "4.5 MWh"})
    assert reused.verdict == "pass" and "5 MWh" in reused.message
    hours = check(store, {"name": "air", "kind": "kpi", "kpi": "air_outside_recommended_h",
                          "between": [0, "30 min"]})
    assert hours.verdict == "pass"
    missing = check(store, {"name": "cop", "kind": "kpi", "kpi": "cop", "op": ">=",
                            "value": 3})
    assert missing.verdict == "error" and "not recorded" in missing.message


def test_kpi_error_without_kpis(tmp_path: Path) -> None:
    with RunStore.create(tmp_path / "r", {"site": "unit"}, POINTS) as s:
        v = check(s, {"name": "pue", "kind": "kpi", "kpi": "pue", "op": "<=", "value": 1.2})
    assert v.verdict == "error" and v.message == "no KPIs recorded for this run"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("spec", "onsets", "message"), [
    ({"point": "cdu9.supply_temp"}, None, "no point 'cdu9.supply_temp' in this run"),
    ({"after": "pump2"}, None, "anchor fault 'pump2' never started (no such fault)"),
    ({"after": "pump2"}, {"pump2": None}, "anchor fault 'pump2' never started"),
    ({"value": "45 kW"}, None, "point cdu1.supply_temp (unit degC): expected a temperature "
                               "such as '35 degC'"),
    ({"after": "leak1", "delay": "1 h"}, None, "the window starts at t = 4800 s, after the "
                                                "end of the run (t = 3600 s)"),
])
def test_condition_errors(store: RunStore, spec: dict[str, Any],
                          onsets: dict[str, float | None] | None, message: str) -> None:
    base = {"name": "c", "kind": "condition", "point": "cdu1.supply_temp", "op": "<=",
            "value": 45}
    v = check(store, {**base, **spec}, onsets)
    assert v.verdict == "error" and v.message.startswith(message), v.message
    assert v.evidence["after"] == spec.get("after", "start")


def test_error_when_no_data_in_the_window(store: RunStore) -> None:
    v = check(store, {"name": "late", "kind": "condition", "point": "cdu1.supply_temp",
                      "delay": "5000 s", "op": "<=", "value": 45}, end=7200.0)
    assert v.verdict == "error" and v.message.startswith("no truth samples of cdu1.supply")


def test_modbus_dimension_mismatch_and_duplicates(store: RunStore) -> None:
    exps = load("""
expect:
  - {name: a, kind: modbus_write, point: site.supply_sp, value: 3 bar}
  - {name: a, kind: modbus_write, point: site.supply_sp, value: 40}
""")
    first, second = evaluate(exps, store, {}, END)
    assert first.verdict == "error" and "expected a temperature" in first.message
    assert second.verdict == "error" and "duplicate expectation name 'a'" in second.message


def test_yaml_problems_are_precise() -> None:
    with pytest.raises(ConfigError) as err:
        load("""expect:
  - name: hot
    kind: condition
    point: cdu1.supply_temp
    op: "<="
    value: 45 degF
    within: 10 parsecs
  - name: cop
    kind: kpi
    kpi: copp
    op: ">="
    value: 3
  - name: m
    kind: mqtt
    topic: a/#/b
  - name: w
    kind: modbus_write
    point: x
    value: 3
    min: 2
  - name: c
    kind: condition
    point: x
    mode: always
  - name: t
    kind: condition
    point: x
    op: "=<"
    value: 5 degc
    delay: -3 s
""")
    problems = err.value.problems
    assert problems[0].startswith("scn.yaml:6: expect[0].value: unknown unit 'degF' in "
                                  "'45 degF'")
    assert problems[1].startswith("scn.yaml:7: expect[0].within: expected a duration such as "
                                  "'2 h'")
    assert problems[2].startswith("scn.yaml:10: expect[1].kpi: must be one of 'pue', 'erf'")
    assert problems[3] == ("scn.yaml:13: expect[2]: topic 'a/#/b': '#' must be a whole level "
                           "and the last one")
    assert problems[4] == "scn.yaml:16: expect[3]: give either 'value' or 'min'/'max', not both"
    assert problems[5] == ("scn.yaml:21: expect[4]: needs 'op' (one of <=, >=, <, >, ==) and "
                           "'value', or 'between: [lo, hi]'")
    assert problems[6].startswith("scn.yaml:28: expect[5].op: must be one of '<='")
    assert problems[7].endswith("units are case-sensitive: did you mean 'degC'?")
    assert problems[7].startswith("scn.yaml:29: expect[5].value: unknown unit 'degc'")
    assert problems[8].startswith("scn.yaml:30: expect[5].delay: must be >= 0")
    assert len(problems) == 9


def test_yaml_forms_load() -> None:
    exps = load("""expect:
  - name: leak alarm published
    kind: mqtt
    after: leak1
    within: 60 s
    topic: sut/+/cdu1/alarm
    payload: {alarm: leak}
  - name: valve closed
    kind: modbus_write
    after: leak1
    within: 2 min
    point: cdu1.valve_cmd
    max: 5 %
  - name: supply stays cool
    kind: condition
    after: leak1
    delay: 30 s
    within: 10 min
    point: cdu1.supply_temp
    op: "<="
    value: 45 degC
  - name: pue
    kind: kpi
    kpi: pue
    op: "<="
    value: 1.2
""")
    assert [e.kind for e in exps] == ["mqtt", "modbus_write", "condition", "kpi"]
    assert exps[0].within == 60.0 and exps[1].max == "5 %" and exps[2].delay == 30.0
    assert exps[2].signal == "truth" and exps[2].mode == "always" and exps[3].value == 1.2


# --------------------------------------------------------------------------- scale


def test_day_at_one_second_is_evaluated_quickly(tmp_path: Path) -> None:
    """A 24 h run at 1 s: the samples are read once for all condition expectations."""
    n, k = 86_400, 40
    points = [{"id": f"d.p{i}", "unit": "degC"} for i in range(k)]
    with RunStore.create(tmp_path / "day", {"site": "unit"}, points,
                         commit_interval_s=5.0) as s:
        base = np.arange(k, dtype=float)
        for i in range(n):
            row = base + i * 1e-4
            s.write_sample(float(i), row, row)
        for i in range(0, n, 60):
            record_mqtt(s, float(i), "sut/x/telemetry", f'{{"n": {i}}}')
    exps = validate_data({"expect": [
        *({"name": f"c{i}", "kind": "condition", "point": f"d.p{i}", "op": "<=",
           "value": i + 9.0} for i in range(0, k, 4)),
        {"name": "m", "kind": "mqtt", "topic": "sut/+/telemetry", "payload": {"n": 86_340}},
    ]}, Doc).expect
    with RunStore.open(tmp_path / "day") as s:
        start = time.perf_counter()
        verdicts = evaluate(exps, s, {}, float(n - 1))
        elapsed = time.perf_counter() - start
    assert [v.verdict for v in verdicts] == ["pass"] * 10 + ["pass"]
    assert verdicts[0].evidence["samples"] == n and verdicts[0].evidence["t"] == n - 1
    assert elapsed < 10.0, f"{elapsed:.1f} s"
