"""The exported point list: every point with its Modbus address and MQTT topics.

One row per point (table order)::

    {"id", "device", "description", "unit", "kind", "type", "min", "max", "brick",
     "modbus": {"unit_id", "table", "address", "count", "type",
                "word_order" (float32), "scale" (int16/uint16)},
     "mqtt": {"topic": telemetry topic, "key": key in the payload's "values" (the id),
              "command_topic" (writable points only)}}

``render(rows, fmt)`` writes ``json``, ``csv`` (the nested fields flattened as
``modbus_address``, ``mqtt_topic``, ...) or ``md`` (a Markdown table).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rig.protocols.modbus.registers import ModbusMap
from rig.protocols.mqtt import topics
from twin.points import PointTable

if TYPE_CHECKING:
    from twin.plant import Twin
    from twin.site import Site

FORMATS = ("csv", "json", "md")
COLUMNS = ("id", "device", "description", "unit", "kind", "type", "min", "max", "brick",
           "modbus_unit_id", "modbus_table", "modbus_address", "modbus_count", "modbus_type",
           "modbus_word_order", "modbus_scale", "mqtt_topic", "mqtt_command_topic",
           "mqtt_key")
MD_COLUMNS = ("id", "description", "unit", "kind", "type", "min", "max", "modbus_unit_id",
              "modbus_table", "modbus_address", "modbus_type", "mqtt_topic")


def point_list(twin_or_points: Twin | PointTable, modbus_map: ModbusMap, mqtt_prefix: str,
               site_name: str) -> list[dict[str, Any]]:
    """One row per point of the table (see the module docstring)."""
    points = twin_or_points if isinstance(twin_or_points, PointTable) else twin_or_points.points
    rows = []
    for point in points:
        row: dict[str, Any] = point.describe()
        row["modbus"] = modbus_map.entry(point.id).describe()
        mqtt: dict[str, Any] = {"topic": topics.telemetry(mqtt_prefix, site_name, point.device),
                                "key": point.id}
        if point.writable:
            mqtt["command_topic"] = topics.command(mqtt_prefix, site_name, point.device,
                                                   point.id)
        row["mqtt"] = mqtt
        rows.append(row)
    return rows


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """A row with ``modbus``/``mqtt`` flattened into prefixed columns."""
    flat = {k: v for k, v in row.items() if k not in ("modbus", "mqtt")}
    for group in ("modbus", "mqtt"):
        for key, value in row.get(group, {}).items():
            flat[f"{group}_{key}"] = value
    return flat


def render(rows: Sequence[dict[str, Any]], fmt: str) -> str:
    """The rows as ``csv``, ``json`` or ``md`` text."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(flatten(r) for r in rows)
        return out.getvalue()
    if fmt == "md":
        return _markdown([flatten(r) for r in rows], MD_COLUMNS)
    raise ValueError(f"unknown point list format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _markdown(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        text = "" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main_points(site: Site | str | Path, fmt: str = "md", *,
                heartbeats: Iterable[str] = ()) -> str:
    """The point list of a site (a `Site`, a site file or a name in ``sites/``) as text.

    ``heartbeats`` names the devices whose watchdog heartbeat points the live rig adds
    (they come after every other point, so no other address moves).
    """
    from rig.runtime.watchdog import add_heartbeats, heartbeat_options
    from twin.plant import Twin
    from twin.site import Site as SiteModel

    if fmt not in FORMATS:
        raise ValueError(f"unknown point list format {fmt!r}; expected one of "
                         f"{', '.join(FORMATS)}")
    if not isinstance(site, SiteModel):
        from rig.config.sites import load_site
        site = load_site(site)
    twin = Twin(site)
    devices = list(heartbeats)
    add_heartbeats(twin.points, devices)
    modbus_map = ModbusMap.for_twin(twin, options=heartbeat_options(devices))
    rows = point_list(twin, modbus_map, site.protocols.mqtt_prefix, site.name)
    return render(rows, fmt)
