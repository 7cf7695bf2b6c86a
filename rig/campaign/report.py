"""The campaign report (``report.html``, self-contained): pass/fail matrix with a link to
every cell's run report, detection rate against leak rate (per location) with Wilson 95 %
intervals, the distribution of time-to-detect, the false-alarm rate over fault-free cells.
Plots are inline SVG drawn with the run report's ticks, colours and style."""

from __future__ import annotations

import html
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from rig.campaign.results import cell_label
from rig.campaign.wilson import wilson
from rig.present.report import COLOURS, CSS, VERDICT_COLOUR, nice_ticks

W, H, L, R, T, B = 720, 280, 70, 20, 30, 46
_NUM = re.compile(r"^\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*(.*)$")


def _number(value: Any) -> tuple[float, str] | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), ""
    m = _NUM.match(str(value))
    return (float(m.group(1)), m.group(2)) if m else None


def detection_name(rows: list[dict[str, Any]], preferred: str | None) -> str | None:
    """The expectation that counts as detection: ``preferred`` or the first one."""
    if preferred:
        return preferred
    for r in rows:
        if r.get("verdicts"):
            return next(iter(r["verdicts"]))
    return None


def detection_curves(rows: list[dict[str, Any]], name: str
                     ) -> tuple[str, str, dict[str, list[tuple[float, int, int]]]]:
    """Per location: [(leak rate, detected, trials)] over the faulted cells; the rate and
    location axes are the first axis whose path ends in ``.rate`` / ``.target``."""
    paths = list(dict.fromkeys(k for r in rows for k in (r.get("params") or {})))
    rate = next((p for p in paths if p.endswith(".rate")), "")
    where = next((p for p in paths if p.endswith(".target")), "")
    counts: dict[str, dict[float, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    unit = ""
    for r in rows:
        if not r.get("faults") or name not in (r.get("verdicts") or {}):
            continue
        parsed = _number((r.get("params") or {}).get(rate)) if rate else None
        if parsed is None:
            continue
        x, unit = parsed
        loc = str((r.get("params") or {}).get(where, "all"))
        c = counts[loc][x]
        c[0] += r["verdicts"][name] == "pass"
        c[1] += 1
    curves = {loc: sorted((x, d, n) for x, (d, n) in by.items()) for loc, by in counts.items()}
    return rate, unit, curves


def _axes(x_lo: float, x_hi: float, y_lo: float, y_hi: float, xlabel: str,
          ylabel: str, title: str) -> tuple[list[str], Any, Any]:
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5

    def sx(x: float) -> float:
        return L + (x - x_lo) / (x_hi - x_lo) * (W - L - R)

    def sy(y: float) -> float:
        return H - B - (y - y_lo) / (y_hi - y_lo) * (H - B - T)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
             f'height="{H}"><text class="title" x="{L}" y="18">{html.escape(title)}</text>',
             f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" '
             f'stroke="#999"/>']
    for tx in nice_ticks(x_lo, x_hi):
        parts.append(f'<text class="tick" x="{sx(tx):.1f}" y="{H - B + 16}" '
                     f'text-anchor="middle">{tx:g}</text>')
    for ty in nice_ticks(y_lo, y_hi):
        parts.append(f'<text class="tick" x="{L - 6}" y="{sy(ty) + 4:.1f}" '
                     f'text-anchor="end">{ty:g}</text><line x1="{L}" x2="{W - R}" '
                     f'y1="{sy(ty):.1f}" y2="{sy(ty):.1f}" stroke="#eee"/>')
    parts.append(f'<text class="axis" x="{(L + W - R) / 2}" y="{H - 8}" '
                 f'text-anchor="middle">{html.escape(xlabel)}</text>')
    parts.append(f'<text class="axis" transform="translate(16 {(T + H - B) / 2}) rotate(-90)"'
                 f' text-anchor="middle">{html.escape(ylabel)}</text>')
    return parts, sx, sy


def svg_detection(curves: dict[str, list[tuple[float, int, int]]], xlabel: str) -> str:
    """Detection rate (points) with Wilson 95 % intervals (bars) against leak rate."""
    xs = [x for c in curves.values() for x, _, _ in c]
    span = (max(xs) - min(xs)) or 1.0
    parts, sx, sy = _axes(min(xs) - 0.05 * span, max(xs) + 0.05 * span, 0.0, 1.0, xlabel,
                          "detection rate", "Detection rate (Wilson 95 % intervals)")
    legend = []
    for i, (loc, points) in enumerate(sorted(curves.items())):
        colour = COLOURS[i % len(COLOURS)]
        off = (i - (len(curves) - 1) / 2) * 4
        path = []
        for x, d, n in points:
            lo, hi = wilson(d, n)
            px = sx(x) + off
            parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{sy(lo):.1f}" '
                         f'y2="{sy(hi):.1f}" stroke="{colour}" stroke-width="2"/>'
                         f'<circle cx="{px:.1f}" cy="{sy(d / n):.1f}" r="4" fill="{colour}">'
                         f'<title>{html.escape(loc)} {x:g}: {d}/{n}, 95 % '
                         f'[{lo:.2f}, {hi:.2f}]</title></circle>')
            path.append(f"{px:.1f},{sy(d / n):.1f}")
        parts.append(f'<polyline points="{" ".join(path)}" fill="none" stroke="{colour}"/>')
        legend.append(f'<li><span class="sw" style="background:{colour}"></span>'
                      f'{html.escape(loc)}</li>')
    parts.append("</svg>")
    return f'<figure>{"".join(parts)}<ul class="legend">{"".join(legend)}</ul></figure>'


def svg_histogram(values: list[float], title: str, xlabel: str, bins: int = 12) -> str:
    """A histogram of ``values``."""
    lo, hi = min(values), max(values)
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    parts, sx, sy = _axes(lo, hi, 0.0, max(counts) * 1.1, xlabel, "cells", title)
    for i, c in enumerate(counts):
        x0, x1 = sx(lo + i * width), sx(lo + (i + 1) * width)
        parts.append(f'<rect x="{x0 + 1:.1f}" y="{sy(c):.1f}" width="{max(1.0, x1 - x0 - 2):.1f}"'
                     f' height="{sy(0) - sy(c):.1f}" fill="{COLOURS[0]}"><title>{c}</title>'
                     f"</rect>")
    parts.append("</svg>")
    return f"<figure>{''.join(parts)}</figure>"


def _matrix(rows: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(n for r in rows for n in (r.get("verdicts") or {})))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    out = [f"<table><tr><th>cell</th><th>parameters</th><th>result</th>{head}</tr>"]
    for r in rows:
        status = str(r.get("status"))
        cells = []
        for n in names:
            v = (r.get("verdicts") or {}).get(n, "")
            t = (r.get("time_to_s") or {}).get(n)
            note = f" {t:.3g} s" if isinstance(t, int | float) else ""
            colour = VERDICT_COLOUR.get(v, "#fff")
            cells.append(f'<td style="background:{colour}22">{html.escape(v)}{note}</td>')
        link = html.escape(str(r.get("report", "")))
        out.append(f'<tr class="{html.escape(status)}"><td><a href="{link}">'
                   f'{html.escape(str(r.get("cell")))}</a></td><td>'
                   f'{html.escape(cell_label(r))}</td><td><span class="badge '
                   f'{html.escape(status)}">{html.escape(status)}</span>'
                   f'{html.escape(" " + str(r["error"])) if r.get("error") else ""}</td>'
                   f'{"".join(cells)}</tr>')
    out.append("</table>")
    return "".join(out)


def report_html(name: str, rows: list[dict[str, Any]], total: int,
                detection: str | None = None) -> str:
    """The campaign report of ``rows`` (``total`` cells planned)."""
    passed = sum(r.get("status") == "pass" for r in rows)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>campaign "
             f"{html.escape(name)}</title><style>{CSS}</style></head><body>",
             f"<h1>Campaign {html.escape(name)}</h1><p class='meta'>{len(rows)} of {total} "
             f"cells finished; {passed} passed, {len(rows) - passed} failed or errored.</p>"]
    det = detection_name(rows, detection)
    if det:
        rate, unit, curves = detection_curves(rows, det)
        parts.append(f"<h2>Detection: {html.escape(det)}</h2>")
        if curves:
            parts.append(svg_detection(curves, f"{rate} ({unit})" if unit else rate))
            table = ["<table><tr><th>location</th><th>rate</th><th>detected</th>"
                     "<th>95 % interval</th></tr>"]
            for loc, points in sorted(curves.items()):
                for x, d, n in points:
                    lo, hi = wilson(d, n)
                    table.append(f"<tr><td>{html.escape(loc)}</td><td class='num'>{x:g} "
                                 f"{html.escape(unit)}</td><td class='num'>{d}/{n}</td>"
                                 f"<td class='num'>{lo:.2f} - {hi:.2f}</td></tr>")
            parts.append("".join(table) + "</table>")
        else:
            parts.append("<p>No faulted cells with a leak-rate axis (a path ending "
                         "in <code>.rate</code>).</p>")
        times = [float(t) for r in rows if r.get("faults")
                 for n, t in (r.get("time_to_s") or {}).items()
                 if n == det and isinstance(t, int | float)]
        if times:
            parts.append(svg_histogram(times, f"Time to detect ({len(times)} cells)",
                                       "time to detect (s)"))
    clean = [r for r in rows if not r.get("faults")]
    parts.append("<h2>False alarms over fault-free cells</h2>")
    if clean:
        alarms = sum(r.get("status") != "pass" for r in clean)
        lo, hi = wilson(alarms, len(clean))
        parts.append(f"<p>{alarms} of {len(clean)} fault-free cells failed an expectation: "
                     f"rate {alarms / len(clean):.2f}, 95 % interval {lo:.2f} - {hi:.2f}.</p>")
    else:
        parts.append("<p>No fault-free cells in this campaign.</p>")
    parts.append("<h2>Pass/fail matrix</h2>" + _matrix(rows) + "</body></html>")
    return "".join(parts)


def write_report(campaign_dir: Path, name: str, rows: list[dict[str, Any]], total: int,
                 detection: str | None = None) -> Path:
    """``report.html`` in ``campaign_dir``."""
    path = campaign_dir / "report.html"
    path.write_text(report_html(name, rows, total, detection))
    return path
