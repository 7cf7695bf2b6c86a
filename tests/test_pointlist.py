"""The exported point list: JSON/CSV/Markdown, consistent with the Modbus map and topics."""

from __future__ import annotations

import csv
import io
import json

import pytest

from rig.present.pointlist import main_points, point_list, render
from rig.protocols.modbus.registers import ModbusMap
from rig.protocols.mqtt import topics
from twin.plant import Twin
from twin.site import Site

OPTIONS = {"cdu1.supply_temp": ("int16", 0.01)}


@pytest.fixture(scope="module")
def twin() -> Twin:
    return Twin(Site(name="reference-1mw", protocols={"word_order": "BADC"}), seed=1)


def test_rows_describe_every_point(twin: Twin) -> None:
    m = ModbusMap.for_twin(twin, options=OPTIONS)
    rows = point_list(twin, m, "pfx", "siteA")
    assert [r["id"] for r in rows] == twin.points.ids()
    for row in rows:
        for key in ("id", "description", "unit", "kind", "type", "min", "max", "modbus",
                    "mqtt"):
            assert key in row, (row["id"], key)
        point = twin.points[row["id"]]
        entry = m.entry(point.id)
        modbus = row["modbus"]
        assert (modbus["unit_id"], modbus["table"], modbus["address"], modbus["type"]) == (
            entry.unit_id, entry.table.value, entry.address, entry.encoding.value)
        assert ("word_order" in modbus) == (modbus["type"] == "float32")
        assert ("scale" in modbus) == (modbus["type"] in ("int16", "uint16"))
        mqtt = row["mqtt"]
        assert mqtt["topic"] == topics.telemetry("pfx", "siteA", point.device)
        assert mqtt["key"] == point.id
        if point.writable:
            assert mqtt["command_topic"] == topics.command("pfx", "siteA", point.device,
                                                           point.id)
        else:
            assert "command_topic" not in mqtt
    by_id = {r["id"]: r for r in rows}
    assert by_id["cdu1.supply_temp"]["modbus"]["scale"] == 0.01
    assert by_id["cdu1.leak"]["modbus"]["table"] == "discrete_inputs"
    assert by_id["cdu1.valve_cmd.hand"]["modbus"]["table"] == "coils"
    assert by_id["air.supply_temp"]["modbus"]["word_order"] == "BADC"


def test_render_formats_round_trip(twin: Twin) -> None:
    rows = point_list(twin.points, ModbusMap.for_twin(twin, options=OPTIONS), "heatrig", "s")
    assert json.loads(render(rows, "json")) == rows
    parsed = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert len(parsed) == len(rows)
    first = parsed[0]
    assert first["id"] == rows[0]["id"]
    assert first["modbus_address"] == str(rows[0]["modbus"]["address"])
    assert first["mqtt_topic"] == rows[0]["mqtt"]["topic"]
    md = render(rows, "md").splitlines()
    assert md[0].startswith("| id |") and len(md) == len(rows) + 2
    with pytest.raises(ValueError, match="format"):
        render(rows, "xml")


def test_main_points_with_heartbeats_moves_no_address() -> None:
    plain = json.loads(main_points("reference-1mw", "json"))
    watched = json.loads(main_points("reference-1mw", "json", heartbeats=["cdu1", "hp2"]))
    assert watched[:len(plain)] == plain
    extra = watched[len(plain):]
    assert [r["id"] for r in extra] == ["cdu1.heartbeat", "hp2.heartbeat"]
    for row in extra:
        assert row["modbus"]["table"] == "holding_registers"
        assert (row["modbus"]["type"], row["modbus"]["scale"]) == ("uint16", 1.0)
        assert row["mqtt"]["command_topic"].endswith("/cmd/" + row["id"])
    assert main_points(Site(name="x"), "csv").startswith("id,device,")
