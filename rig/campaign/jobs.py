"""One isolated job: one cell's scenario run in its own run directory, as a subprocess
``python -m rig.cli run`` with free loopback ports (Modbus port 0, embedded broker port 0),
so nothing is shared between jobs but the result row it returns."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

RESULT = "result.json"
JOB_TIMEOUT_FACTOR = 4.0  # a job may take this times its expected wall time (+ 120 s)


def write_cell_scenario(cell_dir: Path, document: dict[str, Any]) -> Path:
    """The cell's scenario file (the base with the axis values set)."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    path = cell_dir / "scenario.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _time_to(evidence: Any) -> float | None:
    value = evidence.get("time_to_s") if isinstance(evidence, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def run_job(cell: dict[str, Any], cell_dir: str) -> dict[str, Any]:
    """Run one cell (``Cell`` fields as a dict) into ``cell_dir``; return its result row
    and write it to ``cell_dir/result.json``. Wall times in s."""
    out = Path(cell_dir)
    scenario = write_cell_scenario(out, cell["document"])
    run_dir = out / "run"
    expected = cell["duration_s"] / cell["speed"]
    cmd = [sys.executable, "-m", "rig.cli", "run", str(scenario), "--out", str(run_dir),
           "--modbus", "127.0.0.1:0", "--broker-port", "0", "--quiet"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              timeout=JOB_TIMEOUT_FACTOR * expected + 120)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        rc, err = -1, "timed out"
    wall = time.perf_counter() - t0
    (out / "stderr.txt").write_text(err)
    row: dict[str, Any] = {
        "cell": cell["key"], "scenario": cell["scenario"], "seed": cell["seed"],
        "controller": cell["controller"], "leak_detector": cell["leak_detector"],
        "params": cell["params"], "faults": len(cell["document"].get("faults") or []),
        "returncode": rc, "wall_s": wall,
        "report": str((run_dir / "report.html").relative_to(out.parent)),
    }
    verdicts_file = run_dir / "verdicts.json"
    if verdicts_file.is_file():
        verdicts = json.loads(verdicts_file.read_text())
        row["verdicts"] = {v["name"]: v["verdict"] for v in verdicts}
        row["time_to_s"] = {v["name"]: _time_to(v.get("evidence")) for v in verdicts}
        row["status"] = "pass" if all(v["verdict"] == "pass" for v in verdicts) else "fail"
    else:
        row["verdicts"], row["time_to_s"] = {}, {}
        lines = [ln for ln in err.splitlines() if ln.strip()]
        row["status"] = "error"
        row["error"] = lines[-1] if lines else f"exit code {rc}"
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        kpis = json.loads(summary_file.read_text()).get("kpis") or {}
        row["kpis"] = {k: v for k, v in kpis.items() if isinstance(v, int | float)}
    else:
        row["kpis"] = {}
    (out / RESULT).write_text(json.dumps(row, indent=1))
    return row
