"""Reports of a scenario run: ``verdicts.json``, ``junit.xml`` and ``report.html``.

``verdicts.json`` is the list of `rig.assess.expect.Verdict` dicts. ``junit.xml`` holds one
testsuite named after the scenario and one testcase per expectation (``fail`` ->
``<failure>``, ``error`` -> ``<error>``, with the evidence as JSON); characters XML 1.0
cannot carry are replaced by U+FFFD. ``report.html`` is one self-contained page (no
scripts, no external resources): pass/fail summary, verdicts, KPIs and, per fault, inline
SVG plots of the relevant points around its onset with onset/clear lines, expectation
windows and verdict markers (green pass, red fail, at the evidence's time ``t``, or at
the ``deadline_s`` of a missed deadline). Series are
min/max decimated to about `MAX_PLOT_POINTS` points per line.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rig.assess.expect import START, Verdict, read_columns, unit_dimension
from rig.present.summary import FaultRow, unit_shown
from rig.record.store import RunStore
from twin.economics import REGISTRY as ECONOMICS
from twin.economics import BusinessCase
from twin.errors import RunStoreError
from twin.kpis import REGISTRY
from twin.units import format_quantity, parse_quantity

log = logging.getLogger(__name__)

MAX_PLOT_POINTS = 1000
PLOT_W, PLOT_H = 960, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 78, 20, 34, 46
MAX_POINTS_PER_FAULT = 12
COLOURS = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
VERDICT_COLOUR = {"pass": "#2ca02c", "fail": "#d62728", "error": "#7f7f7f"}

_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: object) -> str:
    """``text`` as a string XML 1.0 can hold: illegal characters become U+FFFD."""
    return _XML_ILLEGAL.sub("\ufffd", str(text))


def _json(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, sort_keys=True, default=str)


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- JSON, JUnit


def write_verdicts_json(run_dir: Path, verdicts: Sequence[Verdict]) -> Path:
    """``verdicts.json``: [{name, kind, verdict, evidence, message}, ...]."""
    return _write(run_dir / "verdicts.json",
                  _json([v.as_dict() for v in verdicts], indent=2) + "\n")


def junit_xml(scenario_name: str, verdicts: Sequence[Verdict],
              properties: Mapping[str, Any] | None = None) -> str:
    """JUnit XML text: one testsuite, one testcase per verdict."""
    failures = sum(v.verdict == "fail" for v in verdicts)
    errors = sum(v.verdict == "error" for v in verdicts)
    counts = {"tests": str(len(verdicts)), "failures": str(failures),
              "errors": str(errors), "skipped": "0", "time": "0"}
    root = ET.Element("testsuites", {"name": "heatrig", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": xml_safe(scenario_name), **counts})
    if properties:
        props = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", {"name": xml_safe(key),
                                              "value": xml_safe(value)})
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", {
            "name": xml_safe(v.name), "classname": xml_safe(f"{scenario_name}.{v.kind}"),
            "time": "0"})
        if v.verdict in ("fail", "error"):
            tag = "failure" if v.verdict == "fail" else "error"
            node = ET.SubElement(case, tag, {"message": xml_safe(v.message),
                                             "type": xml_safe(f"{v.kind}.{v.verdict}")})
            node.text = xml_safe(f"{v.message}\nevidence: {_json(v.evidence, indent=2)}")
        else:
            out = ET.SubElement(case, "system-out")
            out.text = xml_safe(f"{v.message}\nevidence: {_json(v.evidence)}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def write_junit(run_dir: Path, scenario_name: str, verdicts: Sequence[Verdict],
                properties: Mapping[str, Any] | None = None) -> Path:
    """``junit.xml`` (see `junit_xml`)."""
    return _write(run_dir / "junit.xml", junit_xml(scenario_name, verdicts, properties) + "\n")


# --------------------------------------------------------------------------- plots


def decimate(t: np.ndarray, y: np.ndarray,
             max_points: int = MAX_PLOT_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Min/max decimation to at most ``max_points`` points, keeping spikes and NaN gaps."""
    n = len(t)
    if n <= max_points:
        return t, y
    buckets = max(1, max_points // 2)
    size = math.ceil(n / buckets)
    buckets = math.ceil(n / size)
    pad = buckets * size - n
    tt = np.concatenate([t, np.full(pad, t[-1])]).reshape(buckets, size)
    yy = np.concatenate([y, np.full(pad, np.nan)]).reshape(buckets, size)
    lo_i = np.argmin(np.where(np.isnan(yy), np.inf, yy), axis=1)
    hi_i = np.argmax(np.where(np.isnan(yy), -np.inf, yy), axis=1)
    first = np.minimum(lo_i, hi_i)
    second = np.maximum(lo_i, hi_i)
    rows = np.arange(buckets)
    out_t = np.column_stack([tt[rows, first], tt[rows, second]]).ravel()
    out_y = np.column_stack([yy[rows, first], yy[rows, second]]).ravel()
    return out_t, out_y


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """About ``count`` round tick values (1, 2, 5 x 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def _tick_label(value: float) -> str:
    text = f"{value:.6g}"
    return "0" if text in ("-0", "0") else text


def _time_unit(span_s: float) -> tuple[str, float]:
    if span_s <= 1200:
        return "s", 1.0
    if span_s <= 12 * 3600:
        return "min", 60.0
    return "h", 3600.0


def display_unit(unit: str, values: np.ndarray) -> tuple[str, float]:
    """(label, divisor) to show values of ``unit``: W values near 1e6 -> ("MW", 1e6)."""
    dim = unit_dimension(unit)
    if dim is None:
        return unit, 1.0
    if dim == "dimensionless":
        return "dimensionless", 1.0
    if dim == "temperature":
        return unit, 1.0
    finite = values[np.isfinite(values)]
    peak = float(np.max(np.abs(finite))) if finite.size else 0.0
    per_unit = parse_quantity(f"1 {unit}", dim)
    shown = format_quantity(peak * per_unit, dim).split(" ", 1)
    label = shown[1] if len(shown) == 2 else unit
    try:
        return label, parse_quantity(f"1 {label}", dim) / per_unit
    except ValueError:
        return unit, 1.0


@dataclass
class Line:
    """One plotted series: label, colour, times (s), values (point unit), dashed."""

    label: str
    colour: str
    t: np.ndarray
    y: np.ndarray
    dashed: bool = False


@dataclass
class Marker:
    """A verdict at time ``t`` (s); ``y`` in the point unit or None (drawn at the top)."""

    label: str
    verdict: str
    t: float
    y: float | None
    note: str


@dataclass
class VLine:
    """A vertical line at ``t`` (s): fault onset (solid) or clear (dashed)."""

    label: str
    t: float
    dashed: bool = False


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def svg_plot(title: str, unit: str, lines: Sequence[Line], t0: float, t1: float, *,
             vlines: Sequence[VLine] = (), markers: Sequence[Marker] = (),
             windows: Sequence[tuple[float, float, str]] = ()) -> str:
    """An inline SVG line plot over [t0, t1] (s) with axes in ``unit`` (display-scaled)."""
    values = np.concatenate([ln.y for ln in lines] + [
        np.array([m.y for m in markers if m.y is not None], dtype=float)])
    label, div = display_unit(unit, values)
    finite = values[np.isfinite(values)] / div
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        pad = max(abs(hi) * 0.05, 0.5 if label != "dimensionless" else 0.1)
        lo, hi = lo - pad, hi + pad
    else:
        pad = 0.06 * (hi - lo)
        lo, hi = lo - pad, hi + pad
    if t1 <= t0:
        t1 = t0 + 1.0
    x0, x1 = MARGIN_L, PLOT_W - MARGIN_R
    y0, y1 = PLOT_H - MARGIN_B, MARGIN_T  # y0 bottom

    def sx(t: np.ndarray | float) -> Any:
        return x0 + (np.asarray(t, dtype=float) - t0) * (x1 - x0) / (t1 - t0)

    def sy(v: np.ndarray | float) -> Any:
        return y0 - (np.asarray(v, dtype=float) / div - lo) * (y0 - y1) / (hi - lo)

    tunit, tdiv = _time_unit(t1 - t0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{PLOT_W}" height="{PLOT_H}" '
           f'viewBox="0 0 {PLOT_W} {PLOT_H}" role="img" aria-label="{html.escape(title)}">',
           f"<title>{html.escape(title)}</title>",
           f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="#fcfcfc" '
           'stroke="#999"/>']
    for a, b, colour in windows:  # expectation windows
        a, b = max(a, t0), min(b, t1)
        if b > a:
            out.append(f'<rect x="{_fmt(sx(a))}" y="{y1}" width="{_fmt(sx(b) - sx(a))}" '
                       f'height="{y0 - y1}" fill="{colour}" fill-opacity="0.07"/>')
    for v in nice_ticks(lo, hi):
        y = float(sy(v * div))
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{_fmt(y)}" y2="{_fmt(y)}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{x0 - 6}" y="{_fmt(y + 4)}" text-anchor="end" class="tick">'
                   f"{_tick_label(v)}</text>")
    for v in nice_ticks(t0 / tdiv, t1 / tdiv, 8):
        x = float(sx(v * tdiv))
        out.append(f'<line x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{y1}" y2="{y0}" stroke="#eee"/>')
        out.append(f'<text x="{_fmt(x)}" y="{y0 + 16}" text-anchor="middle" class="tick">'
                   f"{_tick_label(v)}</text>")
    out.append(f'<text x="{(x0 + x1) / 2}" y="{PLOT_H - 8}" text-anchor="middle" '
               f'class="axis">simulated time since start ({tunit})</text>')
    out.append(f'<text x="16" y="{(y0 + y1) / 2}" text-anchor="middle" class="axis" '
               f'transform="rotate(-90 16 {(y0 + y1) / 2})">{html.escape(label)}</text>')
    out.append(f'<text x="{x0}" y="18" class="title">{html.escape(title)}</text>')
    for ln in lines:
        lt, ly = decimate(ln.t, ln.y)
        keep = (lt >= t0) & (lt <= t1)
        path = _path(sx(lt[keep]), sy(ly[keep]))
        if path:
            dash = ' stroke-dasharray="5 3"' if ln.dashed else ""
            out.append(f'<path d="{path}" fill="none" stroke="{ln.colour}" '
                       f'stroke-width="1.6"{dash}><title>{html.escape(ln.label)}</title></path>')
    for vl in vlines:
        if t0 <= vl.t <= t1:
            vx = _fmt(sx(vl.t))
            dash = ' stroke-dasharray="3 3"' if vl.dashed else ""
            out.append(f'<line x1="{vx}" x2="{vx}" y1="{y1}" y2="{y0}" stroke="#333" '
                       f'stroke-width="1.2"{dash}/>')
            out.append(f'<text x="{float(vx) + 3}" y="{y1 + 12}" class="note">'
                       f"{html.escape(vl.label)}</text>")
    top = 0  # markers without a value sit at the top; their labels are stacked
    for m in markers:
        if not t0 <= m.t <= t1:
            continue
        colour = VERDICT_COLOUR.get(m.verdict, "#000")
        x = float(sx(m.t))
        tip = html.escape(f"{m.label}: {m.verdict.upper()} - {m.note}")
        if m.y is not None and math.isfinite(m.y):
            y = float(sy(m.y))
            label_y = max(y1 + 24, min(y0 - 4, y - 8))
            out.append(f'<circle cx="{_fmt(x)}" cy="{_fmt(y)}" r="6" fill="{colour}" '
                       f'stroke="#fff" stroke-width="1.5"><title>{tip}</title></circle>')
        else:
            label_y = y1 + 24 + 14 * top
            top += 1
            out.append(f'<path d="M{_fmt(x - 6)},{y1 - 8} L{_fmt(x + 6)},{y1 - 8} '
                       f'L{_fmt(x)},{y1 + 2} Z" fill="{colour}"><title>{tip}</title></path>')
            out.append(f'<line x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{y1}" y2="{y0}" '
                       f'stroke="{colour}" stroke-opacity="0.5"/>')
        anchor = "end" if x > x1 - 150 else "start"
        dx = -8 if anchor == "end" else 8
        out.append(f'<text x="{_fmt(x + dx)}" y="{_fmt(label_y)}" '
                   f'text-anchor="{anchor}" class="marker" fill="{colour}">'
                   f"{html.escape(_clip(m.label, 32))}</text>")
    out.append("</svg>")
    return "\n".join(out)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "\u2026"


def _path(xs: np.ndarray, ys: np.ndarray) -> str:
    parts = []
    pen_up = True
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        if not math.isfinite(y):
            pen_up = True
            continue
        parts.append(f"{'M' if pen_up else 'L'}{x:.1f},{y:.1f}")
        pen_up = False
    return " ".join(parts)


# --------------------------------------------------------------------------- sections


def _fault_span(onset: float, end: float | None, verdicts: Sequence[Verdict],
                run_end: float) -> tuple[float, float]:
    """The plotted span around a fault: before the onset, to its expectations' windows."""
    last = onset + 300.0
    if end is not None:
        last = max(last, end)
    for v in verdicts:
        window = v.evidence.get("window")
        if isinstance(window, list) and len(window) == 2:
            last = max(last, float(window[1]))
        if isinstance(v.evidence.get("t"), int | float):
            last = max(last, float(v.evidence["t"]))
    last = min(last, run_end)
    span = max(last - onset, 60.0)
    return max(0.0, onset - max(30.0, 0.2 * span)), min(run_end, last + 0.05 * span)


def _markers(verdicts: Sequence[Verdict], points: Sequence[str]) -> list[Marker]:
    out = []
    for v in verdicts:
        t = v.evidence.get("t", v.evidence.get("deadline_s"))  # a missed deadline: its end
        if v.verdict == "error" or not isinstance(t, int | float):
            continue
        y = v.evidence.get("value")
        on_plot = v.evidence.get("point") in points
        out.append(Marker(v.name, v.verdict, float(t),
                          float(y) if on_plot and isinstance(y, int | float) else None,
                          v.message))
    return out


def _plots_for(store: RunStore, title: str, points: Sequence[str],
               verdicts: Sequence[Verdict], t0: float, t1: float,
               vlines: Sequence[VLine]) -> list[str]:
    """One SVG per unit among ``points`` over [t0, t1] (s)."""
    known = [p for p in points if p in store.point_index]
    missing = [p for p in points if p not in store.point_index]
    parts = []
    if missing:
        parts.append(f'<p class="warn">not in this run: {html.escape(", ".join(missing))}</p>')
    if not known:
        return parts
    t, measured, truth = read_columns(store, known, t0, t1)
    by_unit: dict[str, list[int]] = {}
    for i, p in enumerate(known):
        by_unit.setdefault(str(store.points[store.point_index[p]]["unit"]), []).append(i)
    markers_all = _markers(verdicts, known)
    windows = [(float(v.evidence["window"][0]), float(v.evidence["window"][1]),
                VERDICT_COLOUR.get(v.verdict, "#000")) for v in verdicts
               if isinstance(v.evidence.get("window"), list) and v.verdict != "error"]
    for unit, cols in by_unit.items():
        lines: list[Line] = []
        legend = []
        for n, i in enumerate(cols):
            colour = COLOURS[n % len(COLOURS)]
            p = known[i]
            lines.append(Line(f"{p} (truth)", colour, t, truth[:, i]))
            differs = not np.array_equal(measured[:, i], truth[:, i], equal_nan=True)
            if differs:
                lines.append(Line(f"{p} (measured)", colour, t, measured[:, i], dashed=True))
            legend.append(f'<li><span class="sw" style="background:{colour}"></span>'
                          f'<code>{html.escape(p)}</code>'
                          + (" (solid truth, dashed measured)" if differs else "") + "</li>")
        on_plot = {known[i] for i in cols}
        markers = [m for m in markers_all if m.y is None or any(
            v.name == m.label and v.evidence.get("point") in on_plot for v in verdicts)]
        svg = svg_plot(f"{title} [{unit or '1'}]", unit, lines, t0, t1, vlines=vlines,
                       markers=markers, windows=windows)
        parts.append(f'<figure>{svg}<figcaption><ul class="legend">{"".join(legend)}</ul>'
                     "</figcaption></figure>")
    return parts


def time_to_text(evidence: Mapping[str, Any]) -> str:
    """A verdict's ``time_to_s`` (anchor to the first satisfying occurrence) for tables:
    ``42 s``, ``3.5 min``; an en dash when there is none."""
    value = evidence.get("time_to_s")
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(
            value):
        return "\u2013"
    return f"{value:.3g} s" if abs(value) < 120 else f"{value / 60:.3g} min"


def _verdict_rows(verdicts: Sequence[Verdict]) -> str:
    rows = []
    for v in verdicts:
        evidence = html.escape(_clip(_json(v.evidence), 400))
        rows.append(f'<tr class="{v.verdict}"><td><span class="badge {v.verdict}">'
                    f"{v.verdict.upper()}</span></td><td>{html.escape(v.name)}</td>"
                    f"<td>{html.escape(v.kind)}</td>"
                    f"<td>{html.escape(time_to_text(v.evidence))}</td>"
                    f"<td>{html.escape(v.message)}</td>"
                    f'<td class="ev"><code>{evidence}</code></td></tr>')
    return "\n".join(rows)


def _kpi_rows(kpis: Mapping[str, float]) -> str:
    """Rows of the KPIs `twin.kpis.REGISTRY` puts in reports, then any the registry does
    not know (a run of another version), by name alone."""
    rows = []
    for name, spec in REGISTRY.items():
        if spec.report and name in kpis:
            rows.append(_kpi_row(name, spec.label, spec.description, kpis[name],
                                 unit_shown(spec.unit)))
    for name, value in kpis.items():
        if name not in REGISTRY:
            rows.append(_kpi_row(name, name, "", value, ""))
    return "\n".join(rows)


def _kpi_row(name: str, label: str, description: str, value: float, unit: str) -> str:
    shown = f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    esc = html.escape
    return (f'<tr><td><code>{esc(name)}</code></td><td title="{esc(description)}">'
            f'{esc(label)}</td><td class="num">{shown}</td><td>{esc(unit)}</td></tr>')


SENSITIVITY_LABEL = {"heat_price": "heat price", "electricity_price": "electricity price",
                     "capex": "capital cost"}


def svg_sensitivity(case: BusinessCase, lifetime: float) -> str:
    """An inline SVG of simple payback (years) against each sensitivity parameter's change
    (-50 % to +50 %), drawn like `svg_plot`; a payback that never comes (or is beyond
    twice ``lifetime``) is drawn at that cap."""
    cap = 2.0 * lifetime
    series = {k: [(100.0 * (f - 1.0), min(cap, p) if math.isfinite(p) and p >= 0 else cap)
                  for f, p in rows] for k, rows in case.sensitivity.items()}
    values = [p for rows in series.values() for _, p in rows]
    xs = [x for rows in series.values() for x, _ in rows]
    lo, hi = 0.0, max([*values, 1.0]) * 1.06
    xlo, xhi = min([*xs, -50.0]), max([*xs, 50.0])
    x0, x1 = MARGIN_L, PLOT_W - MARGIN_R
    y0, y1 = PLOT_H - MARGIN_B, MARGIN_T

    def sx(x: float) -> float:
        return x0 + (x - xlo) * (x1 - x0) / (xhi - xlo)

    def sy(v: float) -> float:
        return y0 - (v - lo) * (y0 - y1) / (hi - lo)

    title = "simple payback against price and capital cost"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{PLOT_W}" height="{PLOT_H}" '
           f'viewBox="0 0 {PLOT_W} {PLOT_H}" role="img" aria-label="{html.escape(title)}">',
           f"<title>{html.escape(title)}</title>",
           f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="#fcfcfc" '
           'stroke="#999"/>']
    for v in nice_ticks(lo, hi):
        y = sy(v)
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{_fmt(y)}" y2="{_fmt(y)}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{x0 - 6}" y="{_fmt(y + 4)}" text-anchor="end" class="tick">'
                   f"{_tick_label(v)}</text>")
    for v in nice_ticks(xlo, xhi, 10):
        x = sx(v)
        out.append(f'<line x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{y1}" y2="{y0}" stroke="#eee"/>')
        out.append(f'<text x="{_fmt(x)}" y="{y0 + 16}" text-anchor="middle" class="tick">'
                   f"{_tick_label(v)}</text>")
    out.append(f'<text x="{(x0 + x1) / 2}" y="{PLOT_H - 8}" text-anchor="middle" '
               'class="axis">change of the parameter from the site\'s value (%)</text>')
    out.append(f'<text x="16" y="{(y0 + y1) / 2}" text-anchor="middle" class="axis" '
               f'transform="rotate(-90 16 {(y0 + y1) / 2})">simple payback (years)</text>')
    out.append(f'<text x="{x0}" y="18" class="title">{html.escape(title)} (capped at '
               f"{cap:g} years)</text>")
    for i, (name, rows) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{'M' if j == 0 else 'L'}{_fmt(sx(x))},{_fmt(sy(p))}"
                        for j, (x, p) in enumerate(rows))
        label = SENSITIVITY_LABEL.get(name, name)
        out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.6">'
                   f"<title>{html.escape(label)}</title></path>")
    out.append("</svg>")
    return "\n".join(out)


def economics_section(case: BusinessCase | None, lifetime: float = 20.0) -> list[str]:
    """The report's Economics section: the figures of `twin.economics.REGISTRY` and the
    payback sensitivity chart."""
    if case is None:
        return ["<h2>Economics</h2>", "<p>No economics (the run has no simulated time).</p>"]
    esc = html.escape
    rows = []
    for name, spec in ECONOMICS.items():
        if name not in case.values:
            continue
        value = case.values[name]
        shown = (f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
                 ) if math.isfinite(value) else "never" if spec.unit == "a" else "\u2013"
        rows.append(f'<tr><td><code>{esc(name)}</code></td><td title="{esc(spec.description)}">'
                    f'{esc(spec.label)}</td><td class="num">{shown}</td>'
                    f"<td>{esc(unit_shown(case.unit(name)))}</td></tr>")
    legend = "".join(f'<li><span class="sw" style="background:{COLOURS[i % len(COLOURS)]}">'
                     f"</span>{esc(SENSITIVITY_LABEL.get(k, k))}</li>"
                     for i, k in enumerate(case.sensitivity))
    return ["<h2>Economics</h2>",
            f'<p class="meta">annualised from the run, money in {esc(case.currency)}</p>',
            "<table><tr><th>figure</th><th>meaning</th><th>value</th><th>unit</th></tr>"
            f"{''.join(rows)}</table>",
            f'<figure>{svg_sensitivity(case, lifetime)}<figcaption><ul class="legend">'
            f"{legend}</ul></figcaption></figure>"]


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;
background:#fff;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:20px 0 4px}.meta{color:#555;margin:0 0 12px}
table{border-collapse:collapse;font-size:13px;width:100%}
td,th{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.ev code{font-size:11px;word-break:break-all}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;color:#fff;font-weight:600;
font-size:12px}.badge.pass{background:#2ca02c}.badge.fail{background:#d62728}
.badge.error{background:#7f7f7f}.summary .badge{font-size:15px;margin-right:8px}
tr.fail td{background:#fff4f4}tr.error td{background:#f6f6f6}
figure{margin:8px 0 16px}svg{font-size:12px;max-width:100%;height:auto}
svg .tick{fill:#555;font-size:11px}svg .axis{fill:#333;font-size:12px}
svg .title{fill:#222;font-size:13px;font-weight:600}svg .note{fill:#333;font-size:11px}
svg .marker{font-size:11px;font-weight:600}
ul.legend{list-style:none;padding:0;margin:2px 0 0;font-size:12px}
ul.legend li{display:inline-block;margin-right:16px}
.sw{display:inline-block;width:14px;height:4px;margin-right:5px;vertical-align:middle}
.warn{color:#a15c00}
"""


def report_html(scenario_name: str, verdicts: Sequence[Verdict], store: RunStore,
                faults: Sequence[FaultRow], kpis: Mapping[str, float] | None,
                fault_points: Mapping[str, Sequence[str]] | None = None,
                economics: BusinessCase | None = None) -> str:
    """The HTML report as text (see the module docstring)."""
    fault_points = fault_points or {}
    run_end = store.last_sample_time() or 0.0
    counts = {k: sum(v.verdict == k for v in verdicts) for k in ("pass", "fail", "error")}
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<link rel="icon" href="data:,">',
        f"<title>heatrig scenario {esc(scenario_name)}</title><style>{CSS}</style></head><body>",
        f"<h1>Scenario <code>{esc(scenario_name)}</code></h1>",
        f'<p class="meta">run <code>{esc(store.run_id)}</code>, site '
        f"<code>{esc(store.site or '-')}</code>, simulated {run_end:g} s "
        f"({run_end / 3600:.2f} h)</p>",
        '<p class="summary">' + "".join(
            f'<span class="badge {k}">{n} {label}</span>' for k, label, n in (
                ("pass", "passed", counts["pass"]), ("fail", "failed", counts["fail"]),
                ("error", "error", counts["error"]))) + "</p>",
        "<h2>Expectations</h2>",
    ]
    if verdicts:
        parts.append("<table><tr><th>verdict</th><th>name</th><th>kind</th>"
                     '<th title="from the anchor to the first satisfying occurrence">'
                     "time to</th><th>result</th>"
                     f"<th>evidence</th></tr>{_verdict_rows(verdicts)}</table>")
    else:
        parts.append("<p>No expectations.</p>")
    parts.append("<h2>KPIs</h2>")
    rows = _kpi_rows(kpis) if kpis else ""
    parts.append(f"<table><tr><th>KPI</th><th>meaning</th><th>value</th><th>unit</th></tr>"
                 f"{rows}</table>" if rows else "<p>No KPIs recorded.</p>")
    lifetime = store.manifest.get("site_config", {}).get("economics", {}).get("lifetime", 20)
    parts += economics_section(economics, float(lifetime))
    parts.append("<h2>Faults</h2>")
    if not faults:
        parts.append("<p>No faults.</p>")
    for fault in faults:
        parts += _fault_section(store, fault, verdicts, fault_points, run_end)
    started = [v for v in verdicts if v.evidence.get("after") == START]
    points = list(dict.fromkeys(v.evidence["point"] for v in started
                                if isinstance(v.evidence.get("point"), str)))
    if points:
        parts.append("<h2>Expectations from the start of the run</h2>")
        parts += _plots_for(store, "from start", points[:MAX_POINTS_PER_FAULT], started, 0.0,
                            run_end, [])
    parts.append("</body></html>")
    return xml_safe("\n".join(parts))


def _fault_section(store: RunStore, fault: FaultRow, verdicts: Sequence[Verdict],
                   fault_points: Mapping[str, Sequence[str]], run_end: float) -> list[str]:
    esc = html.escape
    fid = fault.id
    onset, end = fault.onset_s, fault.end_s
    head = f"<h3>{esc(fid)}: {esc(fault.kind)} on <code>{esc(fault.target)}</code></h3>"
    anchored = [v for v in verdicts if v.evidence.get("after") == fid]
    if onset is None:
        names = ", ".join(v.name for v in anchored)
        return [head, f'<p class="warn">did not start{"; expectations: " if names else ""}'
                      f"{esc(names)}</p>"]
    when = f"onset t = {onset:g} s" + (f", cleared t = {end:g} s" if end is not None
                                       else ", not cleared")
    points = [v.evidence["point"] for v in anchored if isinstance(v.evidence.get("point"), str)]
    points = list(dict.fromkeys([*points, *fault_points.get(fid, [])]))
    if len(points) > MAX_POINTS_PER_FAULT:
        log.info("report: fault %s: plotting %d of %d points", fid, MAX_POINTS_PER_FAULT,
                 len(points))
        points = points[:MAX_POINTS_PER_FAULT]
    t0, t1 = _fault_span(onset, end, anchored, run_end)
    vlines = [VLine(f"onset {fid}", onset)]
    if end is not None:
        vlines.append(VLine(f"{fid} cleared", end, dashed=True))
    out = [head, f'<p class="meta">{when}; {len(anchored)} expectation(s)</p>']
    if not points:
        return [*out, "<p>No points to plot (no point expectations and no fault points).</p>"]
    try:
        out += _plots_for(store, fid, points, anchored, t0, t1, vlines)
    except RunStoreError as exc:
        out.append(f'<p class="warn">{esc(str(exc))}</p>')
    return out


# --------------------------------------------------------------------------- all of it


def write_reports(run_dir: str | Path, scenario_name: str, verdicts: Sequence[Verdict],
                  store: RunStore, faults: Sequence[FaultRow],
                  kpis: Mapping[str, float] | None,
                  fault_points: Mapping[str, Sequence[str]] | None = None,
                  economics: BusinessCase | None = None) -> dict[str, Path]:
    """Write ``verdicts.json``, ``junit.xml`` and ``report.html`` into ``run_dir``.

    ``faults``: the run's `FaultRow`s; ``kpis``: the run's KPIs, name -> value in
    the unit of `twin.kpis.REGISTRY`; ``fault_points``: fault id -> point ids to plot
    besides the points of the expectations anchored to it; ``economics``: the run's business
    case (the report's Economics section). Returns {"verdicts", "junit",
    "html"} -> path.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    properties = {"run_id": store.run_id, "site": store.site,
                  "seed": store.manifest.get("seed", "")}
    paths = {
        "verdicts": write_verdicts_json(run_dir, verdicts),
        "junit": write_junit(run_dir, scenario_name, verdicts, properties),
        "html": _write(run_dir / "report.html",
                       report_html(scenario_name, verdicts, store, faults, kpis, fault_points,
                                   economics=economics)),
    }
    log.info("reports written to %s", run_dir)
    return paths


__all__ = ["decimate", "junit_xml", "nice_ticks", "report_html", "svg_plot", "write_junit",
           "write_reports", "write_verdicts_json", "xml_safe"]
