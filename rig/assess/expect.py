"""Expectations of a scenario (``expect:``) and their verdicts, evaluated on a run store.

An expectation names what the system under test (SUT) must do, in a time window:

- ``after:`` anchors the window: ``start`` (t = 0, the default) or a fault id (its onset);
- ``delay:`` (default 0 s) moves the window's start past the anchor;
- ``within:`` is the window's length (default: to the end of the run).

So the window is ``[anchor + delay, anchor + delay + within]`` simulated seconds, cut at
the end of the run; both ends are inclusive. Kinds (``kind:``):

``mqtt``
    a message on ``topic`` (an MQTT filter, ``+`` and ``#`` allowed) whose JSON contains
    ``payload`` (a JSON subset: mappings by key, lists item by item in any order, scalars
    by equality, booleans never equal to numbers; a payload that is not JSON is the JSON
    string of its text) or whose text matches ``payload_regex`` (``re.search``); with
    neither, any message on the topic. Evidence: ``t``, ``topic``, ``payload``; a
    failure gives ``messages_on_topic``, the last one seen and the ``deadline_s``.
``modbus_write``
    the SUT writes ``point`` (a command row with ``source``, default ``modbus``; ``any``
    matches every source) with ``value`` (within ``tolerance``) or inside ``min``/``max``
    (in the point's unit; human units such as ``42 degC`` or ``30 kW`` are converted).
    Evidence: ``t``, ``value``, ``source``; a failure lists the other writes in the
    window (``values``, ``times``) and the ``deadline_s``.
``condition``
    ``point``'s ``signal`` (``truth``, default, or ``measured``) compared with ``op``
    (``<=``, ``>=``, ``<``, ``>``, ``==`` within ``tolerance``) and ``value``, or
    ``between: [lo, hi]`` (inclusive), must hold ``always`` (default), ``eventually``
    or ``never`` over the window's samples. Values are converted into the point's unit
    from the store's points table; another dimension (``45 kW`` for a degC point) is an
    error. NaN samples (sensor dropout) are skipped and counted (``nan_samples``).
    Evidence: a failure gives the first violating (or, for ``eventually``, the closest)
    ``t`` and ``value``; a pass gives the worst value seen (``always``, ``never``) or the
    first satisfying one (``eventually``).
``count``
    occurrences of a write (``point`` with optional ``value``/``tolerance``/``min``/``max``
    and ``source``, as ``modbus_write``) or of a message (``topic`` with optional
    ``payload``/``payload_regex``, as ``mqtt``) in the window, ``at_most``, ``at_least`` or
    ``exactly`` N; ``min_spacing`` also requires consecutive occurrences that far apart.
    Evidence: ``count``, ``times`` (the first 20); a spacing failure the closest pair.
``rate``
    at most ``at_most`` occurrences (selected as for ``count``) in any ``per`` (default
    60 s) of simulated time, over sliding windows starting at each occurrence (an alarm
    flood). Evidence: ``max_in_window`` and where that window starts (``t``).
``sequence``
    ``first`` happens before ``then`` (each a selector as for ``count``): the first
    ``then`` occurrence of the window comes at least ``min_gap`` (default 0 s) and, when
    given, at most ``max_gap`` after the first ``first`` occurrence. Evidence:
    ``first_t``, ``then_t``, ``gap_s``.
``alive``
    the SUT shows signs of life with no gap longer than ``max_gap``: ``point`` (a
    heartbeat; its ``signal`` changes value between samples) or messages on ``topic``.
    Gaps count from the window's start and up to its end (default: the end of the run).
    Evidence: ``max_gap_s`` with its ``gap_from``/``gap_to``, ``signs`` (how many).
``kpi``
    a run KPI (a name of `twin.kpis.REGISTRY`: ``pue``, ``erf``, ``ere``, ``cop``, ...)
    compared like a condition, from the store's latest KPI record. Values are converted
    into the KPI's registry unit: a ``kWh`` KPI takes energies (``5 MWh``), an ``h`` KPI
    durations, a ``kg`` KPI masses, a ratio (``1``) plain numbers or percentages. No
    window.

``mqtt`` and ``modbus_write`` take ``mode: never`` (default ``eventually``): no matching
message or write in the window; a failure gives the first one (``t``) and ``violations``.

Every windowed verdict carries ``time_to_s``: the time from the anchor to the first
occurrence that satisfies it (the matching message or write, the first satisfying sample of
an ``eventually`` condition, the N-th occurrence of ``at_least`` or ``exactly`` N, the
first occurrence of ``at_most``, the ``then`` of a sequence, the first sign of life), or null
when there is none (``always``/``never``, a failure): time to detect or to act.

Verdicts: ``pass``, ``fail``, or ``error`` when an expectation cannot be evaluated
(unknown point, an anchor fault that never started, no data in the window, a value in
the wrong dimension). Every evidence holds ``after``, ``anchor_s`` and ``window`` (s),
and ``point``/``unit``/``signal`` where a point is involved, so that reports can place
it; times are simulated seconds, values in the point's unit.

MQTT observations (the convention the live runner follows): every message the rig sees
on a subscribed SUT topic is stored as an event with ``kind = "mqtt"``,
``source = <topic>`` and ``message = <payload as UTF-8 text>`` (invalid bytes replaced),
at the simulated time it arrived; `record_mqtt` writes one, `mqtt_events` reads them.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from rig.record.store import RunStore
from twin.errors import RunStoreError, UnitError
from twin.kpis import REGISTRY
from twin.units import DIMENSIONS, Duration, format_quantity, parse_quantity

log = logging.getLogger(__name__)

MQTT_EVENT_KIND = "mqtt"
START = "start"
KPI_NAMES: tuple[str, ...] = tuple(REGISTRY)
"""KPI names an expectation may use (the names of `twin.kpis.REGISTRY`)."""

# 1-128 printable characters, no leading/trailing space (names show up in JUnit and HTML)
NAME_PATTERN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]{0,126}[^\s\x00-\x1f\x7f])?$"
ANCHOR_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"  # ``start`` or a fault id
READ_CHUNK = 4096
MAX_PAYLOAD_EVIDENCE = 2000  # characters of a payload kept in evidence

# the SI unit of each dimension, as points state it -> dimension (twin.units)
UNIT_DIMENSION: dict[str, str] = {
    "degC": "temperature", "K": "temperature_difference", "W": "power", "J": "energy",
    "s": "duration", "kg/s": "mass_flow", "m3/s": "volume_flow", "Pa": "pressure",
    "m3": "volume", "kg": "mass", "m": "length", "m2": "area", "W/K": "thermal_conductance",
    "J/K": "heat_capacity", "rev/s": "speed", "kg/kWh": "emission_factor",
    "kWh": "energy", "h": "duration",  # KPI units
}
DIMENSIONLESS_UNITS = ("", "1", "-")
_DIFFERENCE = {"temperature": "temperature_difference"}
_NUMBER_UNIT = re.compile(
    r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*(.*?)\s*", re.DOTALL)

Op = Literal["<=", ">=", "<", ">", "=="]
EventMode = Literal["eventually", "never"]
Signal = Literal["truth", "measured"]
Mode = Literal["always", "eventually", "never"]
Outcome = Literal["pass", "fail", "error"]


# --------------------------------------------------------------------------- values


def _human_value(value: object) -> float | str:
    """A number (SI / the point's unit) or a quantity string with a unit known to heatrig.

    The dimension is checked only at evaluation, against the point's unit; here the
    unit must exist in some dimension. Booleans are 1/0 (for alarms and switches).
    """
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise UnitError(f"expected a finite number, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise UnitError(f"expected a number or a quantity such as '45 degC', got a "
                        f"{type(value).__name__}")
    match = _NUMBER_UNIT.fullmatch(value)
    if match is None:
        raise UnitError(f"expected a number or a quantity such as '45 degC', got {value!r}")
    number, unit = float(match.group(1)), match.group(2)
    if not unit:
        return number
    hints = []
    for dim in DIMENSIONS:
        try:
            parse_quantity(value, dim)
        except UnitError as exc:
            if "did you mean" in str(exc):
                hints.append(str(exc).rsplit("; ", 1)[-1])
            continue
        return value.strip()
    hint = f"; {hints[0]}" if hints else ""
    raise UnitError(f"unknown unit {unit!r} in {value!r} (use the point's unit or a "
                    f"compatible one, e.g. degC, K, kW, MW, kWh, kg/s, m3/h, bar, %){hint}")


HumanValue = Annotated[float | str, BeforeValidator(_human_value)]
"""A number in the point's unit, or a quantity string (``45 degC``) converted at evaluation."""


def unit_dimension(unit: str) -> str | None:
    """The `twin.units` dimension of a point unit, ``dimensionless`` or None (unknown)."""
    if unit in DIMENSIONLESS_UNITS:
        return "dimensionless"
    return UNIT_DIMENSION.get(unit)


def _scale(unit: str, dim: str) -> float:
    """SI value of one ``unit`` (1 for SI units and temperatures)."""
    return 1.0 if dim == "temperature" else parse_quantity(f"1 {unit}", dim)


def to_unit(value: float | str, unit: str, *, difference: bool = False) -> float:
    """``value`` (a number already in ``unit`` or a quantity string) as a float in ``unit``.

    ``difference`` reads it as a difference (tolerances: ``0.5 K`` for a degC point).
    Raises `UnitError` when the string's unit has another dimension than ``unit``.
    """
    if not isinstance(value, str):
        return float(value)
    match = _NUMBER_UNIT.fullmatch(value)
    if match and not match.group(2):
        return float(match.group(1))  # a plain number is in the point's unit
    dim = unit_dimension(unit)
    if dim is None:
        raise UnitError(f"the unit {unit!r} cannot be converted into; give a plain number "
                        f"in {unit}, got {value!r}")
    if dim == "dimensionless":
        if value.strip().endswith("%"):
            return parse_quantity(value, "fraction")
        raise UnitError(f"expected a plain number or a percentage such as '75 %', "
                        f"got {value!r}")
    if difference:
        dim = _DIFFERENCE.get(dim, dim)
    return parse_quantity(value, dim) / _scale(unit, dim)


def show_value(value: float, unit: str) -> str:
    """A value in ``unit`` for messages: ``43.2 degC``, ``25 kW``, ``0.5``."""
    dim = unit_dimension(unit)
    if dim is not None and dim != "dimensionless" and math.isfinite(value):
        return format_quantity(value * _scale(unit, dim), dim)
    return f"{value:.6g}" + (f" {unit}" if unit not in DIMENSIONLESS_UNITS else "")


# --------------------------------------------------------------------------- models


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)


class _Windowed(_Base):
    after: str = Field(START, pattern=ANCHOR_PATTERN)
    delay: Duration = Field(0.0, ge=0)
    within: Duration | None = Field(None, gt=0)


class _Compared(BaseModel):
    """``op`` with ``value`` (``tolerance`` for ``==``), or ``between: [lo, hi]``."""

    op: Op | None = None
    value: HumanValue | None = None
    between: tuple[HumanValue, HumanValue] | None = None
    tolerance: HumanValue | None = None

    @model_validator(mode="after")
    def _one_comparison(self) -> _Compared:
        if self.between is not None:
            if self.op is not None or self.value is not None:
                raise ValueError("give either 'between: [lo, hi]' or 'op' and 'value', "
                                 "not both")
        elif self.op is None or self.value is None:
            raise ValueError("needs 'op' (one of <=, >=, <, >, ==) and 'value', "
                             "or 'between: [lo, hi]'")
        if self.tolerance is not None and self.op != "==":
            raise ValueError("'tolerance' applies to op '==' only")
        return self


def _check_message(topic: str, payload: Any, payload_regex: str | None) -> None:
    problem = topic_filter_problem(topic)
    if problem:
        raise ValueError(f"topic {topic!r}: {problem}")
    if payload is not None and payload_regex is not None:
        raise ValueError("give either 'payload' or 'payload_regex', not both")
    if payload_regex is not None:
        try:
            re.compile(payload_regex)
        except re.error as exc:
            raise ValueError(f"payload_regex: {exc}") from None


def _check_write(value: object, tolerance: object, lo: object, hi: object) -> None:
    if value is not None and (lo is not None or hi is not None):
        raise ValueError("give either 'value' or 'min'/'max', not both")
    if tolerance is not None and value is None:
        raise ValueError("'tolerance' applies to 'value' only")


class MqttExpectation(_Windowed):
    """The SUT publishes a matching message on ``topic`` in the window (or ``never``)."""

    kind: Literal["mqtt"]
    topic: str = Field(min_length=1, max_length=512)
    payload: Any = None
    payload_regex: str | None = Field(None, max_length=1000)
    mode: EventMode = "eventually"

    @model_validator(mode="after")
    def _check(self) -> MqttExpectation:
        _check_message(self.topic, self.payload, self.payload_regex)
        return self


class ModbusWriteExpectation(_Windowed):
    """The SUT writes ``point`` to ``value`` (or into ``min``..``max``) in the window (or
    ``never``)."""

    kind: Literal["modbus_write"]
    point: str = Field(min_length=1, max_length=128)
    value: HumanValue | None = None
    tolerance: HumanValue | None = None
    min: HumanValue | None = None
    max: HumanValue | None = None
    source: str = Field("modbus", min_length=1, max_length=64)
    mode: EventMode = "eventually"

    @model_validator(mode="after")
    def _check(self) -> ModbusWriteExpectation:
        _check_write(self.value, self.tolerance, self.min, self.max)
        return self


class ConditionExpectation(_Windowed, _Compared):
    """A point's value must satisfy a comparison always, eventually or never."""

    kind: Literal["condition"]
    point: str = Field(min_length=1, max_length=128)
    signal: Signal = "truth"
    mode: Mode = "always"


class Selector(BaseModel):
    """Occurrences: writes of ``point`` (optionally of ``value`` or in ``min``..``max``, by
    ``source``) or messages on ``topic`` (optionally with ``payload``/``payload_regex``)."""

    model_config = ConfigDict(extra="forbid")
    point: str | None = Field(None, min_length=1, max_length=128)
    value: HumanValue | None = None
    tolerance: HumanValue | None = None
    min: HumanValue | None = None
    max: HumanValue | None = None
    source: str = Field("modbus", min_length=1, max_length=64)
    topic: str | None = Field(None, min_length=1, max_length=512)
    payload: Any = None
    payload_regex: str | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _one_selector(self) -> Selector:
        if (self.point is None) == (self.topic is None):
            raise ValueError("give either 'point' (writes) or 'topic' (messages)")
        if self.point is not None:
            if self.payload is not None or self.payload_regex is not None:
                raise ValueError("'payload' and 'payload_regex' apply to 'topic' only")
            _check_write(self.value, self.tolerance, self.min, self.max)
        else:
            if any(v is not None for v in (self.value, self.tolerance, self.min, self.max)):
                raise ValueError("'value', 'tolerance', 'min' and 'max' apply to 'point' only")
            assert self.topic is not None
            _check_message(self.topic, self.payload, self.payload_regex)
        return self

    def describe(self) -> str:
        """``writes of hp1.reset`` or ``messages on a/b/#`` for messages."""
        return f"writes of {self.point}" if self.point else f"messages on {self.topic}"


class CountExpectation(_Windowed, Selector):
    """``at_most``/``at_least``/``exactly`` N occurrences in the window, optionally spaced."""

    kind: Literal["count"]
    at_most: int | None = Field(None, ge=0)
    at_least: int | None = Field(None, ge=0)
    exactly: int | None = Field(None, ge=0)
    min_spacing: Duration | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> CountExpectation:
        if self.exactly is not None and (self.at_most is not None or self.at_least is not None):
            raise ValueError("give 'exactly' alone, or 'at_most' and/or 'at_least'")
        if self.exactly is None and self.at_most is None and self.at_least is None:
            raise ValueError("needs 'at_most', 'at_least' or 'exactly'")
        if (self.at_most is not None and self.at_least is not None
                and self.at_least > self.at_most):
            raise ValueError("'at_least' is above 'at_most'")
        return self


class RateExpectation(_Windowed, Selector):
    """At most ``at_most`` occurrences in any ``per`` seconds of the window."""

    kind: Literal["rate"]
    at_most: int = Field(ge=0)
    per: Duration = Field(60.0, gt=0)


class SequenceExpectation(_Windowed):
    """``first`` before ``then``, ``then`` at least ``min_gap`` (at most ``max_gap``) later."""

    kind: Literal["sequence"]
    first: Selector
    then: Selector
    min_gap: Duration = Field(0.0, ge=0)
    max_gap: Duration | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _gaps(self) -> SequenceExpectation:
        if self.max_gap is not None and self.max_gap < self.min_gap:
            raise ValueError("'max_gap' is below 'min_gap'")
        return self


class AliveExpectation(_Windowed):
    """Signs of life (a heartbeat point changing, or messages) with no gap over ``max_gap``."""

    kind: Literal["alive"]
    point: str | None = Field(None, min_length=1, max_length=128)
    signal: Signal = "truth"
    topic: str | None = Field(None, min_length=1, max_length=512)
    max_gap: Duration = Field(gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> AliveExpectation:
        if (self.point is None) == (self.topic is None):
            raise ValueError("give either 'point' (a heartbeat) or 'topic' (messages)")
        if self.topic is not None:
            _check_message(self.topic, None, None)
        return self


class KpiExpectation(_Base, _Compared):
    """A run KPI must satisfy a comparison."""

    kind: Literal["kpi"]
    kpi: Literal[KPI_NAMES]  # type: ignore[valid-type]


AnyExpectation = (MqttExpectation | ModbusWriteExpectation | ConditionExpectation
                  | CountExpectation | RateExpectation | SequenceExpectation | AliveExpectation
                  | KpiExpectation)
Expectation = Annotated[AnyExpectation, Field(discriminator="kind")]
"""One entry of a scenario's ``expect:`` list."""


def kpi_unit(name: str) -> str:
    """The unit of a KPI (`twin.kpis.REGISTRY`): ``kWh``, ``h``, ``kg`` or ``1`` (a ratio)."""
    return REGISTRY[name].unit


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """The outcome of one expectation; ``evidence`` is JSON (times s, values point unit)."""

    name: str
    kind: str
    verdict: Outcome
    evidence: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def passed(self) -> bool:
        """True for ``pass``."""
        return self.verdict == "pass"

    def as_dict(self) -> dict[str, Any]:
        """{name, kind, verdict, evidence, message}."""
        return asdict(self)


# --------------------------------------------------------------------------- MQTT


class MqttMessage(NamedTuple):
    """An MQTT message the rig observed: simulated time (s), topic, payload text."""

    t: float
    topic: str
    payload: str


def record_mqtt(store: RunStore, t: float, topic: str, payload: bytes | str) -> None:
    """Store an observed SUT message (the convention of this module's docstring)."""
    text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else payload
    store.write_event(t, topic, MQTT_EVENT_KIND, text)


def mqtt_events(store: RunStore) -> list[MqttMessage]:
    """Every observed MQTT message of a run, in time order."""
    rows = [MqttMessage(e.t, e.source, e.message) for e in store.events()
            if e.kind == MQTT_EVENT_KIND]
    rows.sort(key=lambda m: m.t)  # stable: arrival order within one instant
    return rows


def topic_filter_problem(topic_filter: str) -> str | None:
    """Why ``topic_filter`` is not a valid MQTT subscription filter, or None."""
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    if "\x00" in topic_filter:
        return "contains a NUL character"
    return None


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching: ``+`` one level, ``#`` the rest (also the parent level);
    wildcards at the first level do not match topics starting with ``$``."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    want, have = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level != "+" and level != have[i]):
            return False
    return len(want) == len(have)


def payload_contains(actual: Any, expected: Any) -> bool:
    """True when JSON ``expected`` is contained in JSON ``actual`` (see the docstring)."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and payload_contains(actual[key], value)
            for key, value in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and all(
            any(payload_contains(item, want) for item in actual) for want in expected)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return float(expected) == float(actual)
    return type(expected) is type(actual) and expected == actual


def _parse_payload(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# --------------------------------------------------------------------------- samples


def read_columns(store: RunStore, point_ids: Sequence[str], t0: float,
                 t1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, measured, truth) of ``point_ids`` over [t0, t1] (s) in one pass over the samples.

    ``measured`` and ``truth`` are (n, len(point_ids)) arrays in the points' units.
    Raises `RunStoreError` for an unknown point.
    """
    try:
        idx = np.array([store.point_index[p] for p in point_ids], dtype=np.intp)
    except KeyError as exc:
        raise RunStoreError(f"{store.path}: no point {exc.args[0]!r} in this run") from None
    ts: list[np.ndarray] = []
    ms: list[np.ndarray] = []
    rs: list[np.ndarray] = []
    after = 0
    while True:
        rows = store.sample_rows(after, READ_CHUNK, t0=t0, t1=t1)
        if rows:
            ts.append(np.fromiter((r.t for r in rows), dtype=np.float64, count=len(rows)))
            ms.append(np.stack([r.measured for r in rows])[:, idx])
            rs.append(np.stack([r.truth for r in rows])[:, idx])
            after = rows[-1].id
        if len(rows) < READ_CHUNK:
            break
    k = len(idx)
    if not ts:
        empty = np.empty((0, k))
        return np.empty(0), empty, empty.copy()
    return np.concatenate(ts), np.concatenate(ms), np.concatenate(rs)


# --------------------------------------------------------------------------- evaluation


class _Unevaluable(Exception):
    """The expectation cannot be evaluated; the message says why (an ``error`` verdict)."""


@dataclass
class _Window:
    after: str
    anchor_s: float
    start_s: float
    end_s: float
    cut: bool  # the run ended before the window's end

    def evidence(self) -> dict[str, Any]:
        return {"after": self.after, "anchor_s": self.anchor_s,
                "window": [self.start_s, self.end_s]}

    def describe(self) -> str:
        rel = f" after {self.after}" if self.after != START else ""
        cut = " (cut by the end of the run)" if self.cut else ""
        return f"in [{self.start_s:g} s, {self.end_s:g} s]{rel}{cut}"


def _window(exp: _Windowed, fault_onsets: Mapping[str, float | None],
            run_end_s: float) -> _Window:
    if exp.after == START:
        anchor = 0.0
    else:
        onset = fault_onsets.get(exp.after)
        if onset is None:
            known = "" if exp.after in fault_onsets else " (no such fault)"
            raise _Unevaluable(f"anchor fault '{exp.after}' never started{known}")
        anchor = float(onset)
    start = anchor + exp.delay
    if start > run_end_s:
        raise _Unevaluable(f"the window starts at t = {start:g} s, after the end of the run "
                           f"(t = {run_end_s:g} s)")
    end = run_end_s if exp.within is None else start + exp.within
    cut = end > run_end_s
    return _Window(exp.after, anchor, start, min(end, run_end_s), cut)


class _Comparison(NamedTuple):
    """A comparison resolved into numbers: margin >= 0 (> 0 when strict) is satisfied."""

    text: str
    strict: bool
    op: str
    a: float
    b: float

    def margin(self, x: np.ndarray) -> np.ndarray:
        if self.op in ("<=", "<"):
            return self.a - x
        if self.op in (">=", ">"):
            return x - self.a
        if self.op == "==":
            return self.b - np.abs(x - self.a)
        return np.minimum(x - self.a, self.b - x)  # between

    def satisfied(self, x: np.ndarray) -> np.ndarray:
        m = self.margin(x)
        return m > 0 if self.strict else m >= 0


def _comparison(exp: _Compared, unit: str, label: str) -> _Comparison:
    try:
        if exp.between is not None:
            lo, hi = (to_unit(v, unit) for v in exp.between)
            if lo > hi:
                raise _Unevaluable(f"between: {show_value(lo, unit)} is above "
                                   f"{show_value(hi, unit)}")
            text = f"between {show_value(lo, unit)} and {show_value(hi, unit)}"
            return _Comparison(text, False, "between", lo, hi)
        assert exp.op is not None and exp.value is not None
        a = to_unit(exp.value, unit)
        if exp.op == "==":
            tol = 0.0 if exp.tolerance is None else abs(to_unit(exp.tolerance, unit,
                                                                difference=True))
            tol_eff = tol + 1e-9 * max(1.0, abs(a))
            shown = f" +/- {show_value(tol, _diff_unit(unit))}" if tol else ""
            return _Comparison(f"== {show_value(a, unit)}{shown}", False, "==", a, tol_eff)
        return _Comparison(f"{exp.op} {show_value(a, unit)}", exp.op in ("<", ">"),
                           exp.op, a, 0.0)
    except UnitError as exc:
        unit_text = unit if unit not in DIMENSIONLESS_UNITS else "1, dimensionless"
        raise _Unevaluable(f"{label} (unit {unit_text}): {exc}") from None


def _diff_unit(unit: str) -> str:
    return "K" if unit == "degC" else unit


class _Run:
    """Lazily loaded run data shared by the expectations of one evaluation."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._mqtt: list[MqttMessage] | None = None
        self._mqtt_t: list[float] = []
        self._commands: list[Any] | None = None
        self._kpis: Mapping[str, float] | None = None
        self._kpis_read = False
        self.columns: dict[str, int] = {}
        self.t = np.empty(0)
        self.measured = np.empty((0, 0))
        self.truth = np.empty((0, 0))

    def unit(self, point: str) -> str:
        i = self.store.point_index.get(point)
        if i is None:
            raise _Unevaluable(f"no point '{point}' in this run")
        return str(self.store.points[i]["unit"])

    def mqtt(self, t0: float, t1: float) -> list[MqttMessage]:
        if self._mqtt is None:
            self._mqtt = mqtt_events(self.store)
            self._mqtt_t = [m.t for m in self._mqtt]
        lo = bisect.bisect_left(self._mqtt_t, t0)
        hi = bisect.bisect_right(self._mqtt_t, t1)
        return self._mqtt[lo:hi]

    def commands(self) -> list[Any]:
        if self._commands is None:
            self._commands = sorted(self.store.commands(), key=lambda c: (c.t, c.id))
        return self._commands

    def kpis(self) -> Mapping[str, float] | None:
        if not self._kpis_read:
            self._kpis = self.store.kpis()
            self._kpis_read = True
        return self._kpis

    def load_columns(self, points: Iterable[str], t0: float, t1: float) -> None:
        ids = list(dict.fromkeys(points))
        if not ids:
            return
        self.columns = {p: i for i, p in enumerate(ids)}
        self.t, self.measured, self.truth = read_columns(self.store, ids, t0, t1)


def evaluate(expectations: Sequence[AnyExpectation], store: RunStore,
             fault_onsets: Mapping[str, float | None], run_end_s: float) -> list[Verdict]:
    """One verdict per expectation, in order.

    ``fault_onsets``: fault id -> simulated onset (s), None when the fault never started;
    ``run_end_s``: the simulated end of the run (s). Samples are read once, only the
    columns and the time span the condition expectations need.
    """
    run = _Run(store)
    windows: dict[int, _Window | _Unevaluable] = {}
    needed: list[str] = []
    span = [math.inf, -math.inf]
    for i, exp in enumerate(expectations):
        if isinstance(exp, _Windowed):
            try:
                windows[i] = _window(exp, fault_onsets, run_end_s)
            except _Unevaluable as exc:
                windows[i] = exc
                continue
        if (isinstance(exp, ConditionExpectation | AliveExpectation) and exp.point is not None
                and exp.point in store.point_index):
            w = windows[i]
            assert isinstance(w, _Window)
            needed.append(exp.point)
            span = [min(span[0], w.start_s), max(span[1], w.end_s)]
    if needed:
        run.load_columns(needed, span[0], span[1])
    verdicts: list[Verdict] = []
    seen: set[str] = set()
    for i, exp in enumerate(expectations):
        verdicts.append(_one(exp, run, windows.get(i), duplicate=exp.name in seen))
        seen.add(exp.name)
    failed = sum(1 for v in verdicts if not v.passed)
    log.info("%d expectation(s): %d passed, %d not", len(verdicts), len(verdicts) - failed,
             failed)
    return verdicts


def _one(exp: AnyExpectation, run: _Run, window: _Window | _Unevaluable | None, *,
         duplicate: bool) -> Verdict:
    base: dict[str, Any] = {}
    if isinstance(exp, _Windowed):
        base = {"after": exp.after}
    point = getattr(exp, "point", None)
    if isinstance(point, str):
        base["point"] = point
    if isinstance(exp, ConditionExpectation) or (isinstance(exp, AliveExpectation)
                                                 and point is not None):
        base["signal"] = exp.signal
    try:
        if duplicate:
            raise _Unevaluable(f"duplicate expectation name '{exp.name}'")
        if isinstance(window, _Unevaluable):
            raise window
        if isinstance(window, _Window):
            base.update(window.evidence())
        if isinstance(exp, MqttExpectation):
            assert window is not None
            outcome, evidence, message = _mqtt(exp, run, window)
        elif isinstance(exp, ModbusWriteExpectation):
            assert window is not None
            outcome, evidence, message = _modbus_write(exp, run, window)
        elif isinstance(exp, ConditionExpectation):
            assert window is not None
            outcome, evidence, message = _condition(exp, run, window)
        elif isinstance(exp, KpiExpectation):
            outcome, evidence, message = _kpi(exp, run)
        else:
            assert isinstance(window, _Window)
            outcome, evidence, message = _EVALUATORS[exp.kind](exp, run, window)
    except _Unevaluable as exc:
        return Verdict(exp.name, exp.kind, "error", base, str(exc))
    except RunStoreError as exc:
        log.warning("expectation %s: %s", exp.name, exc)
        return Verdict(exp.name, exp.kind, "error", base, f"cannot read the run: {exc}")
    if isinstance(exp, _Windowed):
        evidence.setdefault("time_to_s", None)
    return Verdict(exp.name, exp.kind, outcome, {**base, **evidence}, message)


Result = tuple[Outcome, dict[str, Any], str]


def _short(text: str) -> str:
    if len(text) <= MAX_PAYLOAD_EVIDENCE:
        return text
    return text[:MAX_PAYLOAD_EVIDENCE - 3] + "..."


def _payload_test(topic: str, payload: Any,
                  payload_regex: str | None) -> tuple[Any, str]:
    """(test of a message's payload, `` matching /re/`` or `` containing {...}`` or '')."""
    if payload_regex is not None:
        regex = re.compile(payload_regex)
        return (lambda m: regex.search(m.payload) is not None), f" matching /{payload_regex}/"
    if payload is not None:
        return (lambda m: payload_contains(_parse_payload(m.payload), payload)), (
            f" containing {json.dumps(payload, sort_keys=True)}")
    return (lambda m: True), ""


def _mqtt(exp: MqttExpectation, run: _Run, w: _Window) -> Result:
    test, want = _payload_test(exp.topic, exp.payload, exp.payload_regex)
    on_topic = 0
    last: MqttMessage | None = None
    hits: list[MqttMessage] = []
    for msg in run.mqtt(w.start_s, w.end_s):
        if not topic_matches(exp.topic, msg.topic):
            continue
        on_topic += 1
        if test(msg):
            hits.append(msg)
            if exp.mode == "eventually":
                break
        last = msg
    if exp.mode == "never":
        if hits:
            m = hits[0]
            return "fail", {"t": m.t, "topic": m.topic, "payload": _short(m.payload),
                            "violations": len(hits)}, (
                f"{len(hits)} message(s) on {exp.topic}{want} {w.describe()}; the first on "
                f"{m.topic} at t = {m.t:g} s")
        return "pass", {"messages_on_topic": on_topic}, (
            f"no message on {exp.topic}{want} {w.describe()} ({on_topic} other(s) on the "
            "topic)")
    if hits:
        msg = hits[0]
        evidence: dict[str, Any] = {"t": msg.t, "topic": msg.topic,
                                    "payload": _short(msg.payload),
                                    "delay_s": msg.t - w.anchor_s, "time_to_s": msg.t - w.anchor_s}
        return "pass", evidence, (f"seen on {msg.topic} at t = {msg.t:g} s "
                                  f"({msg.t - w.anchor_s:g} s after {w.after})")
    evidence = {"messages_on_topic": on_topic, "deadline_s": w.end_s}
    if last is not None:
        evidence.update(last_t=last.t, last_topic=last.topic, last_payload=_short(last.payload))
    return "fail", evidence, (f"no message on {exp.topic}{want} {w.describe()} "
                              f"({on_topic} other message(s) on the topic)")


def _write_range(sel: ModbusWriteExpectation | Selector, unit: str) -> tuple[float, float, str]:
    """(lo, hi, text) of the written values ``sel`` accepts, in ``unit``."""
    try:
        if sel.value is not None:
            want = to_unit(sel.value, unit)
            tol = 0.0 if sel.tolerance is None else abs(to_unit(sel.tolerance, unit,
                                                                difference=True))
            slack = tol + 1e-9 * max(1.0, abs(want))
            text = f"= {show_value(want, unit)}" + (
                f" +/- {show_value(tol, _diff_unit(unit))}" if tol else "")
            return want - slack, want + slack, text
        lo = -math.inf if sel.min is None else to_unit(sel.min, unit)
        hi = math.inf if sel.max is None else to_unit(sel.max, unit)
        parts = ([f">= {show_value(lo, unit)}"] if sel.min is not None else []) + (
            [f"<= {show_value(hi, unit)}"] if sel.max is not None else [])
        return lo, hi, " and ".join(parts) or "any value"
    except UnitError as exc:
        raise _Unevaluable(f"point {sel.point} (unit {unit or 'dimensionless'}): "
                           f"{exc}") from None


def _modbus_write(exp: ModbusWriteExpectation, run: _Run, w: _Window) -> Result:
    unit = run.unit(exp.point)
    lo, hi, text = _write_range(exp, unit)
    writes = [c for c in run.commands() if c.point == exp.point
              and w.start_s <= c.t <= w.end_s and exp.source in ("any", c.source)]
    base = {"unit": unit}
    hits = [c for c in writes if lo <= c.value <= hi]
    if exp.mode == "never":
        if hits:
            c = hits[0]
            return "fail", {**base, "t": c.t, "value": c.value, "source": c.source,
                            "violations": len(hits)}, (
                f"{len(hits)} write(s) of {exp.point} {text} {w.describe()}; the first by "
                f"{c.source} = {show_value(c.value, unit)} at t = {c.t:g} s")
        return "pass", {**base, "writes": len(writes)}, (
            f"no write of {exp.point} {text} {w.describe()} ({len(writes)} other write(s))")
    if hits:
        c = hits[0]
        return "pass", {**base, "t": c.t, "value": c.value, "source": c.source,
                        "time_to_s": c.t - w.anchor_s}, (
            f"{c.source} wrote {exp.point} = {show_value(c.value, unit)} at t = {c.t:g} s")
    evidence = {**base, "writes": len(writes), "values": [c.value for c in writes][:20],
                "times": [c.t for c in writes][:20], "deadline_s": w.end_s}
    source = "any source" if exp.source == "any" else exp.source
    return "fail", evidence, (f"no write of {exp.point} {text} by {source} {w.describe()} "
                              f"({len(writes)} other write(s))")


def _condition(exp: ConditionExpectation, run: _Run, w: _Window) -> Result:
    unit = run.unit(exp.point)
    cmp = _comparison(exp, unit, f"point {exp.point}")
    col = run.columns[exp.point]
    data = run.truth if exp.signal == "truth" else run.measured
    mask = (run.t >= w.start_s) & (run.t <= w.end_s)
    t, x = run.t[mask], data[mask, col]
    valid = ~np.isnan(x)
    nan_count = int(len(x) - np.count_nonzero(valid))
    t, x = t[valid], x[valid]
    if len(x) == 0:
        raise _Unevaluable(f"no {exp.signal} samples of {exp.point} {w.describe()}"
                           + (f" ({nan_count} NaN)" if nan_count else ""))
    margin = cmp.margin(x)
    sat = margin > 0 if cmp.strict else margin >= 0
    evidence: dict[str, Any] = {"unit": unit, "samples": len(x)}
    if nan_count:
        evidence["nan_samples"] = nan_count
    what = f"{exp.point} ({exp.signal})"

    def at(i: int, **extra: Any) -> dict[str, Any]:
        return {**evidence, "t": float(t[i]), "value": float(x[i]), **extra}

    def shown(i: int) -> str:
        return f"{show_value(float(x[i]), unit)} at t = {t[i]:g} s"

    if exp.mode == "always":
        bad = np.flatnonzero(~sat)
        if len(bad):
            i = int(bad[0])
            return "fail", at(i, violations=len(bad)), (
                f"{what} not {cmp.text}: {shown(i)} ({len(bad)} of {len(x)} samples "
                f"{w.describe()})")
        i = int(np.argmin(margin))
        return "pass", at(i, extreme=True), (
            f"{what} stayed {cmp.text} {w.describe()}; closest {shown(i)}")
    hits = np.flatnonzero(sat)
    if exp.mode == "eventually":
        if len(hits):
            i = int(hits[0])
            return "pass", at(i, time_to_s=float(t[i]) - w.anchor_s), (
                f"{what} reached {cmp.text}: {shown(i)}")
        i = int(np.argmax(margin))
        return "fail", at(i, extreme=True), (
            f"{what} never {cmp.text} {w.describe()}; closest {shown(i)}")
    if len(hits):  # never
        i = int(hits[0])
        return "fail", at(i, violations=len(hits)), (
            f"{what} was {cmp.text}: {shown(i)} ({len(hits)} of {len(x)} samples)")
    i = int(np.argmax(margin))
    return "pass", at(i, extreme=True), (
        f"{what} never {cmp.text} {w.describe()}; closest {shown(i)}")


def _occurrences(sel: Selector, run: _Run, w: _Window) -> tuple[np.ndarray, str]:
    """Times (s, ascending) of the writes or messages ``sel`` selects in the window, and
    what they are (for messages)."""
    if sel.point is not None:
        unit = run.unit(sel.point)
        lo, hi, text = _write_range(sel, unit)
        times = [c.t for c in run.commands() if c.point == sel.point
                 and w.start_s <= c.t <= w.end_s and sel.source in ("any", c.source)
                 and lo <= c.value <= hi]
        source = "any source" if sel.source == "any" else sel.source
        return np.array(times, dtype=float), f"writes of {sel.point} {text} by {source}"
    assert sel.topic is not None
    test, want = _payload_test(sel.topic, sel.payload, sel.payload_regex)
    times = [m.t for m in run.mqtt(w.start_s, w.end_s)
             if topic_matches(sel.topic, m.topic) and test(m)]
    return np.array(times, dtype=float), f"messages on {sel.topic}{want}"


def _times(times: np.ndarray) -> list[float]:
    return [float(x) for x in times[:20]]


def _count(exp: CountExpectation, run: _Run, w: _Window) -> Result:
    times, what = _occurrences(exp, run, w)
    n = len(times)
    evidence: dict[str, Any] = {"count": n, "times": _times(times)}
    if exp.exactly is not None:
        ok, bound = n == exp.exactly, f"exactly {exp.exactly}"
    else:
        ok = (exp.at_most is None or n <= exp.at_most) and (
            exp.at_least is None or n >= exp.at_least)
        bound = " and ".join(([f"at least {exp.at_least}"] if exp.at_least is not None else [])
                             + ([f"at most {exp.at_most}"] if exp.at_most is not None else []))
    k = (exp.at_least or 1) if exp.exactly is None else max(1, exp.exactly)
    if ok and n >= k:
        evidence["time_to_s"] = float(times[k - 1]) - w.anchor_s
    if not ok:
        return "fail", evidence, f"{n} {what} {w.describe()}, wanted {bound}"
    if exp.min_spacing is not None and n > 1:
        gaps = np.diff(times)
        i = int(np.argmin(gaps))
        evidence["min_spacing_s"] = float(gaps[i])
        if gaps[i] < exp.min_spacing:
            evidence.update(t=float(times[i + 1]), previous_t=float(times[i]))
            evidence.pop("time_to_s", None)
            return "fail", evidence, (
                f"{what} only {gaps[i]:g} s apart (t = {times[i]:g} s and {times[i + 1]:g} s), "
                f"wanted at least {exp.min_spacing:g} s")
    spaced = f", at least {exp.min_spacing:g} s apart" if exp.min_spacing else ""
    return "pass", evidence, f"{n} {what} {w.describe()} ({bound}{spaced})"


def _rate(exp: RateExpectation, run: _Run, w: _Window) -> Result:
    times, what = _occurrences(exp, run, w)
    evidence: dict[str, Any] = {"count": len(times), "per_s": exp.per}
    if len(times) == 0:
        return "pass", {**evidence, "max_in_window": 0}, f"no {what} {w.describe()}"
    # occurrences in [t_i, t_i + per) for every occurrence t_i: the busiest sliding window
    counts = np.searchsorted(times, times + exp.per, side="left") - np.arange(len(times))
    i = int(np.argmax(counts))
    peak = int(counts[i])
    evidence.update(max_in_window=peak, t=float(times[i]),
                    time_to_s=float(times[0]) - w.anchor_s)
    text = (f"at most {peak} {what} in {exp.per:g} s (busiest window from t = "
            f"{times[i]:g} s)")
    if peak > exp.at_most:
        evidence.pop("time_to_s")
        return "fail", evidence, (f"{peak} {what} in {exp.per:g} s from t = {times[i]:g} s, "
                                  f"wanted at most {exp.at_most}")
    return "pass", evidence, text


def _sequence(exp: SequenceExpectation, run: _Run, w: _Window) -> Result:
    first, first_what = _occurrences(exp.first, run, w)
    then, then_what = _occurrences(exp.then, run, w)
    evidence: dict[str, Any] = {"first_count": len(first), "then_count": len(then)}
    if len(first) == 0:
        return "fail", evidence, f"no {first_what} {w.describe()}"
    a = float(first[0])
    evidence["first_t"] = a
    if len(then) == 0:
        return "fail", evidence, f"{first_what} at t = {a:g} s, then no {then_what}"
    b = float(then[0])
    gap = b - a
    evidence.update(then_t=b, gap_s=gap, t=b)
    if gap < exp.min_gap - 1e-9:
        when = "before" if gap < 0 else f"only {gap:g} s after"
        return "fail", evidence, (f"{then_what} at t = {b:g} s, {when} {first_what} at "
                                  f"t = {a:g} s (wanted at least {exp.min_gap:g} s after)")
    if exp.max_gap is not None and gap > exp.max_gap:
        return "fail", evidence, (f"{then_what} at t = {b:g} s, {gap:g} s after {first_what}"
                                  f" (wanted within {exp.max_gap:g} s)")
    evidence["time_to_s"] = b - w.anchor_s
    return "pass", evidence, (f"{first_what} at t = {a:g} s, then {then_what} "
                              f"{gap:g} s later")


def _alive(exp: AliveExpectation, run: _Run, w: _Window) -> Result:
    if exp.point is not None:
        unit = run.unit(exp.point)
        col = run.columns[exp.point]
        data = run.truth if exp.signal == "truth" else run.measured
        mask = (run.t >= w.start_s) & (run.t <= w.end_s)
        t, x = run.t[mask], data[mask, col]
        valid = ~np.isnan(x)
        t, x = t[valid], x[valid]
        if len(x) == 0:
            raise _Unevaluable(f"no {exp.signal} samples of {exp.point} {w.describe()}")
        signs = t[1:][np.diff(x) != 0]
        what = f"changes of {exp.point} ({exp.signal})"
        evidence: dict[str, Any] = {"unit": unit, "samples": len(x)}
    else:
        assert exp.topic is not None
        signs = np.array([m.t for m in run.mqtt(w.start_s, w.end_s)
                          if topic_matches(exp.topic, m.topic)], dtype=float)
        what = f"messages on {exp.topic}"
        evidence = {}
    edges = np.concatenate(([w.start_s], signs, [w.end_s]))
    gaps = np.diff(edges)
    i = int(np.argmax(gaps))
    evidence.update(signs=len(signs), max_gap_s=float(gaps[i]), gap_from=float(edges[i]),
                    gap_to=float(edges[i + 1]))
    if gaps[i] > exp.max_gap:
        end = "the end of the window" if i + 1 == len(edges) - 1 else f"t = {edges[i + 1]:g} s"
        return "fail", {**evidence, "t": float(edges[i])}, (
            f"no {what} for {gaps[i]:g} s, from t = {edges[i]:g} s to {end} (allowed "
            f"{exp.max_gap:g} s)")
    if len(signs):
        evidence["time_to_s"] = float(signs[0]) - w.anchor_s
    return "pass", evidence, (f"{len(signs)} {what} {w.describe()}, longest gap "
                              f"{gaps[i]:g} s")


_EVALUATORS: dict[str, Any] = {"count": _count, "rate": _rate, "sequence": _sequence,
                               "alive": _alive}


def _kpi(exp: KpiExpectation, run: _Run) -> Result:
    table = run.kpis()
    if table is None:
        raise _Unevaluable("no KPIs recorded for this run")
    value = table.get(exp.kpi)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(
            value):
        raise _Unevaluable(f"KPI '{exp.kpi}' not recorded (or not a number: {value!r})")
    unit = kpi_unit(exp.kpi)
    cmp = _comparison(exp, unit, f"KPI {exp.kpi}")
    ok = bool(cmp.satisfied(np.array([float(value)]))[0])
    evidence = {"kpi": exp.kpi, "value": float(value), "unit": unit}
    return ("pass" if ok else "fail"), evidence, (
        f"{exp.kpi} = {show_value(float(value), unit)} {'is' if ok else 'is not'} {cmp.text}")


# --------------------------------------------------------------------------- anchors


def fault_onsets_from_events(store: RunStore) -> dict[str, float]:
    """Fault id -> onset (s) from the ``fault`` events of a stored run.

    Relies on `rig.assess.faults` writing ``"<id> onset: ..."`` as the event message.
    """
    onsets: dict[str, float] = {}
    for e in store.events():
        if e.kind == "fault" and " onset:" in e.message:
            onsets.setdefault(e.message.split(" onset:", 1)[0], e.t)
    return onsets


__all__ = [
    "KPI_NAMES", "MQTT_EVENT_KIND", "AliveExpectation", "ConditionExpectation",
    "CountExpectation", "Expectation", "KpiExpectation", "ModbusWriteExpectation",
    "MqttExpectation", "MqttMessage", "RateExpectation", "Selector", "SequenceExpectation",
    "Verdict", "evaluate",
    "fault_onsets_from_events", "kpi_unit", "mqtt_events", "payload_contains",
    "read_columns", "record_mqtt", "to_unit", "topic_matches", "unit_dimension",
]
