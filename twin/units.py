"""Human units at the edges: parse ``25 kW``, ``35 degC``, ``2 h`` into SI floats.

Inside heatrig every quantity is a plain float in its SI unit (W, J, s, kg/s, m3/s, Pa,
m3, kg, m, m2, W/K, J/K, rev/s, m3 per revolution), with three stated exceptions:

- temperatures are degC (``K`` input is converted: 300 K -> 26.85 degC); temperature
  differences are K (= degC as a difference);
- fractions are plain 0..1 numbers (``75 %`` -> 0.75; the type does not bound them, fields
  add ``Field(ge=0, le=1)`` where the range is meant);
- emission factors are kg/kWh (kg CO2 per kWh), the unit they are quoted in.

Pressures: the parser only scales units, it never adds or removes atmospheric pressure.
A pressure is absolute Pa unless the field's own documentation says gauge or difference;
suffixes such as ``barg`` or ``bar(a)`` are refused rather than silently ignored.

A plain number (or a numeric string without unit) is taken as already in the SI unit of
its dimension. Booleans, NaN and infinities are refused. Units are case-sensitive
(``MW`` is not ``mW``); spaces between number and unit are optional.

The Annotated types at the end (`Power`, `Temperature`, ...) plug this into pydantic 2:
``max_power: Power = Field(25e3, gt=0)`` accepts ``25 kW`` or ``25000``; bounds are checked
after conversion, in SI.
"""

from __future__ import annotations

import decimal
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BeforeValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from twin.errors import UnitError

ABSOLUTE_ZERO_DEGC = -273.15

_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_QUANTITY = re.compile(rf"\s*({_NUMBER})\s*(.*?)\s*", re.DOTALL)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class _Dimension:
    """One dimension: how to name it, its units and how to display values."""

    label: str  # "a power"
    example: str  # "25 kW"
    si: str  # unit of the internal float
    listed: tuple[str, ...]  # units named in error messages
    display: tuple[str, ...]  # units format_quantity may choose, ascending
    units: dict[str, tuple[float, float]] = field(default_factory=dict)  # u -> (scale, offset)


def _scaled(**scales: float) -> dict[str, tuple[float, float]]:
    return {unit: (scale, 0.0) for unit, scale in scales.items()}


_HOUR = 3600.0
_LITRE = 1e-3

_DIMENSIONS: dict[str, _Dimension] = {
    "power": _Dimension(
        "a power", "25 kW", "W", ("W", "kW", "MW"), ("W", "kW", "MW"),
        _scaled(W=1.0, kW=1e3, MW=1e6),
    ),
    "energy": _Dimension(
        "an energy", "10 kWh", "J", ("J", "kJ", "MJ", "GJ", "Wh", "kWh", "MWh"),
        ("J", "kJ", "kWh", "MWh", "GWh"),
        _scaled(J=1.0, kJ=1e3, MJ=1e6, GJ=1e9, Wh=_HOUR, kWh=_HOUR * 1e3, MWh=_HOUR * 1e6,
                GWh=_HOUR * 1e9),
    ),
    "temperature": _Dimension(
        "a temperature", "35 degC", "degC", ("degC", "°C", "K"), ("degC",),
        {"degC": (1.0, 0.0), "°C": (1.0, 0.0), "℃": (1.0, 0.0), "K": (1.0, ABSOLUTE_ZERO_DEGC)},
    ),
    "temperature_difference": _Dimension(
        "a temperature difference", "5 K", "K", ("K", "degC", "°C"), ("K",),
        _scaled(K=1.0, degC=1.0, **{"°C": 1.0, "℃": 1.0}),
    ),
    "duration": _Dimension(
        "a duration", "2 h", "s", ("ms", "s", "min", "h", "d"), ("ms", "s", "min", "h", "d"),
        _scaled(ms=1e-3, s=1.0, min=60.0, h=_HOUR, d=24 * _HOUR),
    ),
    "mass_flow": _Dimension(
        "a mass flow", "5 kg/s", "kg/s", ("kg/s", "kg/h", "t/h"), ("kg/s",),
        _scaled(**{"kg/s": 1.0, "kg/h": 1 / _HOUR, "t/h": 1e3 / _HOUR}),
    ),
    "volume_flow": _Dimension(
        "a volume flow", "10 m3/h", "m3/s", ("m3/s", "m3/h", "L/s", "L/min"), ("m3/h",),
        _scaled(**{"m3/s": 1.0, "m³/s": 1.0, "m3/h": 1 / _HOUR, "m³/h": 1 / _HOUR,
                   "L/s": _LITRE, "l/s": _LITRE, "L/min": _LITRE / 60, "l/min": _LITRE / 60}),
    ),
    "pressure": _Dimension(
        "a pressure", "2 bar", "Pa", ("Pa", "kPa", "bar", "MPa"), ("Pa", "kPa", "bar"),
        _scaled(Pa=1.0, kPa=1e3, bar=1e5, MPa=1e6),
    ),
    "volume": _Dimension(
        "a volume", "200 L", "m3", ("m3", "L"), ("L", "m3"),
        _scaled(m3=1.0, **{"m³": 1.0}, L=_LITRE, l=_LITRE),
    ),
    "mass": _Dimension("a mass", "800 kg", "kg", ("kg", "t"), ("kg", "t"), _scaled(kg=1.0, t=1e3)),
    "length": _Dimension(
        "a length", "50 m", "m", ("m", "mm", "km"), ("mm", "m", "km"),
        _scaled(m=1.0, mm=1e-3, km=1e3),
    ),
    "area": _Dimension("an area", "0.25 m2", "m2", ("m2",), ("m2",),
                       _scaled(m2=1.0, **{"m²": 1.0})),
    "thermal_conductance": _Dimension(
        "a thermal conductance", "80 kW/K", "W/K", ("W/K", "kW/K"), ("W/K", "kW/K", "MW/K"),
        _scaled(**{"W/K": 1.0, "kW/K": 1e3, "MW/K": 1e6}),
    ),
    "heat_capacity": _Dimension(
        "a heat capacity", "60 kJ/K", "J/K", ("J/K", "kJ/K", "MJ/K"), ("J/K", "kJ/K", "MJ/K"),
        _scaled(**{"J/K": 1.0, "kJ/K": 1e3, "MJ/K": 1e6}),
    ),
    "fraction": _Dimension("a fraction", "75 %", "", ("%",), ("%",), _scaled(**{"%": 0.01})),
    "speed": _Dimension(
        "a speed", "3000 rpm", "rev/s", ("rpm", "Hz", "rev/s"), ("rev/s",),
        _scaled(**{"rpm": 1 / 60, "RPM": 1 / 60, "rev/min": 1 / 60, "Hz": 1.0, "rev/s": 1.0}),
    ),
    "dimensionless": _Dimension("a dimensionless number", "0.5", "", (), ()),
    "emission_factor": _Dimension(
        "an emission factor", "380 g/kWh", "kg/kWh", ("g/kWh", "kg/kWh", "kg/MWh"), ("kg/kWh",),
        _scaled(**{"g/kWh": 1e-3, "kg/kWh": 1.0, "kg/MWh": 1e-3, "t/MWh": 1.0}),
    ),
    "volume_per_revolution": _Dimension(
        "a displacement (volume per revolution)", "120 cm3", "m3", ("m3", "cm3", "L"),
        ("cm3", "L", "m3"),
        _scaled(m3=1.0, cm3=1e-6, L=_LITRE, l=_LITRE, **{"m³": 1.0, "cm³": 1e-6, "m3/rev": 1.0,
                                                          "cm3/rev": 1e-6, "L/rev": _LITRE}),
    ),
}

DIMENSIONS: tuple[str, ...] = tuple(_DIMENSIONS)
"""Names accepted as ``dimension`` by `parse_quantity` and `format_quantity`."""


def _dimension(name: str) -> _Dimension:
    try:
        return _DIMENSIONS[name]
    except KeyError:
        raise ValueError(f"unknown dimension {name!r} (known: {', '.join(DIMENSIONS)})") from None


def _expected(dim: _Dimension) -> str:
    units = f" (units: {', '.join(dim.listed)})" if dim.listed else ""
    return f"expected {dim.label} such as '{dim.example}'{units}"


def _shown(value: object) -> str:
    """The offending input, short enough for a message."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, numbers.Real | decimal.Decimal):
        text = str(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(value).__name__}"


def _case_hint(dim: _Dimension, unit: str) -> str:
    for known in dim.units:
        if known.lower() == unit.lower():
            return f"; units are case-sensitive: did you mean '{known}'?"
    return ""


def _finite(dim: _Dimension, value: float, shown: str) -> float:
    if not math.isfinite(value):
        raise UnitError(f"{_expected(dim)}, got {shown}: not a finite number")
    return value


def _temperature_check(name: str, dim: _Dimension, value: float, shown: str) -> float:
    if name == "temperature" and value < ABSOLUTE_ZERO_DEGC - 1e-9:
        raise UnitError(f"{_expected(dim)}, got {shown}: below absolute zero (-273.15 degC)")
    return value


def parse_quantity(text_or_number: object, dimension: str) -> float:
    """Return ``text_or_number`` in the SI unit of ``dimension`` (degC for temperatures).

    A number is taken as SI; a string is ``'25 kW'``, ``'1e3 W'``, ``'-5 degC'`` or a bare
    ``'30'`` (SI). Raises `UnitError` naming the accepted units; raises ``ValueError`` for
    an unknown ``dimension`` (a programming error).
    """
    dim = _dimension(dimension)
    value = text_or_number
    shown = _shown(value)
    if isinstance(value, bool):
        raise UnitError(f"{_expected(dim)}, got {shown}")
    if isinstance(value, numbers.Real | decimal.Decimal):
        try:
            number = float(value)
        except (OverflowError, ValueError):
            raise UnitError(f"{_expected(dim)}, got {shown}: not a finite number") from None
        return _temperature_check(dimension, dim, _finite(dim, number, shown), shown)
    if not isinstance(value, str):
        raise UnitError(f"{_expected(dim)}, got {shown}")
    match = _QUANTITY.fullmatch(value)
    if match is None:
        if value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise UnitError(f"{_expected(dim)}, got {shown}: not a finite number")
        raise UnitError(f"{_expected(dim)}, got {shown}")
    number = _finite(dim, float(match.group(1)), shown)
    unit = _SPACES.sub("", match.group(2))
    if not unit:
        return _temperature_check(dimension, dim, number, shown)
    if unit not in dim.units:
        raise UnitError(f"{_expected(dim)}, got {shown}{_case_hint(dim, unit)}")
    scale, offset = dim.units[unit]
    result = _finite(dim, number * scale + offset, shown)
    return _temperature_check(dimension, dim, result, shown)


def _number(value: float) -> str:
    text = f"{value:.6g}"
    return "0" if text in ("-0", "0") else text


def format_quantity(value_si: float, dimension: str) -> str:
    """Format an SI value (degC for temperatures) with a readable unit: ``25 kW``, ``2 h``.

    The result parses back with `parse_quantity` (to 6 significant digits).
    """
    dim = _dimension(dimension)
    if not dim.display:
        return _number(value_si)
    chosen = dim.display[0]
    magnitude = abs(value_si)
    if math.isfinite(magnitude):
        for unit in dim.display:
            if magnitude >= dim.units[unit][0] * (1 - 1e-9):
                chosen = unit
    scale, offset = dim.units[chosen]
    shown = (value_si - offset) / scale
    return f"{_number(shown)} {chosen}"


@dataclass(frozen=True)
class Quantity:
    """Pydantic metadata for a quantity field: converts input and describes the JSON schema.

    Used as both the ``BeforeValidator`` function and a marker (``dimension``) that tools
    such as `rig.config.loader` read to phrase bound errors in the field's units.
    """

    dimension: str

    def __call__(self, value: Any) -> float:
        """Convert ``value`` to SI (the BeforeValidator function)."""
        return parse_quantity(value, self.dimension)

    def string_pattern(self) -> str:
        """A regular expression for the accepted strings (JSON Schema ``pattern``)."""
        units = sorted(_dimension(self.dimension).units, key=len, reverse=True)
        unit = f"(?:{'|'.join(re.escape(u) for u in units)})?" if units else ""
        return rf"^\s*{_NUMBER}\s*{unit}\s*$"

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Number (SI, with the field's bounds) or string with a unit, in validation mode."""
        number = handler(core_schema)
        if handler.mode == "serialization":
            return number
        dim = _dimension(self.dimension)
        unit = f" in {dim.si}" if dim.si else ""
        units = f"; units: {', '.join(dim.listed)}" if dim.listed else ""
        return {
            "anyOf": [number, {"type": "string", "pattern": self.string_pattern()}],
            "description": (
                f"{dim.label[dim.label.index(' ') + 1:]}: a number{unit} or a string such as "
                f"'{dim.example}'{units}; bounds apply after conversion"
            ),
        }


_POWER = Quantity("power")
Power = Annotated[float, BeforeValidator(_POWER), _POWER]
"""Power in W."""

_ENERGY = Quantity("energy")
Energy = Annotated[float, BeforeValidator(_ENERGY), _ENERGY]
"""Energy in J."""

_TEMPERATURE = Quantity("temperature")
Temperature = Annotated[float, BeforeValidator(_TEMPERATURE), _TEMPERATURE]
"""Temperature in degC."""

_TEMPERATUREDELTA = Quantity("temperature_difference")
TemperatureDelta = Annotated[float, BeforeValidator(_TEMPERATUREDELTA), _TEMPERATUREDELTA]
"""Temperature difference in K."""

_DURATION = Quantity("duration")
Duration = Annotated[float, BeforeValidator(_DURATION), _DURATION]
"""Duration in s."""

_MASSFLOW = Quantity("mass_flow")
MassFlow = Annotated[float, BeforeValidator(_MASSFLOW), _MASSFLOW]
"""Mass flow in kg/s."""

_VOLUMEFLOW = Quantity("volume_flow")
VolumeFlow = Annotated[float, BeforeValidator(_VOLUMEFLOW), _VOLUMEFLOW]
"""Volume flow in m3/s."""

_PRESSURE = Quantity("pressure")
Pressure = Annotated[float, BeforeValidator(_PRESSURE), _PRESSURE]
"""Pressure in Pa (absolute unless the field says gauge or difference)."""

_VOLUME = Quantity("volume")
Volume = Annotated[float, BeforeValidator(_VOLUME), _VOLUME]
"""Volume in m3."""

_MASS = Quantity("mass")
Mass = Annotated[float, BeforeValidator(_MASS), _MASS]
"""Mass in kg."""

_LENGTH = Quantity("length")
Length = Annotated[float, BeforeValidator(_LENGTH), _LENGTH]
"""Length in m."""

_AREA = Quantity("area")
Area = Annotated[float, BeforeValidator(_AREA), _AREA]
"""Area in m2."""

_THERMALCONDUCTANCE = Quantity("thermal_conductance")
ThermalConductance = Annotated[float, BeforeValidator(_THERMALCONDUCTANCE), _THERMALCONDUCTANCE]
"""Thermal conductance in W/K."""

_HEATCAPACITY = Quantity("heat_capacity")
HeatCapacity = Annotated[float, BeforeValidator(_HEATCAPACITY), _HEATCAPACITY]
"""Heat capacity in J/K."""

_FRACTION = Quantity("fraction")
Fraction = Annotated[float, BeforeValidator(_FRACTION), _FRACTION]
"""Fraction in 0..1 (not bounded by the type)."""

_SPEED = Quantity("speed")
Speed = Annotated[float, BeforeValidator(_SPEED), _SPEED]
"""Speed in rev/s."""

_EMISSIONFACTOR = Quantity("emission_factor")
EmissionFactor = Annotated[float, BeforeValidator(_EMISSIONFACTOR), _EMISSIONFACTOR]
"""Emission factor in kg/kWh."""

_DISPLACEMENT = Quantity("volume_per_revolution")
Displacement = Annotated[float, BeforeValidator(_DISPLACEMENT), _DISPLACEMENT]
"""Volume per revolution in m3 per revolution."""

__all__ = [
    "DIMENSIONS",
    "Area",
    "Displacement",
    "Duration",
    "EmissionFactor",
    "Energy",
    "Fraction",
    "HeatCapacity",
    "Length",
    "Mass",
    "MassFlow",
    "Power",
    "Pressure",
    "Quantity",
    "Speed",
    "Temperature",
    "TemperatureDelta",
    "ThermalConductance",
    "Volume",
    "VolumeFlow",
    "format_quantity",
    "parse_quantity",
]
