"""InfluxDB line protocol for recorded runs, built with f-strings (see docs/influx-schema.md).

No influxdb-client ``Point`` (about 18 us a point): each point's line prefix (measurement
and tags) is escaped once per run, and a sample line is then one f-string (about 1 us).

Schema, in short: one measurement per device class (``cdu``, ``rack``, ``heat_pump``,
``facility``, ``district``, ``site``, ``dry_cooler``, ``air``), tags ``device``, ``point``,
``run``, ``site``, float fields ``value`` (measured) and ``truth``; plus ``events``,
``verdicts`` and ``kpis``. Timestamps are integer nanoseconds: the run's time origin
(wall-clock start, stored in the run's manifest) plus simulated time, so exporting the
same run twice writes the same points.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Measurement names of device classes whose short prefix is not self-explanatory.
CLASS_NAMES = {"hp": "heat_pump", "drycooler": "dry_cooler"}
_RACK = re.compile(r"^(?P<device>[^.]+\.rack\d+)\.(?P<point>.+)$")
_TRAILING_DIGITS = re.compile(r"\d+$")

MAX_STRING_FIELD = 16_384  # characters; InfluxDB 1.x refuses string fields over 64 KB
NS_PER_US = 1_000
NS_PER_MS = 1_000_000


# --------------------------------------------------------------------------- escaping


def escape_tag(text: str) -> str:
    """Escape a tag key, tag value or field key: ``,`` ``=`` and space get a backslash.

    Line breaks become spaces and backslashes become ``/`` (1.x and 2.x disagree on
    ``\\\\`` in tags, and a trailing backslash would escape the separator).
    """
    if not text:
        return text
    text = text.replace("\\", "/").replace("\n", " ").replace("\r", " ")
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_measurement(text: str) -> str:
    """Escape a measurement name: ``,`` and space get a backslash."""
    text = text.replace("\\", "/").replace("\n", " ").replace("\r", " ")
    return text.replace(",", "\\,").replace(" ", "\\ ")


def string_field(text: str) -> str:
    """Quoted string field: ``\\`` and ``"`` escaped, ``\\n`` for line breaks, at most
    `MAX_STRING_FIELD` characters."""
    if len(text) > MAX_STRING_FIELD:
        text = text[:MAX_STRING_FIELD - 3] + "..."
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n").replace("\r", "\\r") + '"'


def float_field(value: float) -> str | None:
    """A float field value (shortest round-trip repr), or None if not finite."""
    value = float(value)
    return repr(value) if math.isfinite(value) else None


def tag_set(tags: Mapping[str, str]) -> str:
    """``,k=v,...`` with keys sorted (InfluxDB's preferred order) and empty values left out."""
    return "".join(f",{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v)


# --------------------------------------------------------------------------- schema


def point_key(point_id: str) -> tuple[str, str, str]:
    """``(measurement, device, point)`` of a point id; ``device + "." + point == point_id``.

    ``cdu1.rack03.case_temp`` -> ``("rack", "cdu1.rack03", "case_temp")``,
    ``hp2.trip.low_pressure`` -> ``("heat_pump", "hp2", "trip.low_pressure")``.
    """
    rack = _RACK.match(point_id)
    if rack:
        return "rack", rack["device"], rack["point"]
    device, _, point = point_id.partition(".")
    cls = _TRAILING_DIGITS.sub("", device) or device
    return CLASS_NAMES.get(cls, cls), device, point or "value"


def timestamp_ns(origin_ns: int, t: float, tie: int = 0) -> int:
    """Integer ns timestamp of simulated time ``t`` (s, kept to 1 us), ``tie`` adds ms."""
    return origin_ns + round(t * 1e6) * NS_PER_US + tie * NS_PER_MS


class SampleEncoder:
    """Lines of one recorded instant: one line per point with ``value`` and ``truth``.

    ``points`` are the run's point descriptions (``id`` at least), in table order.
    """

    def __init__(self, points: Sequence[Mapping[str, Any]], run: str, site: str,
                 origin_ns: int) -> None:
        self.origin_ns = origin_ns
        self.measurements: list[str] = []
        self.prefixes: list[str] = []
        for p in points:
            measurement, device, point = point_key(str(p["id"]))
            self.measurements.append(measurement)
            tags = tag_set({"device": device, "point": point, "run": run, "site": site})
            self.prefixes.append(f"{escape_measurement(measurement)}{tags} ")

    def lines(self, t: float, measured: np.ndarray, truth: np.ndarray) -> list[str]:
        """Lines of the instant ``t`` (s); non-finite values are left out (NaN is no field)."""
        ts = timestamp_ns(self.origin_ns, t)
        if np.isfinite(measured).all() and np.isfinite(truth).all():
            return [f"{p}value={m!r},truth={r!r} {ts}"
                    for p, m, r in zip(self.prefixes, measured.tolist(), truth.tolist(),
                                       strict=True)]
        out = []
        for p, m, r in zip(self.prefixes, measured.tolist(), truth.tolist(), strict=True):
            fields = [f"{k}={v!r}" for k, v in (("value", m), ("truth", r)) if math.isfinite(v)]
            if fields:
                out.append(f"{p}{','.join(fields)} {ts}")
        return out


def event_line(run: str, site: str, origin_ns: int, t: float, tie: int, source: str,
               kind: str, message: str) -> str:
    """An ``events`` line (Grafana annotation: text ``message``, tags ``source``/``kind``)."""
    tags = tag_set({"run": run, "site": site, "source": source, "kind": kind})
    return (f"events{tags} message={string_field(message)},sim_t={float(t)!r} "
            f"{timestamp_ns(origin_ns, t, tie)}")


def verdict_line(run: str, site: str, origin_ns: int, t: float, name: str, verdict: str,
                 evidence: str) -> str:
    """A ``verdicts`` line: tags ``name``/``verdict``, fields ``text``/``evidence`` (JSON)."""
    tags = tag_set({"run": run, "site": site, "name": name, "verdict": verdict})
    return (f"verdicts{tags} text={string_field(f'{name}: {verdict}')},"
            f"evidence={string_field(evidence)} {timestamp_ns(origin_ns, t)}")


def kpi_line(run: str, site: str, origin_ns: int, t: float,
             kpis: Mapping[str, Any]) -> str | None:
    """A ``kpis`` line with one float field per finite numeric KPI, or None if there is none."""
    fields = []
    for key, value in sorted(kpis.items()):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        text = float_field(value)
        if text is not None:
            fields.append(f"{escape_tag(str(key))}={text}")
    if not fields:
        return None
    tags = tag_set({"run": run, "site": site})
    return f"kpis{tags} {','.join(fields)} {timestamp_ns(origin_ns, t)}"
