"""Site files: the shipped ones load, malformed ones get specific errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.config.sites import SITES_DIR, load_site
from twin.errors import ConfigError


@pytest.mark.parametrize("path", sorted(SITES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_sites_load(path: Path) -> None:
    site = load_site(path)
    assert site.name == path.stem


def test_reference_and_campus_sizes() -> None:
    ref = load_site("reference-1mw")
    campus = load_site("campus-10mw")
    assert ref.rack_count == 40 and ref.racks.max_power == 25e3
    assert 0.9e6 <= ref.rack_count * ref.racks.max_power <= 1.1e6
    assert campus.rack_count == 400


BASE = "name: broken\n"
MALFORMED = [
    # (yaml body after BASE, expected line, expected fragments)
    ("racks:\n  max_power: 25 kg\n", 3, ["racks.max_power", "expected a power", "kW"]),
    ("racks:\n  max_power: -5 kW\n", 3, ["racks.max_power", "must be >"]),
    ("cdus:\n  supply_setpoint: 200 degC\n", 3, ["cdus.supply_setpoint", "<= 60 degC"]),
    ("heat_pumps:\n  refrigerant: R290\n", 3, ["heat_pumps.refrigerant", "R1234ze(E)",
                                               "R290"]),
    ("heat_pumps:\n  compressor_speed: 5\n", 3, ["heat_pumps", "unknown key",
                                                 "compressor_speed", "max_speed"]),
    ("district:\n  storage:\n    volume: lots\n", 4, ["district.storage.volume",
                                                      "expected a volume"]),
    ("facility:\n  water_class: W99\n", 3, ["facility.water_class", "W32"]),
    ("time_step: 0 s\n", 2, ["time_step", "must be >"]),
    ("cdus:\n  count: 0\n", 3, ["cdus.count", ">= 1"]),
    ("racks:\n  per_cdu: many\n", 3, ["racks.per_cdu", "integer"]),
    ("sensors:\n  period: 5 kW\n", 3, ["sensors.period", "duration"]),
    ("weather: 12\n", 2, ["weather", "mapping"]),
    ("racks:\n  throttle_case: 95 degC\n  shutdown_case: 90 degC\n", 1,
     ["shutdown_case must be above", "throttle_case"]),
    ("foo: 1\n", 2, ["unknown key 'foo'", "allowed"]),
    ("heat_pumps: !!python/object:os.system {}\n", 2, ["tag", "not allowed"]),
    ("racks:\n  max_power: 25 kW\n  max_power: 30 kW\n", 4, ["duplicate key 'max_power'"]),
    ("racks: [1, 2\n", None, ["YAML syntax error"]),
]


@pytest.mark.parametrize(("body", "line", "fragments"), MALFORMED,
                         ids=[f"case{i}" for i in range(len(MALFORMED))])
def test_malformed_site_gets_a_specific_error(tmp_path: Path, body: str, line: int | None,
                                              fragments: list[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BASE + body)
    with pytest.raises(ConfigError) as info:
        load_site(path)
    message = str(info.value)
    assert str(path) in message
    if line is not None:
        assert f"{path}:{line}:" in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_name_and_unknown_site(tmp_path: Path) -> None:
    path = tmp_path / "noname.yaml"
    path.write_text("racks:\n  per_cdu: 10\n")
    with pytest.raises(ConfigError, match="name: missing required field"):
        load_site(path)
    with pytest.raises(ConfigError, match=r"known sites: .*reference-1mw"):
        load_site("no-such-site")


def test_site_chooses_unit_ids_and_scaled_encodings(tmp_path: Path) -> None:
    from rig.build import build_plan

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nprotocols:\n  word_order: CDAB\n  unit_ids: {cdu1: 101}\n"
                    "  scaled:\n    cdu1.supply_temp: {type: int16, scale: 0.1}\n")
    modbus_map = build_plan(load_site(path)).modbus_map
    entry = modbus_map.entry("cdu1.supply_temp")
    assert entry.unit_id == 101 and entry.encoding == "int16" and entry.scale == 0.1
    assert modbus_map.entry("cdu1.return_temp").word_order == "CDAB"
    path.write_text("name: s\nprotocols:\n  scaled:\n    cdu1.nothing: {type: int16}\n")
    with pytest.raises(ConfigError, match=r"protocols\.scaled: no point 'cdu1\.nothing'"):
        build_plan(load_site(path))
