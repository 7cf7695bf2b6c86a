"""Human units: parsing to SI, formatting, errors, and the pydantic types."""

from __future__ import annotations

import math
import re
import typing

import pytest
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from twin import units
from twin.errors import UnitError
from twin.units import (
    DIMENSIONS,
    Power,
    Quantity,
    Temperature,
    TemperatureDelta,
    format_quantity,
    parse_quantity,
)

CASES = [
    # power, W
    ("25 kW", "power", 25e3), ("25kW", "power", 25e3), ("1.5 MW", "power", 1.5e6),
    ("300 W", "power", 300.0), ("1e3 W", "power", 1e3), ("2.5e-1kW", "power", 250.0),
    # energy, J
    ("1 J", "energy", 1.0), ("2 kJ", "energy", 2e3), ("3 MJ", "energy", 3e6),
    ("1 GJ", "energy", 1e9), ("1 Wh", "energy", 3600.0), ("1 kWh", "energy", 3.6e6),
    ("2 MWh", "energy", 7.2e9),
    # temperature, degC
    ("35 degC", "temperature", 35.0), ("35 °C", "temperature", 35.0),
    ("35°C", "temperature", 35.0), ("-5 degC", "temperature", -5.0),
    ("300 K", "temperature", 26.85), ("273.15 K", "temperature", 0.0),
    # temperature difference, K
    ("5 K", "temperature_difference", 5.0), ("5 degC", "temperature_difference", 5.0),
    ("5 °C", "temperature_difference", 5.0), ("-3 K", "temperature_difference", -3.0),
    # duration, s
    ("250 ms", "duration", 0.25), ("30 s", "duration", 30.0), ("5 min", "duration", 300.0),
    ("2 h", "duration", 7200.0), ("1 d", "duration", 86400.0),
    # mass flow, kg/s
    ("5 kg/s", "mass_flow", 5.0), ("3600 kg/h", "mass_flow", 1.0), ("36 t/h", "mass_flow", 10.0),
    # volume flow, m3/s
    ("0.5 m3/s", "volume_flow", 0.5), ("36 m3/h", "volume_flow", 0.01),
    ("2 L/s", "volume_flow", 2e-3), ("60 L/min", "volume_flow", 1e-3),
    # pressure, Pa
    ("101325 Pa", "pressure", 101325.0), ("250 kPa", "pressure", 2.5e5),
    ("2 bar", "pressure", 2e5), ("1.2 MPa", "pressure", 1.2e6),
    # volume, m3
    ("2 m3", "volume", 2.0), ("200 L", "volume", 0.2),
    # mass, kg
    ("800 kg", "mass", 800.0), ("5 t", "mass", 5000.0),
    # length, m
    ("50 m", "length", 50.0), ("25 mm", "length", 0.025), ("2 km", "length", 2000.0),
    # area, m2
    ("0.25 m2", "area", 0.25),
    # thermal conductance, W/K
    ("150 W/K", "thermal_conductance", 150.0), ("80 kW/K", "thermal_conductance", 8e4),
    # heat capacity, J/K
    ("500 J/K", "heat_capacity", 500.0), ("60 kJ/K", "heat_capacity", 6e4),
    ("20 MJ/K", "heat_capacity", 2e7),
    # fraction
    ("75 %", "fraction", 0.75), ("75%", "fraction", 0.75), ("0.3", "fraction", 0.3),
    # speed, rev/s
    ("3000 rpm", "speed", 50.0), ("50 Hz", "speed", 50.0),
    # dimensionless
    ("0.5", "dimensionless", 0.5), ("-2", "dimensionless", -2.0),
    # emission factor, kg/kWh
    ("380 g/kWh", "emission_factor", 0.38), ("0.38 kg/kWh", "emission_factor", 0.38),
    ("380 kg/MWh", "emission_factor", 0.38),
    # compressor displacement, m3 per revolution
    ("2e-3 m3", "volume_per_revolution", 2e-3), ("120 cm3", "volume_per_revolution", 1.2e-4),
    ("2 L", "volume_per_revolution", 2e-3),
]


@pytest.mark.parametrize(("text", "dimension", "expected"), CASES)
def test_parse_converts_to_si(text: str, dimension: str, expected: float) -> None:
    assert parse_quantity(text, dimension) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_every_dimension_is_covered() -> None:
    assert {dimension for _, dimension, _ in CASES} == set(DIMENSIONS)


@pytest.mark.parametrize("dimension", DIMENSIONS)
@pytest.mark.parametrize(("value", "expected"), [
    (25, 25.0), (0.5, 0.5), (-5, -5.0), ("1e3", 1e3), (" 42 ", 42.0), ("-5", -5.0),
    ("+.5", 0.5),
])
def test_plain_numbers_are_si(dimension: str, value: object, expected: float) -> None:
    assert parse_quantity(value, dimension) == expected


def test_exact_error_message_names_dimension_units_and_input() -> None:
    with pytest.raises(UnitError) as caught:
        parse_quantity("25 kg", "power")
    assert str(caught.value) == (
        "expected a power such as '25 kW' (units: W, kW, MW), got '25 kg'")


def test_units_are_case_sensitive_with_a_hint() -> None:
    with pytest.raises(UnitError, match=r"case-sensitive: did you mean 'kW'\?"):
        parse_quantity("25 kw", "power")
    with pytest.raises(UnitError):
        parse_quantity("1 mw", "power")  # never silently megawatts


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_refused(value: bool) -> None:
    with pytest.raises(UnitError, match="got a boolean"):
        parse_quantity(value, "power")


@pytest.mark.parametrize("value", [
    math.nan, math.inf, -math.inf, "nan", "inf", "-inf", "NaN kW", "1e400 W", 10**400,
])
def test_non_finite_is_refused(value: object) -> None:
    with pytest.raises(UnitError):
        parse_quantity(value, "power")


@pytest.mark.parametrize(("value", "dimension"), [
    ("", "power"), ("kW", "power"), ("25 kW kW", "power"), ("1,5 kW", "power"),
    (None, "power"), ([1], "power"), ({"kW": 1}, "power"), ("5 barg", "pressure"),
    ("5 C", "temperature"), ("5 %", "dimensionless"), ("2 h", "power"),
])
def test_bad_inputs_raise_unit_error(value: object, dimension: str) -> None:
    with pytest.raises(UnitError, match=r"^expected "):
        parse_quantity(value, dimension)


def test_temperature_below_absolute_zero_is_refused() -> None:
    with pytest.raises(UnitError, match="absolute zero"):
        parse_quantity("-300 degC", "temperature")
    assert parse_quantity("-300 K", "temperature_difference") == -300.0


def test_unknown_dimension_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown dimension 'speediness'") as caught:
        parse_quantity(1, "speediness")
    assert not isinstance(caught.value, UnitError)


@pytest.mark.parametrize(("value", "dimension", "text"), [
    (25e3, "power", "25 kW"), (35.0, "temperature", "35 degC"), (7200.0, "duration", "2 h"),
    (0.25, "duration", "250 ms"), (90.0, "duration", "1.5 min"), (2e5, "pressure", "2 bar"),
    (0.75, "fraction", "75 %"), (0.2, "volume", "200 L"), (3.6e6, "energy", "1 kWh"),
    (0.0, "power", "0 W"), (-3e3, "power", "-3 kW"), (0.5, "dimensionless", "0.5"),
    (50.0, "speed", "50 rev/s"), (0.38, "emission_factor", "0.38 kg/kWh"),
])
def test_format_quantity(value: float, dimension: str, text: str) -> None:
    assert format_quantity(value, dimension) == text


@pytest.mark.parametrize(("text", "dimension", "expected"), CASES)
def test_format_parses_back(text: str, dimension: str, expected: float) -> None:
    shown = format_quantity(expected, dimension)
    assert parse_quantity(shown, dimension) == pytest.approx(expected, rel=1e-5, abs=1e-9)


# ----------------------------------------------------------------------------- pydantic

TYPE_NAMES = {
    "Power": "power", "Energy": "energy", "Temperature": "temperature",
    "TemperatureDelta": "temperature_difference", "Duration": "duration",
    "MassFlow": "mass_flow", "VolumeFlow": "volume_flow", "Pressure": "pressure",
    "Volume": "volume", "Mass": "mass", "Length": "length", "Area": "area",
    "ThermalConductance": "thermal_conductance", "HeatCapacity": "heat_capacity",
    "Fraction": "fraction", "Speed": "speed", "EmissionFactor": "emission_factor",
    "Displacement": "volume_per_revolution",
}


@pytest.mark.parametrize(("name", "dimension"), TYPE_NAMES.items())
def test_annotated_types(name: str, dimension: str) -> None:
    annotated = getattr(units, name)
    assert typing.get_origin(annotated) is typing.Annotated
    base, *metadata = typing.get_args(annotated)
    assert base is float
    assert isinstance(metadata[0], BeforeValidator)
    assert Quantity(dimension) in metadata


class Rack(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_power: Power = Field(25e3, gt=0, le=500e3)
    supply: Temperature = Field(40.0, ge=15, le=60)
    approach: TemperatureDelta | None = None
    limits: list[Power] = []


def test_model_accepts_numbers_and_unit_strings() -> None:
    rack = Rack(max_power="30 kW", supply="313.15 K", approach="3 K", limits=["1 kW", 5])
    assert rack.max_power == 30e3
    assert rack.supply == pytest.approx(40.0)
    assert rack.approach == 3.0
    assert rack.limits == [1e3, 5.0]
    rack.max_power = "0.1 MW"  # validated on assignment too
    assert rack.max_power == 1e5


def test_model_bounds_apply_after_conversion() -> None:
    with pytest.raises(ValidationError) as caught:
        Rack(max_power="600 kW", supply="5 K")
    errors = {error["loc"]: error for error in caught.value.errors()}
    assert errors[("max_power",)]["type"] == "less_than_equal"
    assert errors[("max_power",)]["input"] == 600e3
    assert errors[("supply",)]["type"] == "greater_than_equal"


def test_model_unit_error_text_survives() -> None:
    with pytest.raises(ValidationError) as caught:
        Rack(max_power="25 kg")
    (error,) = caught.value.errors()
    assert isinstance(error["ctx"]["error"], UnitError)
    assert "expected a power such as '25 kW' (units: W, kW, MW), got '25 kg'" in error["msg"]


def test_model_refuses_booleans() -> None:
    with pytest.raises(ValidationError, match="got a boolean"):
        Rack(max_power=True)


def test_json_schema_accepts_number_or_unit_string() -> None:
    schema = Rack.model_json_schema()
    power = schema["properties"]["max_power"]
    number, string = power["anyOf"]
    assert number == {"type": "number", "exclusiveMinimum": 0, "maximum": 500e3}
    assert string["type"] == "string"
    pattern = re.compile(string["pattern"])
    for text in ("25 kW", "25kW", "1e3 W", "-5 MW", "300"):
        assert pattern.match(text), text
    assert not pattern.match("25 kg")
    assert "W" in power["description"]
    assert schema["properties"]["limits"]["items"]["anyOf"][1]["type"] == "string"
    serial = Rack.model_json_schema(mode="serialization")["properties"]["max_power"]
    assert serial["type"] == "number"
