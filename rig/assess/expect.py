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
``kpi``
    a run KPI (a name of `twin.kpis.REGISTRY`: ``pue``, ``erf``, ``ere``, ``cop``, ...)
    compared like a condition, from the store's latest KPI record. Values are converted
    into the KPI's registry unit: a ``kWh`` KPI takes energies (``5 MWh``), an ``h`` KPI
    durations, a ``kg`` KPI masses, a ratio (``1``) plain numbers or percentages. No
    window.

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


class MqttExpectation(_Windowed):
    """The SUT publishes a matching message on ``topic`` in the window."""

    kind: Literal["mqtt"]
    topic: str = Field(min_length=1, max_length=512)
    payload: Any = None
    payload_regex: str | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _check(self) -> MqttExpectation:
        problem = topic_filter_problem(self.topic)
        if problem:
            raise ValueError(f"topic {self.topic!r}: {problem}")
        if self.payload is not None and self.payload_regex is not None:
            raise ValueError("give either 'payload' or 'payload_regex', not both")
        if self.payload_regex is not None:
            try:
                re.compile(self.payload_regex)
            except re.error as exc:
                raise ValueError(f"payload_regex: {exc}") from None
        return self


class ModbusWriteExpectation(_Windowed):
    """The SUT writes ``point`` to ``value`` (or into ``min``..``max``) in the window."""

    kind: Literal["modbus_write"]
    point: str = Field(min_length=1, max_length=128)
    value: HumanValue | None = None
    tolerance: HumanValue | None = None
    min: HumanValue | None = None
    max: HumanValue | None = None
    source: str = Field("modbus", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _check(self) -> ModbusWriteExpectation:
        if self.value is not None and (self.min is not None or self.max is not None):
            raise ValueError("give either 'value' or 'min'/'max', not both")
        if self.tolerance is not None and self.value is None:
            raise ValueError("'tolerance' applies to 'value' only")
        return self


class ConditionExpectation(_Windowed, _Compared):
    """A point's value must satisfy a comparison always, eventually or never."""

    kind: Literal["condition"]
    point: str = Field(min_length=1, max_length=128)
    signal: Signal = "truth"
    mode: Mode = "always"


class KpiExpectation(_Base, _Compared):
    """A run KPI must satisfy a comparison."""

    kind: Literal["kpi"]
    kpi: Literal[KPI_NAMES]  # type: ignore[valid-type]


Expectation = Annotated[
    MqttExpectation | ModbusWriteExpectation | ConditionExpectation | KpiExpectation,
    Field(discriminator="kind"),
]
"""One entry of a scenario's ``expect:`` list."""

AnyExpectation = MqttExpectation | ModbusWriteExpectation | ConditionExpectation | KpiExpectation


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
        if isinstance(exp, ConditionExpectation) and exp.point in store.point_index:
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
    if isinstance(exp, ModbusWriteExpectation | ConditionExpectation):
        base["point"] = exp.point
    if isinstance(exp, ConditionExpectation):
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
        else:
            outcome, evidence, message = _kpi(exp, run)
    except _Unevaluable as exc:
        return Verdict(exp.name, exp.kind, "error", base, str(exc))
    except RunStoreError as exc:
        log.warning("expectation %s: %s", exp.name, exc)
        return Verdict(exp.name, exp.kind, "error", base, f"cannot read the run: {exc}")
    return Verdict(exp.name, exp.kind, outcome, {**base, **evidence}, message)


Result = tuple[Outcome, dict[str, Any], str]


def _short(text: str) -> str:
    if len(text) <= MAX_PAYLOAD_EVIDENCE:
        return text
    return text[:MAX_PAYLOAD_EVIDENCE - 3] + "..."


def _mqtt(exp: MqttExpectation, run: _Run, w: _Window) -> Result:
    regex = re.compile(exp.payload_regex) if exp.payload_regex is not None else None
    on_topic = 0
    last: MqttMessage | None = None
    for msg in run.mqtt(w.start_s, w.end_s):
        if not topic_matches(exp.topic, msg.topic):
            continue
        on_topic += 1
        if regex is not None:
            ok = regex.search(msg.payload) is not None
        elif exp.payload is not None:
            ok = payload_contains(_parse_payload(msg.payload), exp.payload)
        else:
            ok = True
        if ok:
            evidence: dict[str, Any] = {"t": msg.t, "topic": msg.topic,
                                        "payload": _short(msg.payload),
                                        "delay_s": msg.t - w.anchor_s}
            return "pass", evidence, (f"seen on {msg.topic} at t = {msg.t:g} s "
                                      f"({msg.t - w.anchor_s:g} s after {w.after})")
        last = msg
    want = ""
    if regex is not None:
        want = f" matching /{exp.payload_regex}/"
    elif exp.payload is not None:
        want = f" containing {json.dumps(exp.payload, sort_keys=True)}"
    evidence = {"messages_on_topic": on_topic, "deadline_s": w.end_s}
    if last is not None:
        evidence.update(last_t=last.t, last_topic=last.topic, last_payload=_short(last.payload))
    return "fail", evidence, (f"no message on {exp.topic}{want} {w.describe()} "
                              f"({on_topic} other message(s) on the topic)")


def _modbus_write(exp: ModbusWriteExpectation, run: _Run, w: _Window) -> Result:
    unit = run.unit(exp.point)
    label = f"point {exp.point}"
    try:
        if exp.value is not None:
            want = to_unit(exp.value, unit)
            tol = 0.0 if exp.tolerance is None else abs(to_unit(exp.tolerance, unit,
                                                                difference=True))
            lo, hi = want - tol - 1e-9 * max(1.0, abs(want)), want + tol + 1e-9 * max(
                1.0, abs(want))
            text = f"= {show_value(want, unit)}" + (
                f" +/- {show_value(tol, _diff_unit(unit))}" if tol else "")
        else:
            lo = -math.inf if exp.min is None else to_unit(exp.min, unit)
            hi = math.inf if exp.max is None else to_unit(exp.max, unit)
            parts = ([f">= {show_value(lo, unit)}"] if exp.min is not None else []) + (
                [f"<= {show_value(hi, unit)}"] if exp.max is not None else [])
            text = " and ".join(parts) or "any value"
    except UnitError as exc:
        raise _Unevaluable(f"{label} (unit {unit or 'dimensionless'}): {exc}") from None
    writes = [c for c in run.commands() if c.point == exp.point
              and w.start_s <= c.t <= w.end_s and exp.source in ("any", c.source)]
    base = {"unit": unit}
    for c in writes:
        if lo <= c.value <= hi:
            return "pass", {**base, "t": c.t, "value": c.value, "source": c.source}, (
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
            return "pass", at(i), f"{what} reached {cmp.text}: {shown(i)}"
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
    "KPI_NAMES", "MQTT_EVENT_KIND", "ConditionExpectation", "Expectation", "KpiExpectation",
    "ModbusWriteExpectation", "MqttExpectation", "MqttMessage", "Verdict", "evaluate",
    "fault_onsets_from_events", "kpi_unit", "mqtt_events", "payload_contains",
    "read_columns", "record_mqtt", "to_unit", "topic_matches", "unit_dimension",
]
