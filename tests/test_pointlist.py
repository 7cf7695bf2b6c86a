"""The exported point list: JSON/CSV/Markdown, consistent with the Modbus map and topics."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from rig.build import build_plan, controlled_devices
from rig.cli import main
from rig.config.sites import load_site
from rig.present.pointlist import main_points, point_list, render
from rig.protocols.modbus.registers import ModbusMap
from rig.protocols.mqtt import topics
from rig.runtime.live import LiveOptions, LiveRig
from twin.plant import Twin
from twin.site import Site

GOLDEN = Path(__file__).parent / "golden"
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


def test_live_table_moves_no_plant_address() -> None:
    site = load_site("reference-1mw")
    plant = build_plan(site, live=False).point_list()
    live = json.loads(main_points("reference-1mw", "json"))
    assert live[:len(plant)] == plant
    extra = live[len(plant):]
    rig = [r["id"] for r in extra if r["device"] == "rig"]
    beats = [r for r in extra if r["device"] != "rig"]
    assert rig == ["rig.sim_time", "rig.speed", "rig.comm_lost", "rig.watchdog_trips",
                   "rig.step"]
    assert [r["id"] for r in extra] == rig + [r["id"] for r in beats]  # heartbeats last
    assert [r["device"] for r in beats] == controlled_devices(build_plan(site).twin)
    assert len(beats) > 4 and all(r["id"] == r["device"] + ".heartbeat" for r in beats)
    for row in beats:
        assert row["modbus"]["table"] == "holding_registers"
        assert (row["modbus"]["type"], row["modbus"]["scale"]) == ("uint16", 1.0)
        assert row["mqtt"]["command_topic"].endswith("/cmd/" + row["id"])
    assert main_points(Site(name="x"), "csv").startswith("id,device,")


@pytest.mark.parametrize("site", ["reference-1mw", "campus-10mw"])
def test_points_of_the_shipped_sites_match_the_golden_copy(
        site: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["points", site, "--format", "csv"]) == 0
    assert capsys.readouterr().out == (GOLDEN / f"points-{site}.csv").read_text()


def test_points_printed_are_the_points_served(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "scaled.yaml"
    path.write_text("name: scaled\nprotocols:\n  word_order: CDAB\n"
                    "  unit_ids: {cdu1: 101, hp2: 150, rig: 200}\n  scaled:\n"
                    "    cdu1.supply_temp: {type: int16, scale: 0.01}\n"
                    "    hp2.cop: {type: uint16, scale: 0.001}\n"
                    "    rig.speed: {type: uint16, scale: 0.1}\n")
    assert main(["points", str(path), "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    by_id = {r["id"]: r["modbus"] for r in printed}
    assert (by_id["cdu1.supply_temp"]["unit_id"], by_id["cdu1.supply_temp"]["type"],
            by_id["cdu1.supply_temp"]["scale"]) == (101, "int16", 0.01)
    assert by_id["rig.speed"]["unit_id"] == 200 and by_id["hp2.cop"]["type"] == "uint16"
    assert by_id["cdu2.supply_temp"]["word_order"] == "CDAB"
    out = tmp_path / "run"
    rig = LiveRig(load_site(path), LiveOptions(out_dir=out, speed=20, duration_s=4,
                                               modbus="127.0.0.1:0", status=False))
    served: list[dict] = []

    async def run() -> None:
        task = asyncio.create_task(rig.run())
        while rig.modbus is None or not rig.modbus.port:
            await asyncio.sleep(0.01)
        served.extend(rig.modbus.map.entry(r["id"]).describe() for r in printed)
        await task

    asyncio.run(run())
    assert json.loads((out / "points.json").read_text()) == printed
    assert served == [r["modbus"] for r in printed]
