"""Point-list rows: every point with its Modbus address and MQTT topics.

One row per point (table order)::

    {"id", "device", "description", "unit", "kind", "type", "min", "max", "brick",
     "modbus": {"unit_id", "table", "address", "count", "type",
                "word_order" (float32), "scale" (int16/uint16)},
     "mqtt": {"topic": telemetry topic, "key": key in the payload's "values" (the id),
              "command_topic" (writable points only)}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rig.protocols.modbus.registers import ModbusMap
from rig.protocols.mqtt import topics
from twin.points import PointTable

if TYPE_CHECKING:
    from twin.plant import Twin


def point_rows(twin_or_points: Twin | PointTable, modbus_map: ModbusMap, mqtt_prefix: str,
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
