"""Campaign results: one row per job as CSV and Parquet, and JUnit XML (one test case per
cell), from the cells' ``result.json`` files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from rig.campaign.jobs import RESULT
from rig.present.report import xml_safe


def read_rows(campaign_dir: Path) -> list[dict[str, Any]]:
    """Every finished cell's result row, in cell order."""
    rows = []
    for f in sorted((campaign_dir / "cells").glob(f"*/{RESULT}")):
        try:
            rows.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue  # half-written by a killed run: the cell runs again
    return rows


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """One flat row: params as ``param:<path>``, ``verdict:<name>``, ``time_to_s:<name>``,
    ``kpi:<name>``."""
    flat: dict[str, Any] = {k: row.get(k) for k in (
        "cell", "scenario", "seed", "controller", "leak_detector", "status", "wall_s",
        "returncode", "error", "report")}
    for prefix, key in (("param", "params"), ("verdict", "verdicts"),
                        ("time_to_s", "time_to_s"), ("kpi", "kpis")):
        for name, value in (row.get(key) or {}).items():
            flat[f"{prefix}:{name}"] = value if not isinstance(value, dict | list) else str(value)
    return flat


def _columns(flat: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in flat for k in r))


def write_tables(campaign_dir: Path, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """``results.csv``, ``results.parquet`` and ``junit.xml`` in ``campaign_dir``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = [flatten(r) for r in rows]
    cols = _columns(flat)
    csv_path = campaign_dir / "results.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(flat)
    data = {c: [r.get(c) for r in flat] for c in cols}
    table_cols = {}
    for c, values in data.items():
        kinds = {type(v) for v in values if v is not None}
        if kinds <= {int, float} and kinds:
            table_cols[c] = pa.array([None if v is None else float(v) for v in values])
        else:
            table_cols[c] = pa.array([None if v is None else str(v) for v in values])
    parquet_path = campaign_dir / "results.parquet"
    pq.write_table(pa.table(table_cols), parquet_path)
    junit_path = campaign_dir / "junit.xml"
    junit_path.write_text(junit(campaign_dir.name, rows))
    return {"csv": csv_path, "parquet": parquet_path, "junit": junit_path}


def cell_label(row: dict[str, Any]) -> str:
    """``scenario[path=value,...] seed=N controller/detector``."""
    params = ",".join(f"{k}={v}" for k, v in (row.get("params") or {}).items())
    return (f"{row.get('scenario')}[{params}] seed={row.get('seed')} "
            f"{row.get('controller')}/{row.get('leak_detector')}")


def junit(name: str, rows: list[dict[str, Any]]) -> str:
    """JUnit XML: one test case per cell; a failed expectation is a failure, a run that
    produced no verdicts an error."""
    fails = sum(r.get("status") == "fail" for r in rows)
    errors = sum(r.get("status") == "error" for r in rows)
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           f'<testsuite name={quoteattr(xml_safe(name))} tests="{len(rows)}" '
           f'failures="{fails}" errors="{errors}">']
    for r in rows:
        case = (f'  <testcase classname={quoteattr(xml_safe(name))} '
                f'name={quoteattr(xml_safe(cell_label(r)))} '
                f'time="{float(r.get("wall_s") or 0):.3f}"')
        if r.get("status") == "fail":
            failed = [k for k, v in (r.get("verdicts") or {}).items() if v != "pass"]
            msg = "failed: " + "; ".join(failed)
            out.append(f"{case}><failure message={quoteattr(xml_safe(msg))}/></testcase>")
        elif r.get("status") == "error":
            msg = str(r.get("error") or "no verdicts")
            out.append(f"{case}><error message={quoteattr(xml_safe(msg))}/></testcase>")
        else:
            out.append(f"{case}/>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"
