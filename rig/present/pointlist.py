"""The exported point list: every point with its Modbus address and MQTT topics.

The rows are `rig.build.rows.point_rows`; one per point (table order)::

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

from rig.build import build_plan
from rig.build.rows import point_rows

if TYPE_CHECKING:
    from twin.site import Site

point_list = point_rows  # one row per point of a table, with its Modbus map and topics

FORMATS = ("csv", "json", "md")
COLUMNS = ("id", "device", "description", "unit", "kind", "type", "min", "max", "brick",
           "modbus_unit_id", "modbus_table", "modbus_address", "modbus_count", "modbus_type",
           "modbus_word_order", "modbus_scale", "mqtt_topic", "mqtt_command_topic",
           "mqtt_key")
MD_COLUMNS = ("id", "description", "unit", "kind", "type", "min", "max", "modbus_unit_id",
              "modbus_table", "modbus_address", "modbus_type", "mqtt_topic")


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


def main_points(site: Site | str | Path, fmt: str = "md") -> str:
    """The point list of a site (a `Site`, a site file or a name in ``sites/``) as text:
    exactly the table a live run serves (`rig.build.build_plan`)."""
    from rig.config.sites import load_site
    from twin.site import Site as SiteModel

    if fmt not in FORMATS:
        raise ValueError(f"unknown point list format {fmt!r}; expected one of "
                         f"{', '.join(FORMATS)}")
    plan = build_plan(site if isinstance(site, SiteModel) else load_site(site))
    return render(plan.point_list(), fmt)
