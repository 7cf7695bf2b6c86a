"""Grafana dashboards generated from a site's point table.

``python -m rig.present.grafana [--check]`` writes (or compares with) the committed
dashboards, ``grafana/dashboards/`` of the repository (package data ``heatrig_data.dashboards``).

Every panel queries InfluxDB with InfluxQL on the schema of ``docs/influx-schema.md`` (one
measurement per device class; tags ``device``, ``point``, ``run``, ``site``; fields
``value`` and ``truth``; ``events``, ``verdicts``, ``kpis``). The point lists come from the
point table a live run of the site records (the plant's points, the rig's ``rig.*`` and
the controllers' heartbeats; an offline run records the plant's part): a panel cannot ask
for a point that does not exist (generation fails), and a new point lands in an automatic
panel of its device class (grouped by kind and unit), so ``--check`` reports the drift
until the JSON is regenerated.

Query conventions: ``"run" =~ /^$run$/ AND "site" =~ /^$site$/``, ``$timeFilter``,
``GROUP BY time($__interval), ... fill(null)``: a missing sample stays a gap in the data
(a dropped-out sensor is visible), and panels connect gaps under 60 s only so that a
``$__interval`` shorter than the recording period does not break lines. Run-level KPIs
(the ``kpis`` measurement, one point at the end of a run) are selected by run alone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.build import build_plan
from rig.config import shipped
from rig.config.defaults import DEFAULT_SITE
from rig.config.sites import load_site
from rig.record.lineprotocol import point_key
from twin.kpis import ASHRAE_RECOMMENDED_AIR, REGISTRY, WATER_CLASS_LIMIT, KpiSpec
from twin.points import DType, Kind, Point
from twin.site import Site

DASHBOARD_DIR = shipped.folder("dashboards")  # grafana/dashboards/ in the repository
SCHEMA_VERSION = 39
DATASOURCE_UID = "heatrig-influxdb"  # uid of the provisioned data source
DATASOURCE_NAME = "heatrig InfluxDB"
DS = {"type": "influxdb", "uid": "${datasource}"}
RUN = '"run" =~ /^$run$/ AND "site" =~ /^$site$/'
GROUP = "GROUP BY time($__interval)"
SPAN_NULLS_MS = 60_000
TAG = "heatrig"

Json = dict[str, Any]

# --------------------------------------------------------------------------- point view

_SUBDEVICE = re.compile(r"(?<=[a-z])\d+(?=\.)")  # pump1.trip -> pumpN.trip
_REGEX_SPECIAL = re.compile(r"([\\.^$*+?()\[\]{}|/])")


def rx(text: str) -> str:
    """``text`` escaped for an InfluxQL regex literal ``/.../``."""
    return _REGEX_SPECIAL.sub(r"\\\1", text)


@dataclass(frozen=True)
class Series:
    """One point tag of a measurement, on all its devices: what a panel selects.

    Numbered sub-devices are generalised (``pumpN.trip`` stands for ``pump1.trip``,
    ``pump2.trip``, ...), so a dashboard fits sites with more of them.
    """

    measurement: str
    name: str
    pattern: str  # InfluxQL regex (unanchored) of the point tags it stands for
    unit: str
    kind: Kind
    dtype: DType
    lo: float
    hi: float
    description: str

    @property
    def binary(self) -> bool:
        """True for 0/1 values (alarms, on/off states and commands, hand switches)."""
        return self.dtype is DType.BOOL

    @property
    def fraction(self) -> bool:
        """True for dimensionless values in 0..1 (positions, speeds, shares)."""
        return self.unit == "1" and self.lo == 0 and self.hi == 1 and not self.binary


class Schema:
    """The point table by measurement and point tag, as the InfluxDB export names them."""

    def __init__(self, points: Iterable[Point]) -> None:
        self.series: dict[str, dict[str, Series]] = {}
        for p in points:
            measurement, _, tag = point_key(p.id)
            name = _SUBDEVICE.sub("N", tag)
            pattern = r"\d+".join(rx(part) for part in _SUBDEVICE.split(tag))
            self.series.setdefault(measurement, {}).setdefault(name, Series(
                measurement, name, pattern, p.unit, p.kind, p.dtype, p.lo, p.hi,
                p.description))

    def get(self, measurement: str, name: str) -> Series:
        """The series ``name`` of ``measurement``; KeyError if the table has no such point."""
        try:
            return self.series[measurement][name]
        except KeyError:
            raise KeyError(f"the point table has no point {name!r} in measurement "
                           f"{measurement!r}: update rig/grafana.py") from None


@dataclass
class Section:
    """One measurement on a dashboard, its device filter, and the series shown so far."""

    schema: Schema
    measurement: str
    device: str = ""  # InfluxQL condition on "device", e.g. '"device" =~ /^$cdu$/'
    per_device: bool = False  # one line per device
    used: set[str] = field(default_factory=set)

    def take(self, *names: str) -> list[Series]:
        """Named series (KeyError if one is not in the point table), marked as shown."""
        out = [self.schema.get(self.measurement, n) for n in names]
        self.used.update(names)
        return out

    def take_where(self, keep: Callable[[Series], bool]) -> list[Series]:
        """Series not shown yet for which ``keep`` is true, marked as shown."""
        out = [s for s in self.rest() if keep(s)]
        self.used.update(s.name for s in out)
        return out

    def rest(self) -> list[Series]:
        """Series not shown yet, in table order."""
        return [s for n, s in self.schema.series[self.measurement].items() if n not in self.used]


# --------------------------------------------------------------------------- queries


def point_condition(series: Sequence[Series]) -> str:
    """``"point" = 'x'`` for one plain tag, else an anchored regex of all of them."""
    if len(series) == 1 and series[0].pattern == rx(series[0].name):
        return f"\"point\" = '{series[0].name}'"
    return f'"point" =~ /^({"|".join(s.pattern for s in series)})$/'


def _many(series: Sequence[Series]) -> bool:
    return len(series) > 1 or series[0].pattern != rx(series[0].name)


def select(section: Section, series: Sequence[Series], agg: str = "mean",
           fld: str = "$field", by_point: bool | None = None) -> str:
    """One query for ``series`` of ``section``: one line per device (``per_device``) and
    per point (several points, or ``by_point``)."""
    where = [RUN, *([section.device] if section.device else []), point_condition(series),
             "$timeFilter"]
    by_point = _many(series) if by_point is None else by_point
    group = [GROUP, *(['"device"'] if section.per_device else []),
             *(['"point"'] if by_point else [])]
    return (f'SELECT {agg}("{fld}") FROM "{section.measurement}" WHERE {" AND ".join(where)} '
            f'{", ".join(group)} fill(null)')


def alias(section: Section, series: Sequence[Series]) -> str:
    """Legend of a `select` target: device and/or point tag."""
    parts = (["$tag_device"] if section.per_device else []) + (
        ["$tag_point"] if _many(series) else [])
    return " ".join(parts) or series[0].name


def target(query: str, legend: str = "", fmt: str = "time_series") -> Json:
    """A raw InfluxQL target (refId set by the panel)."""
    out: Json = {"datasource": DS, "query": query, "rawQuery": True, "resultFormat": fmt}
    if legend:
        out["alias"] = legend
    return out


def series_target(section: Section, series: Sequence[Series], agg: str = "mean",
                  fld: str = "$field") -> Json:
    """`target` of `select` with its `alias`."""
    return target(select(section, series, agg, fld), alias(section, series))


def kpi_query(names: Sequence[str], with_units: bool = False) -> str:
    """Final KPIs of the run (one point per run, so no time filter); ``with_units`` names
    each column ``name [unit]`` with the unit of `twin.kpis.REGISTRY`."""
    fields = ", ".join(f'last("{n}") AS "{_kpi_column(n) if with_units else n}"'
                       for n in names)
    return f'SELECT {fields} FROM "kpis" WHERE {RUN}'


def describe(series: Sequence[Series]) -> str:
    """Panel description from the point table: one line per series."""
    return "\n".join(f"{s.name}: {s.description} [{s.unit}]" for s in series)


# --------------------------------------------------------------------------- panels

UNITS = {"degC": "celsius", "W": "watt", "J": "joule", "Pa": "pressurepa", "m": "lengthm",
         "kg/s": "suffix: kg/s", "s": "s"}
CATEGORIES = {"degC": "temperatures", "W": "power", "J": "energy", "Pa": "pressures",
              "m": "levels", "kg/s": "flows", "s": "times"}


def grafana_unit(series: Sequence[Series]) -> str:
    """Grafana unit id for the (common) unit of ``series``."""
    s = series[0]
    return "percentunit" if s.fraction else UNITS.get(s.unit, "none")


def steps(base: str, *marks: tuple[float, str]) -> Json:
    """Absolute thresholds: ``base`` colour, then (value, colour) steps."""
    return {"mode": "absolute", "steps": [{"color": base, "value": None},
                                          *({"color": c, "value": v} for v, c in marks)]}


def _with_refs(targets: Sequence[Json]) -> list[Json]:
    return [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]


def _panel(kind: str, title: str, targets: Sequence[Json], description: str,
           defaults: Json, options: Json, **extra: Any) -> Json:
    return {"type": kind, "title": title, "description": description, "datasource": DS,
            "targets": _with_refs(targets),
            "fieldConfig": {"defaults": defaults, "overrides": extra.pop("overrides", [])},
            "options": options, **extra}


def timeseries(title: str, targets: Sequence[Json], *, unit: str, description: str = "",
               thresholds: Json | None = None, style: str = "off", stack: bool = False,
               lo: float | None = None, hi: float | None = None) -> Json:
    """A time-series panel; ``style`` draws the thresholds (off, line, dashed, line+area)."""
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 25 if stack else 0,
              "showPoints": "never", "spanNulls": SPAN_NULLS_MS,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"},
              "thresholdsStyle": {"mode": style}}
    defaults: Json = {"unit": unit, "color": {"mode": "palette-classic"}, "custom": custom,
                      "thresholds": thresholds or steps("green")}
    defaults.update({k: v for k, v in (("min", lo), ("max", hi)) if v is not None})
    options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
               "tooltip": {"mode": "multi", "sort": "none"}}
    return _panel("timeseries", title, targets, description, defaults, options)


STATES = {  # (text of 0, colour of 0, text of 1, colour of 1)
    "alarm": ("ok", "green", "ALARM", "red"),
    "leak": ("dry", "green", "LEAK", "red"),
    "trip": ("ok", "green", "TRIP", "red"),
    "onoff": ("off", "text", "on", "blue"),
    "hand": ("auto", "green", "hand", "orange"),
    "shutdown": ("on", "green", "SHUT DOWN", "red"),
}


def states(title: str, targets: Sequence[Json], *, mapping: str, description: str = "") -> Json:
    """A state timeline of 0/1 values (``max`` per interval, so a short 1 shows)."""
    off, off_colour, on, on_colour = STATES[mapping]
    defaults = {
        "color": {"mode": "thresholds"},
        "custom": {"fillOpacity": 80, "lineWidth": 0, "spanNulls": SPAN_NULLS_MS},
        "mappings": [{"type": "value", "options": {
            "0": {"text": off, "color": off_colour, "index": 0},
            "1": {"text": on, "color": on_colour, "index": 1}}}],
        "thresholds": steps(off_colour, (0.5, on_colour)), "min": 0, "max": 1}
    options = {"mergeValues": True, "showValue": "never", "alignValue": "left",
               "rowHeight": 0.9, "legend": {"displayMode": "list", "placement": "bottom",
                                            "showLegend": False},
               "tooltip": {"mode": "single", "sort": "none"}}
    return _panel("state-timeline", title, targets, description, defaults, options)


def stat(title: str, targets: Sequence[Json], *, unit: str, description: str = "",
         thresholds: Json | None = None, decimals: int = 2) -> Json:
    """A stat of the last non-null value."""
    defaults = {"unit": unit, "decimals": decimals, "color": {"mode": "thresholds"},
                "thresholds": thresholds or steps("blue")}
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "colorMode": "value", "graphMode": "none", "justifyMode": "auto",
               "orientation": "auto", "textMode": "auto", "wideLayout": True,
               "showPercentChange": False}
    return _panel("stat", title, targets, description, defaults, options)


def table(title: str, targets: Sequence[Json], *, description: str = "",
          transformations: Sequence[Json] = (), overrides: Sequence[Json] = ()) -> Json:
    """A table of table-format targets."""
    defaults = {"custom": {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": True}}
    options = {"showHeader": True, "cellHeight": "sm",
               "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    return _panel("table", title, targets, description, defaults, options,
                  transformations=list(transformations), overrides=list(overrides))


def series_panel(title: str, section: Section, series: Sequence[Series], **kw: Any) -> Json:
    """A time series (or, for 0/1 values, a state timeline) of ``series``."""
    kw.setdefault("description", describe(series))
    if series[0].binary:
        kw.setdefault("mapping", "onoff")
        return states(title, [series_target(section, series, "max", "value")], **kw)
    kw.setdefault("unit", grafana_unit(series))
    if all(s.fraction for s in series):
        kw.update(lo=0, hi=1)
    return timeseries(title, [series_target(section, series)], **kw)


def auto_panels(section: Section, label: str) -> list[Json]:
    """Panels of every series of ``section`` not shown yet, grouped by kind and unit."""
    groups: dict[tuple[str, ...], list[Series]] = {}
    for s in section.rest():
        if s.name == "heartbeat":
            key: tuple[str, ...] = ("heartbeat",)
        elif s.name.endswith(".hand"):
            key = ("hand",)
        elif s.kind is Kind.ALARM:
            key = ("alarm",)
        elif s.binary:
            key = ("onoff",)
        elif s.fraction:
            key = ("fraction",)
        else:
            key = ("unit", s.unit)
        groups.setdefault(key, []).append(s)
    panels = []
    for key, series in groups.items():
        section.used.update(s.name for s in series)
        if key[0] in ("hand", "alarm", "onoff"):
            title = {"hand": "hand/auto switches", "alarm": "alarms",
                     "onoff": "on/off states and commands"}[key[0]]
            panels.append(series_panel(f"{label}: {title}", section, series, mapping=key[0]))
        elif key[0] == "heartbeat":
            panels.append(heartbeat_panel(f"{label}: controller heartbeat", [section]))
        else:
            what = "positions, speeds and shares" if key[0] == "fraction" else CATEGORIES.get(
                key[1], "ratios and counts" if key[1] == "1" else key[1])
            panels.append(series_panel(f"{label}: {what}", section, series))
    return panels


def heartbeat_panel(title: str, sections: Sequence[Section]) -> Json:
    """The controllers' heartbeat counters (a flat line is a silent controller)."""
    targets, shown = [], []
    for section in sections:
        beat = section.take("heartbeat")
        targets.append(target(select(section, beat, "last", "value"), "$tag_device"))
        shown += beat
    return timeseries(title, targets, unit="none", description=describe(shown) + "\nA live "
                      "run's watchdog trips when a heartbeat stops changing.")


# --------------------------------------------------------------------------- dashboards


def variable(name: str, label: str, query: str, *, multi: bool = False) -> Json:
    """A query variable (``multi`` also offers All, the default)."""
    current: Json = {"text": ["All"], "value": ["$__all"]} if multi else {}
    return {"type": "query", "name": name, "label": label, "datasource": DS,
            "definition": query, "query": query, "refresh": 1, "sort": 0,
            "multi": multi, "includeAll": multi, "current": current, "options": [],
            "regex": "", "hide": 0, "skipUrlSync": False}


def base_variables(run_query: str) -> list[Json]:
    """Data source, site, run and measured/truth: on every dashboard."""
    ds = {"type": "datasource", "name": "datasource", "label": "Data source",
          "query": "influxdb", "current": {"text": DATASOURCE_NAME, "value": DATASOURCE_UID},
          "refresh": 1, "regex": "", "multi": False, "includeAll": False, "options": [],
          "hide": 0, "skipUrlSync": False}
    values = {"type": "custom", "name": "field", "label": "Values",
              "query": "measured : value,ground truth : truth",
              "current": {"text": "measured", "value": "value"},
              "options": [{"text": "measured", "value": "value", "selected": True},
                          {"text": "ground truth", "value": "truth", "selected": False}],
              "multi": False, "includeAll": False, "hide": 0, "skipUrlSync": False}
    return [ds, variable("site", "Site", 'SHOW TAG VALUES FROM "site" WITH KEY = "site"'),
            variable("run", "Run", run_query), values]


RUN_QUERY = 'SHOW TAG VALUES WITH KEY = "run" WHERE "site" =~ /^$site$/'


def dashboard_annotations(events_on: bool) -> Json:
    """Faults and verdicts (always on) and the other plant events."""
    def ann(name: str, colour: str, query: str, text: str, tags: str, on: bool) -> Json:
        return {"name": name, "datasource": DS, "enable": on, "hide": False,
                "iconColor": colour, "query": query, "textColumn": text, "tagsColumn": tags,
                "titleColumn": ""}
    cond = f'{RUN} AND "kind" =~ /^fault/ AND $timeFilter'
    return {"list": [
        {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
         "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
         "name": "Annotations & Alerts", "type": "dashboard"},
        ann("Faults", "red", f'SELECT "message", "kind", "source" FROM "events" WHERE {cond}',
            "message", "kind,source", True),
        ann("Verdicts", "purple", 'SELECT "text", "evidence", "verdict", "name" FROM '
            f'"verdicts" WHERE {RUN} AND $timeFilter', "text", "verdict,name", True),
        ann("Plant events", "blue", 'SELECT "message", "kind", "source" FROM "events" WHERE '
            f'{RUN} AND "kind" !~ /^fault/ AND $timeFilter', "message", "kind,source",
            events_on)]}


class Board:
    """A dashboard under construction: rows and panels laid out on Grafana's 24 columns."""

    def __init__(self, uid: str, title: str, description: str,
                 extra_variables: Sequence[Json] = (), events_on: bool = False) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.variables = [*base_variables(RUN_QUERY), *extra_variables]
        self.annotations = dashboard_annotations(events_on)
        self.panels: list[Json] = []
        self.x = self.y = self.height = 0

    def row(self, title: str) -> None:
        """Start a row."""
        self._wrap()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def add(self, *panels: Json, w: int = 12, h: int = 8) -> None:
        """Place panels left to right, wrapping at 24 columns."""
        for panel in panels:
            if self.x + w > 24:
                self._wrap()
            self.panels.append({**panel, "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y}})
            self.x += w
            self.height = max(self.height, h)

    def _wrap(self) -> None:
        if self.x:
            self.y += self.height
        self.x = self.height = 0

    def build(self) -> Json:
        """The dashboard JSON (ids numbered in order)."""
        panels = [{"id": i + 1, **p} for i, p in enumerate(self.panels)]
        return {
            "id": None, "uid": self.uid, "title": self.title, "description": self.description,
            "tags": [TAG], "editable": True, "graphTooltip": 1, "timezone": "browser",
            "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": "",
            "time": {"from": "now-24h", "to": "now+24h"},
            "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m", "15m"]},
            "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
            "links": [{"title": "heatrig", "type": "dashboards", "tags": [TAG],
                       "asDropdown": True, "includeVars": True, "keepTime": True,
                       "icon": "external link", "targetBlank": False, "tooltip": "",
                       "url": ""}],
            "annotations": self.annotations, "templating": {"list": self.variables},
            "panels": panels,
        }


def _cdu_var() -> Json:
    return variable("cdu", "CDU", 'SHOW TAG VALUES FROM "cdu" WITH KEY = "device" WHERE '
                    '"run" =~ /^$run$/', multi=True)


def _hp_var() -> Json:
    return variable("hp", "Heat pump", 'SHOW TAG VALUES FROM "heat_pump" WITH KEY = "device" '
                    'WHERE "run" =~ /^$run$/', multi=True)


KPI_STATS = (  # kpi, thresholds, Grafana unit when not the registry unit's
    ("pue", steps("green", (1.2, "orange"), (1.5, "red")), None),
    ("erf", steps("red", (0.1, "orange"), (0.2, "green")), "percentunit"),  # a ratio, as %
    ("ere", None, None),
    ("cop", None, None),
    ("carnot_cop", None, None),
    ("heat_recovered_kwh", None, None),
    ("unmet_demand_kwh", steps("green", (1.0, "red")), None),
    ("it_energy_kwh", None, None),
)
GRAFANA_UNIT = {"1": "none", "kWh": "kwatth", "kg": "masskg", "h": "h"}
"""Grafana's unit id for each unit of `twin.kpis.REGISTRY`."""


def _kpi_spec(name: str) -> KpiSpec:
    if name not in REGISTRY:
        raise KeyError(f"the twin has no KPI {name!r}: update rig/present/grafana.py")
    return REGISTRY[name]


def kpi_unit(name: str) -> str:
    """Grafana unit of a KPI, from its unit in `twin.kpis.REGISTRY`."""
    unit = _kpi_spec(name).unit
    if unit not in GRAFANA_UNIT:
        raise KeyError(f"KPI {name!r}: no Grafana unit for {unit!r}: add it to GRAFANA_UNIT")
    return GRAFANA_UNIT[unit]


def _kpi_column(name: str) -> str:
    unit = _kpi_spec(name).unit
    return f"{name} [{'-' if unit == '1' else unit}]"


def kpi_stat(name: str, thresholds: Json | None, unit: str | None = None,
             suffix: str = "") -> Json:
    """A stat of one final KPI titled with its registry title and ``suffix``; ``unit``: a
    Grafana unit instead of the registry unit's; KeyError if the twin has no such KPI."""
    spec = _kpi_spec(name)
    title = spec.title + suffix
    return stat(title, [target(kpi_query([name]), title)], unit=unit or kpi_unit(name),
                thresholds=thresholds,
                description=f"{_kpi_column(name)}: {spec.description}; the final value "
                            "of the selected run, from the kpis measurement (written once, "
                            "at the end of the run)")


def kpi_table() -> Json:
    """Every final KPI the registry puts on dashboards, as name [unit] / value rows."""
    names = [name for name, spec in REGISTRY.items() if spec.dashboard]
    overrides = [{"matcher": {"id": "byName", "options": "Field"},
                  "properties": [{"id": "displayName", "value": "KPI"}]}]
    return table("All KPIs of the run", [target(kpi_query(names, with_units=True),
                                                 fmt="table")],
                 description="Final KPIs from the kpis measurement:\n" + "\n".join(
                     f"{_kpi_column(n)}: {REGISTRY[n].description}" for n in names),
                 transformations=[{"id": "reduce", "options": {
                     "reducers": ["lastNotNull"], "mode": "seriesToRows",
                     "includeTimeField": False}}],
                 overrides=overrides)


def overview(schema: Schema, site: Site) -> Json:
    """PUE, ERF, ERE, COP beside Carnot COP, heat recovered, unmet demand, IT power."""
    b = Board("heatrig-overview", "heatrig: overview",
              "KPIs of a run and the energy flows behind them.")
    st = Section(schema, "site")
    hp = Section(schema, "heat_pump", per_device=True)
    dist = Section(schema, "district")
    b.row("Run KPIs (final values of the selected run)")
    b.add(*(kpi_stat(*k) for k in KPI_STATS), w=3, h=4)
    b.row("Efficiency")
    b.add(series_panel("PUE and ERF so far", st, st.take("pue", "erf"), unit="none"),
          series_panel("Heat-pump COP beside Carnot COP", hp, hp.take("cop", "carnot_cop")))
    b.row("Energy")
    b.add(series_panel("IT power", st, st.take("it_power")),
          series_panel("Heat recovered so far (condensers)", st, st.take("heat_recovered")))
    b.add(series_panel("District demand vs delivered (the gap is unmet demand)", dist,
                       dist.take("demand", "delivered")),
          series_panel("Heat-pump heat output", hp, hp.take("heat_output")))
    b.add(series_panel("Outdoor temperature", st, st.take("outdoor_temp")),
          *auto_panels(st, "Site"))
    b.add(kpi_table(), w=12, h=12)
    return b.build()


def racks_cdus(schema: Schema, site: Site) -> Json:
    """Air and facility-water limits, CDUs, racks and the facility water loop."""
    b = Board("heatrig-racks-cdus", "heatrig: racks and CDUs",
              "Temperatures against the ASHRAE air band and the facility-water class limit, "
              "CDU flows, pressures, reservoir and leak sensors, racks, facility loop.",
              [_cdu_var()])
    air = Section(schema, "air")
    cdu = Section(schema, "cdu", '"device" =~ /^$cdu$/', per_device=True)
    rack = Section(schema, "rack", '"device" =~ /^$cdu\\./', per_device=True)
    fac = Section(schema, "facility")
    lo, hi = ASHRAE_RECOMMENDED_AIR
    wclass = site.facility.water_class
    b.row("Limits")
    b.add(series_panel(f"Rack inlet air vs ASHRAE recommended {lo:g}-{hi:g} degC", air,
                       air.take("supply_temp", "supply_temp_sp"),
                       thresholds=steps("blue", (lo, "green"), (hi, "red")),
                       style="line+area"))
    water = [fac.take("supply_temp"), cdu.take("primary_supply_temp")]
    limit = WATER_CLASS_LIMIT.get(wclass)
    b.add(timeseries(f"Facility water supply vs {wclass} limit"
                     + (f" ({limit:g} degC)" if limit is not None else ""),
                     [series_target(fac, water[0]), series_target(cdu, water[1])],
                     unit="celsius", description=describe(water[0] + water[1]),
                     thresholds=steps("green", *([(limit, "red")] if limit else [])),
                     style="dashed"))
    b.add(series_panel("Air cooling: heat removed by the CRAH units", air,
                       air.take("cooling_power")), *auto_panels(air, "Air"))
    b.row("CDUs ($cdu)")
    b.add(series_panel("TCS supply and return vs setpoint", cdu,
                       cdu.take("supply_temp", "return_temp", "supply_temp_sp")),
          series_panel("Flows", cdu, cdu.take("primary_flow", "secondary_flow", "makeup_flow")),
          series_panel("TCS pressure", cdu, cdu.take("pressure")),
          series_panel("Reservoir level", cdu, cdu.take("reservoir_level")))
    leaks = [cdu.take("leak"), rack.take("leak")]
    b.add(states("Leak sensors (CDUs and their racks)",
                 [series_target(cdu, leaks[0], "max", "value"),
                  series_target(rack, leaks[1], "max", "value")],
                 mapping="leak", description=describe(leaks[0] + leaks[1])),
          series_panel("Heat duty", cdu, cdu.take("heat_duty")))
    b.add(series_panel("Primary side: facility water in and out", cdu,
                       cdu.take("primary_supply_temp", "primary_return_temp")))
    b.add(*auto_panels(cdu, "CDU"))
    b.row("Racks behind $cdu")
    throttle, shutdown = site.racks.throttle_case, site.racks.shutdown_case
    b.add(series_panel(f"Case temperature (throttle {throttle:g}, shutdown {shutdown:g} degC)",
                       rack, rack.take("case_temp"), style="dashed",
                       thresholds=steps("green", (throttle, "orange"), (shutdown, "red"))),
          series_panel("Coolant outlet temperature", rack, rack.take("outlet_temp")),
          series_panel("IT power", rack, rack.take("power")),
          series_panel("Throttle (share of demanded power)", rack, rack.take("throttle")),
          series_panel("Over-temperature shutdown", rack, rack.take("shutdown"),
                       mapping="shutdown"))
    b.add(*auto_panels(rack, "Rack"))
    b.row("Facility water loop")
    b.add(*auto_panels(fac, "Facility"))
    return b.build()


def lift_target(section: Section) -> Json:
    """Condenser leaving minus evaporator leaving water temperature, per heat pump."""
    def inner(point: str, name: str) -> str:
        return (f'SELECT "$field" AS "{name}" FROM "heat_pump" WHERE {RUN} AND '
                f"{section.device} AND \"point\" = '{point}' AND $timeFilter")
    section.take("cond_out_temp", "evap_out_temp")
    query = (f'SELECT mean("cond") - mean("evap") AS "lift" FROM '
             f'({inner("cond_out_temp", "cond")}), ({inner("evap_out_temp", "evap")}) '
             f'WHERE $timeFilter {GROUP}, "device" fill(null)')
    return target(query, "$tag_device")


def heat_pumps(schema: Schema, site: Site) -> Json:
    """COP, lift, capacity, pressures, trips of the heat pumps; the dry coolers."""
    b = Board("heatrig-heat-pumps", "heatrig: heat pumps",
              "Heat pumps (COP, lift, capacity, refrigerant pressures, trips) and the dry "
              "coolers that reject the heat nobody takes.", [_hp_var()])
    hp = Section(schema, "heat_pump", '"device" =~ /^$hp$/', per_device=True)
    dc = Section(schema, "dry_cooler", per_device=True)
    b.row("Heat pumps ($hp)")
    b.add(series_panel("COP beside Carnot COP", hp, hp.take("cop", "carnot_cop")),
          timeseries("Lift: condenser out - evaporator out", [lift_target(hp)],
                     unit="celsius", description="cond_out_temp - evap_out_temp per heat "
                     "pump (mean over each interval)"))
    max_cond = site.heat_pumps.max_condensing
    b.add(series_panel(f"Water temperatures (max condensing {max_cond:g} degC)", hp,
                       hp.take("evap_in_temp", "evap_out_temp", "cond_in_temp",
                               "cond_out_temp", "supply_temp_sp"),
                       thresholds=steps("green", (max_cond, "red")), style="dashed"),
          series_panel("Capacity: heat output, heat input, compressor power", hp,
                       hp.take("heat_output", "heat_input", "power")),
          series_panel("Refrigerant pressures (absolute)", hp,
                       hp.take("evap_pressure", "cond_pressure")),
          series_panel("Compressor discharge temperature", hp, hp.take("discharge_temp")))
    trips = hp.take_where(lambda s: s.name.startswith("trip.")) + hp.take("lockout")
    b.add(series_panel("Trips (latched) and lockout", hp, trips, mapping="trip"),
          series_panel("Compressor running", hp, hp.take("running")),
          series_panel("Compressor speed and command", hp, hp.take("speed", "speed_cmd")),
          series_panel("Trips and starts", hp, hp.take("trip_count", "starts_last_hour")))
    b.add(*auto_panels(hp, "Heat pump"))
    b.row("Dry coolers")
    b.add(*auto_panels(dc, "Dry cooler"))
    return b.build()


def district(schema: Schema, site: Site) -> Json:
    """Supply and return vs setpoint, demand vs delivered, boiler, storage."""
    b = Board("heatrig-district", "heatrig: district heating",
              "The district-heating side: temperatures, demand and delivery, the peak "
              "boiler and the stratified storage.")
    d = Section(schema, "district")
    hp = Section(schema, "heat_pump", per_device=True)
    b.row("Network")
    b.add(series_panel("Supply and return vs supply setpoint", d,
                       d.take("supply_temp", "return_temp", "supply_temp_sp")),
          series_panel("Demand vs delivered", d, d.take("demand", "delivered")))
    hp_heat = hp.take("heat_output")
    sum_hp = (f'SELECT sum("heat") AS "heat pumps" FROM (SELECT mean("$field") AS "heat" '
              f"FROM \"heat_pump\" WHERE {RUN} AND {point_condition(hp_heat)} AND $timeFilter "
              f'{GROUP}, "device" fill(none)) WHERE $timeFilter {GROUP} fill(null)')
    boiler = d.take("boiler_power")
    b.add(timeseries("Heat sources: heat pumps and peak boiler",
                     [target(sum_hp, "heat pumps"), target(select(d, boiler), "boiler")],
                     unit="watt", stack=True, description=describe(hp_heat + boiler)),
          series_panel("Peak boiler enabled", d, d.take("boiler_enable")))
    b.add(series_panel("Network flow", d, d.take("flow")))
    b.add(kpi_stat("unmet_demand_kwh", steps("green", (1.0, "red")), suffix=" (run)"),
          kpi_stat("boiler_heat_kwh", None, suffix=" (run)"), w=6)
    b.row("Storage")
    b.add(series_panel("Storage layers", d, d.take("tank_top_temp", "tank_bottom_temp")),
          series_panel("Storage state of charge", d, d.take("tank_soc")))
    b.add(*auto_panels(d, "District"))
    return b.build()


def test_campaign(schema: Schema, site: Site) -> Json:
    """Faults, verdicts and alarms of a run (fault and verdict annotations)."""
    b = Board("heatrig-test-campaign", "heatrig: test campaign",
              "Injected faults, verdicts of the expectations, plant events and every alarm "
              "of a run.", events_on=True)
    b.row("Verdicts")
    count = (f'SELECT count("text") FROM "verdicts" WHERE {RUN} AND $timeFilter '
             'GROUP BY "verdict"')
    b.add(stat("Verdicts by outcome", [target(count, "$tag_verdict")], unit="none",
               decimals=0, description="Verdicts stored for the run, by outcome"), w=6)
    latest = (f'SELECT last("text") AS "verdict", last("evidence") AS "evidence" FROM '
              f'"verdicts" WHERE {RUN} AND $timeFilter GROUP BY "name"')
    mapping = [{"type": "regex", "options": {"pattern": f".*: {v}$", "result": {
        "text": v, "color": c, "index": i}}} for i, (v, c) in
        enumerate((("pass", "green"), ("fail", "red"), ("error", "orange")))]
    b.add(table("Verdicts (latest per expectation)", [target(latest, fmt="table")],
                description="The latest verdict of each expectation and its evidence",
                transformations=[{"id": "organize", "options": {
                    "excludeByName": {"Time": True}, "renameByName": {}, "indexByName": {}}}],
                overrides=[{"matcher": {"id": "byName", "options": "verdict"}, "properties": [
                    {"id": "mappings", "value": mapping},
                    {"id": "custom.cellOptions", "value": {"type": "color-text"}}]}]),
          w=18)
    b.row("Faults and events")
    events = 'SELECT "kind", "source", "message", "sim_t" FROM "events" WHERE ' + RUN
    b.add(table("Injected faults", [target(
              f'{events} AND "kind" =~ /^fault/ AND $timeFilter', fmt="table")],
              description="fault onsets, clears and faults that could not be applied"),
          table("Plant events", [target(f"{events} AND $timeFilter", fmt="table")],
                description="every event of the plant: starts, stops, trips, commands, "
                            "faults (sim_t: simulated seconds since the start of the run)"))
    b.row("Alarms")
    targets, shown = [], []
    for measurement, series in schema.series.items():
        alarms = [s for s in series.values() if s.kind is Kind.ALARM]
        if alarms:
            q = select(Section(schema, measurement), alarms, "max", "value", by_point=True)
            targets.append(target(q, f"{measurement} $tag_point"))
            shown.extend(alarms)
    b.add(states("Alarms (1 = active on any device of the class)", targets, mapping="alarm",
                 description=describe(shown)), w=24, h=12)
    b.row("Rig and communications (live runs)")
    r = Section(schema, "rig")
    b.add(series_panel("Achieved speed (simulated s per wall s)", r, r.take("speed")),
          series_panel("Communication loss: devices now, watchdog trips so far", r,
                       r.take("comm_lost", "watchdog_trips")),
          series_panel("Simulated time and stepped-mode requests", r,
                       r.take("sim_time", "step")))
    beats = [Section(schema, m, per_device=True) for m, series in schema.series.items()
             if "heartbeat" in series]
    b.add(heartbeat_panel("Controller heartbeats (flat = silent controller)", beats),
          *auto_panels(r, "Rig"))
    b.row("KPIs")
    b.add(kpi_table(), w=12, h=12)
    return b.build()


# --------------------------------------------------------------------------- files


def dashboards(site_name_or_path: str | Path = DEFAULT_SITE) -> dict[str, Json]:
    """Every dashboard of a site: ``{file stem: dashboard JSON}``."""
    site = load_site(site_name_or_path)
    schema = Schema(build_plan(site).twin.points)  # the table a live run records
    return {"overview": overview(schema, site), "racks-cdus": racks_cdus(schema, site),
            "heat-pumps": heat_pumps(schema, site), "district": district(schema, site),
            "test-campaign": test_campaign(schema, site)}


def render(dashboard: Json) -> str:
    """The file text of a dashboard (stable: regenerating gives the same bytes)."""
    return json.dumps(dashboard, indent=2) + "\n"


def generate(site_name_or_path: str | Path = DEFAULT_SITE,
             out_dir: str | Path = DASHBOARD_DIR) -> list[Path]:
    """Write ``<out_dir>/<name>.json`` for every dashboard; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, dashboard in dashboards(site_name_or_path).items():
        path = out / f"{name}.json"
        path.write_text(render(dashboard))
        paths.append(path)
    return paths


def check(site_name_or_path: str | Path = DEFAULT_SITE,
          out_dir: str | Path = DASHBOARD_DIR) -> list[str]:
    """Differences between the generated dashboards and ``out_dir`` (empty: no drift)."""
    out = Path(out_dir)
    wanted = {f"{n}.json": render(d) for n, d in dashboards(site_name_or_path).items()}
    problems = []
    for name, text in wanted.items():
        path = out / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text() != text:
            problems.append(f"{path}: differs from the point table")
    problems += [f"{p}: not generated (stale?)" for p in sorted(out.glob("*.json"))
                 if p.name not in wanted]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rig.present.grafana [--check] [--site SITE] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m rig.present.grafana",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--site", default=DEFAULT_SITE, help="site name or file")
    parser.add_argument("--out", default=str(DASHBOARD_DIR),
                        help=f"dashboard folder (default: the shipped ones, {DASHBOARD_DIR})")
    parser.add_argument("--check", action="store_true",
                        help="compare with the folder instead of writing; exit 1 on drift")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.site, args.out)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("dashboards drifted: run `python -m rig.present.grafana`", file=sys.stderr)
            return 1
        print(f"dashboards in {args.out} match the point table of {args.site}")
        return 0
    for path in generate(args.site, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
