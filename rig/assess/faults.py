"""The fault catalog and the scheduling of faults in simulated time.

A fault has an id, a kind from the catalog, a target, an onset (``at``) and a duration
(or ``until cleared``: to the end of the run), plus the kind's parameters in human units.
Physical and sensor faults change the twin (`twin.faults`); protocol faults change the
rig's adapters through their ``inject(kind, **params)`` hook.
"""

from __future__ import annotations

import functools
import logging
import operator
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import simpy
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from twin import faults as tf
from twin.plant import Twin
from twin.units import Duration, Fraction, MassFlow, Quantity, TemperatureDelta

log = logging.getLogger(__name__)

Clear = Callable[[], None]


class Injectable(Protocol):
    """An adapter that accepts protocol faults."""

    def inject(self, kind: str, **params: Any) -> Clear: ...


@dataclass
class FaultContext:
    """What a fault can act on: the twin and, in a live run, the protocol adapters."""

    twin: Twin
    adapters: dict[str, Injectable] = field(default_factory=dict)  # "modbus", "mqtt"


def _twin(fn: Callable[..., Clear]) -> Callable[..., Clear]:
    def apply(ctx: FaultContext, target: str, **params: Any) -> Clear:
        return fn(ctx.twin, target, **params)
    return apply


def _protocol(adapter: str, kind: str) -> Callable[..., Clear]:
    def apply(ctx: FaultContext, target: str, **params: Any) -> Clear:
        if adapter not in ctx.adapters:
            raise tf.FaultTargetError(
                f"{kind}: needs the live rig's {adapter} adapter (use 'heatrig run')")
        return ctx.adapters[adapter].inject(kind, target=target, **params)
    return apply


Signed = Annotated[float, BeforeValidator(Quantity("dimensionless")), Quantity("dimensionless")]
ModbusCode = Annotated[int, Field(ge=1, le=11)]


@dataclass(frozen=True)
class FaultKind:
    """One entry of the catalog."""

    name: str
    category: Literal["physical", "sensor", "protocol"]
    summary: str
    target: str  # what may be targeted
    apply: Callable[..., Clear]
    params: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (type, default)


def _kinds() -> list[FaultKind]:
    req = ...
    return [
        FaultKind("leak", "physical", "coolant leak", "cduN, cduN.rackMM, cduN.piping or facility",
                  _twin(tf.leak), {"rate": (Annotated[MassFlow, Field(gt=0, le=50)], req)}),
        FaultKind("pump_trip", "physical", "pump trips", "facility.pumpN or cduN",
                  _twin(tf.pump_trip)),
        FaultKind("pump_degraded", "physical", "pump delivers part of its head",
                  "facility.pumpN", _twin(tf.pump_degraded),
                  {"head_fraction": (Annotated[Fraction, Field(gt=0, lt=1)], req)}),
        FaultKind("valve_stuck", "physical", "CDU primary valve stops moving", "cduN",
                  _twin(tf.valve_stuck),
                  {"position": (Annotated[Fraction | None, Field(ge=0, le=1)], None)}),
        FaultKind("hx_fouling", "physical", "CDU exchanger loses conductance", "cduN",
                  _twin(tf.hx_fouling),
                  {"ua_loss": (Annotated[Fraction, Field(gt=0, le=1)], req)}),
        FaultKind("compressor_trip", "physical", "heat-pump compressor trips (latched)",
                  "hpN", _twin(tf.compressor_trip)),
        FaultKind("refrigerant_undercharge", "physical", "heat pump loses refrigerant flow",
                  "hpN", _twin(tf.refrigerant_undercharge),
                  {"capacity_loss": (Annotated[Fraction, Field(gt=0, lt=1)], req)}),
        FaultKind("fan_failure", "physical", "dry-cooler fans stop", "drycoolerN",
                  _twin(tf.fan_failure)),
        FaultKind("power_loss", "physical", "a CDU and its racks lose power", "cduN",
                  _twin(tf.power_loss)),
        FaultKind("it_load_step", "physical", "utilisation of every rack steps", "site",
                  _twin(tf.it_load_step),
                  {"delta": (Annotated[Signed, Field(ge=-1, le=1)], req)}),
        FaultKind("heat_wave", "physical", "outdoor temperature rises", "site",
                  _twin(tf.heat_wave),
                  {"offset": (Annotated[TemperatureDelta, Field(ge=-30, le=30)], req)}),
        FaultKind("demand_drop", "physical", "district demand falls (0 = network lost)",
                  "district", _twin(tf.demand_drop),
                  {"remaining": (Annotated[Fraction, Field(ge=0, lt=1)], 0.0)}),
        FaultKind("return_hot", "physical", "district network returns hotter", "district",
                  _twin(tf.return_hot),
                  {"offset": (Annotated[TemperatureDelta, Field(gt=0, le=60)], req)}),
        FaultKind("crah_failure", "physical", "air-side cooling loses capacity", "air",
                  _twin(tf.crah_failure),
                  {"remaining": (Annotated[Fraction, Field(ge=0, lt=1)], 0.0)}),
        FaultKind("sensor_bias", "sensor", "reading offset", "a sensor point id",
                  _twin(tf.sensor_bias), {"offset": (Signed, req)}),
        FaultKind("sensor_drift", "sensor", "reading drifts (point unit per second)",
                  "a sensor point id", _twin(tf.sensor_drift), {"rate": (Signed, req)}),
        FaultKind("sensor_noise", "sensor", "extra noise (standard deviation)",
                  "a sensor point id", _twin(tf.sensor_noise),
                  {"sd": (Annotated[Signed, Field(gt=0)], req)}),
        FaultKind("sensor_stuck", "sensor", "reading freezes", "a sensor point id",
                  _twin(tf.sensor_stuck)),
        FaultKind("sensor_dropout", "sensor", "no reading (NaN)", "a sensor point id",
                  _twin(tf.sensor_dropout)),
        FaultKind("sensor_spike", "sensor", "one sample jumps", "a sensor point id",
                  _twin(tf.sensor_spike), {"magnitude": (Signed, req)}),
        FaultKind("sensor_scaling", "sensor", "reading multiplied (wrong span)",
                  "a sensor point id", _twin(tf.sensor_scaling),
                  {"factor": (Annotated[Signed, Field(gt=0, le=100)], req)}),
        FaultKind("modbus_exception", "protocol", "requests answered with an exception",
                  "modbus or a device", _protocol("modbus", "modbus_exception"),
                  {"code": (ModbusCode, 6)}),
        FaultKind("modbus_latency", "protocol", "responses delayed", "modbus or a device",
                  _protocol("modbus", "modbus_latency"),
                  {"delay": (Annotated[Duration, Field(gt=0, le=60)], req)}),
        FaultKind("modbus_disconnect", "protocol", "connections dropped and refused",
                  "modbus", _protocol("modbus", "modbus_disconnect")),
        FaultKind("modbus_frozen", "protocol", "registers stop updating", "modbus or a device",
                  _protocol("modbus", "modbus_frozen")),
        FaultKind("mqtt_dropout", "protocol", "telemetry not published", "mqtt or a device",
                  _protocol("mqtt", "mqtt_dropout")),
        FaultKind("mqtt_delay", "protocol", "telemetry delayed", "mqtt or a device",
                  _protocol("mqtt", "mqtt_delay"),
                  {"delay": (Annotated[Duration, Field(gt=0, le=600)], req)}),
        FaultKind("mqtt_duplicate", "protocol", "every telemetry message sent twice",
                  "mqtt or a device", _protocol("mqtt", "mqtt_duplicate")),
        FaultKind("mqtt_reorder", "protocol", "telemetry messages swapped in pairs",
                  "mqtt or a device", _protocol("mqtt", "mqtt_reorder")),
        FaultKind("broker_loss", "protocol", "the rig loses its MQTT broker", "mqtt",
                  _protocol("mqtt", "broker_loss")),
    ]


CATALOG: dict[str, FaultKind] = {k.name: k for k in _kinds()}


def _until(value: object) -> object:
    if isinstance(value, str) and value.strip() == "until cleared":
        return None
    return value


class FaultBase(BaseModel):
    """Fields common to every fault."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
    target: str = Field(min_length=1, max_length=128)
    at: Duration = Field(ge=0)
    duration: Annotated[Annotated[Duration, Field(gt=0)] | None, BeforeValidator(_until)] = None


def _fault_models() -> tuple[type[BaseModel], ...]:
    models = []
    for kind in CATALOG.values():
        fields: dict[str, Any] = {"kind": (Literal[kind.name], ...)}
        fields.update(kind.params)
        model = create_model(f"Fault_{kind.name}", __base__=FaultBase,
                             __doc__=f"{kind.summary} (target: {kind.target})", **fields)
        models.append(model)
    return tuple(models)


FAULT_MODELS = _fault_models()
if TYPE_CHECKING:  # the union of the catalog's models exists only at run time

    class FaultSpec(FaultBase):
        """What the type checker knows of every catalog fault."""

        kind: str
else:
    FaultSpec = Annotated[functools.reduce(operator.or_, FAULT_MODELS),
                          Field(discriminator="kind")]


@dataclass
class ScheduledFault:
    """A fault's run-time record: when it started and ended (simulated s)."""

    spec: FaultSpec
    onset_s: float | None = None
    end_s: float | None = None
    error: str | None = None


def schedule(ctx: FaultContext, specs: list[FaultSpec]) -> list[ScheduledFault]:
    """Start a SimPy process per fault; returns their run-time records."""
    records = [ScheduledFault(spec) for spec in specs]
    for record in records:
        ctx.twin.env.process(_run_fault(ctx, record))
    return records


def _run_fault(ctx: FaultContext, record: ScheduledFault,
               ) -> Generator[simpy.Event, object, None]:
    tw = ctx.twin
    spec: Any = record.spec
    kind = CATALOG[spec.kind]
    if spec.at > tw.now:
        yield tw.env.timeout(spec.at - tw.now)
    params = {name: getattr(spec, name) for name in kind.params}
    try:
        clear = kind.apply(ctx, spec.target, **params)
    except (tf.FaultTargetError, ValueError) as exc:
        record.error = str(exc)
        tw.emit("faults", "fault_error", f"{spec.id}: {exc}")
        return
    record.onset_s = tw.now
    detail = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in params.items() if v is not None)
    tw.emit(spec.target, "fault", f"{spec.id} onset: {spec.kind} {detail}".rstrip())
    if spec.duration is None:
        return
    yield tw.env.timeout(spec.duration)
    clear()
    record.end_s = tw.now
    tw.emit(spec.target, "fault_cleared", f"{spec.id} cleared")


def catalog_text() -> str:
    """The catalog as a table for `heatrig faults`."""
    rows = []
    for kind in CATALOG.values():
        params = ", ".join(
            f"{name}{'' if default is ... else f'={default}'}"
            for name, (_, default) in kind.params.items()) or "-"
        rows.append((kind.category, kind.name, kind.target, params, kind.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("category", "kind", "target", "parameters", "what happens")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, [*widths, 0], strict=False))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, [*widths, 0], strict=False)))
    return "\n".join(line.rstrip() for line in lines)
