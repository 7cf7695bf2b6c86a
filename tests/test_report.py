"""Reports: verdicts.json, JUnit XML that parses, and an HTML page Chromium renders."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict
from test_expect import LEAK, POINTS, fill

from rig.assess.expect import Expectation, Verdict, evaluate
from rig.config.loader import validate_data
from rig.present.report import decimate, junit_xml, nice_ticks, write_reports, xml_safe
from rig.present.summary import FaultRow
from rig.record.store import RunStore

EXPECT = [
    {"name": "leak alarm <published>", "kind": "mqtt", "after": "leak1", "within": "60 s",
     "topic": "sut/+/cdu1/alarm", "payload": {"alarm": "leak"}},
    {"name": "valve closed & fast", "kind": "modbus_write", "after": "leak1",
     "within": "20 s", "point": "cdu1.valve_cmd", "max": "5 %"},
    {"name": "supply stays cool", "kind": "condition", "after": "leak1", "within": "30 min",
     "point": "cdu1.supply_temp", "op": "<=", "value": "45 degC"},
    {"name": "measured in band", "kind": "condition", "after": "leak1", "delay": "10 min",
     "within": "5 min", "point": "cdu1.supply_temp", "signal": "measured",
     "between": ["40 degC", "45 degC"]},
    {"name": "pump anchor", "kind": "condition", "after": "pump2", "point": "hp1.power",
     "op": ">=", "value": "50 kW"},
    {"name": "pue", "kind": "kpi", "kpi": "pue", "op": "<=", "value": 1.2},
    {"name": "power from start", "kind": "condition", "point": "hp1.power", "op": ">=",
     "value": "50 kW"},
]
FAULTS = [
    FaultRow(id="leak1", kind="leak", target="cdu1", onset_s=LEAK, end_s=2400.0),
    FaultRow(id="pump2", kind="pump_trip", target="facility.pump2", onset_s=None, end_s=None),
]


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expect: list[Expectation]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], list[Verdict]]:
    run = tmp_path_factory.mktemp("report") / "run"
    with RunStore.create(run, {"site": "unit", "scenario": "leak", "seed": 3}, POINTS) as s:
        fill(s)
    exps = validate_data({"expect": EXPECT}, Doc).expect
    with RunStore.open(run) as store:
        verdicts = evaluate(exps, store, {"leak1": LEAK, "pump2": None}, 3600.0)
        paths = write_reports(run, "leak-cdu1", verdicts, store, FAULTS, store.kpis(),
                              {"leak1": ["hp1.power", "cdu1.leak_alarm"]})
    return paths, verdicts


def test_outcomes_cover_every_verdict(reports: tuple[dict[str, Path], list[Verdict]]) -> None:
    _, verdicts = reports
    assert [v.verdict for v in verdicts] == ["pass", "fail", "fail", "pass", "error", "pass",
                                             "pass"]


def test_verdicts_json(reports: tuple[dict[str, Path], list[Verdict]]) -> None:
    paths, verdicts = reports
    data = json.loads(paths["verdicts"].read_text())
    assert [d["name"] for d in data] == [v.name for v in verdicts]
    assert set(data[0]) == {"name", "kind", "verdict", "evidence", "message"}
    assert data[0]["evidence"]["t"] == 1250.0


def test_junit_parses_with_counts(reports: tuple[dict[str, Path], list[Verdict]]) -> None:
    import xml.etree.ElementTree as ET

    paths, _ = reports
    root = ET.parse(paths["junit"]).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "leak-cdu1"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("7", "2", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases][:2] == ["leak alarm <published>",
                                                  "valve closed & fast"]
    failure = cases[2].find("failure")
    assert failure is not None and "2701" in (failure.text or "")
    assert cases[4].find("error") is not None
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["seed"] == "3"


def test_junit_escapes_what_xml_cannot_hold() -> None:
    import xml.etree.ElementTree as ET

    nasty = 'payload \x00\x1b[31m "q" <b> & ]]> \ud800 end'
    v = Verdict("n\x07ame", "mqtt", "fail", {"payload": nasty}, nasty)
    root = ET.fromstring(junit_xml("s<&>", [v]).encode())
    case = root.find("testsuite/testcase")
    assert case is not None and case.get("name") == "n\ufffdame"
    failure = case.find("failure")
    assert failure is not None and '"q" <b> & ]]>' in (failure.get("message") or "")
    assert xml_safe("a\x00b\ttab") == "a\ufffdb\ttab"


def test_decimation_keeps_extremes_and_gaps() -> None:
    t = np.arange(100_000, dtype=float)
    y = np.sin(t / 5000)
    y[50_000] = 9.0
    y[70_000:70_500] = np.nan
    dt, dy = decimate(t, y, 1000)
    assert len(dt) <= 1000 and np.all(np.diff(dt) >= 0)
    assert np.nanmax(dy) == 9.0 and np.isnan(dy).any()
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_html_is_self_contained(reports: tuple[dict[str, Path], list[Verdict]]) -> None:
    import xml.etree.ElementTree as ET

    page = reports[0]["html"].read_text()
    assert len(page) < 400_000
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page)
    assert "leak alarm &lt;published&gt;" in page and "did not start" in page
    svgs = re.findall(r"<svg.*?</svg>", page, re.DOTALL)
    assert len(svgs) == 4  # leak1: dimensionless, degC, W; from start: W
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
        assert len(re.findall(r"<path d=\"M[^\"]*\"", svg)) >= 1
    temp = next(svg for svg in svgs if 'aria-label="leak1 [degC]"' in svg)
    assert "onset leak1" in temp and "leak1 cleared" in temp
    assert 'fill="#d62728"' in temp and 'fill="#2ca02c"' in temp
    assert ">degC</text>" in temp and "simulated time since start (min)" in temp
    power = next(svg for svg in svgs if 'aria-label="leak1 [W]"' in svg)
    assert ">kW</text>" in power


# --------------------------------------------------------------------------- Chromium


def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install "
                       "-y -qq --no-install-recommends chromium", shell=True, check=True,
                       capture_output=True, timeout=900)
        found = shutil.which("chromium")
    assert found, "chromium is not installed (make services installs it)"
    return found


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB/RGBA non-interlaced PNG as an (h, w, channels) uint8 array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert header is not None
    w, h, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, w * bpp + 1)
    out = np.zeros((h, w * bpp), dtype=np.uint8)
    prev = np.zeros(w * bpp, dtype=np.uint8)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:]
        if f == 0:
            cur = line.copy()
        elif f == 1:  # Sub: running sum per channel
            cur = np.cumsum(line.reshape(w, bpp), axis=0, dtype=np.uint64).astype(
                np.uint8).ravel()
        elif f == 2:  # Up
            cur = line + prev
        else:  # Average (3) or Paeth (4): byte by byte, Python ints are fastest here
            cur = np.frombuffer(_unfilter_row(int(f), line.tobytes(), prev.tobytes(), bpp),
                                dtype=np.uint8)
        out[y] = cur
        prev = cur
    return out.reshape(h, w, bpp)


def _unfilter_row(f: int, line: bytes, prev: bytes, bpp: int) -> bytes:
    out = bytearray(len(line))
    for x in range(len(line)):
        a = out[x - bpp] if x >= bpp else 0
        b = prev[x]
        if f == 3:
            pred = (a + b) >> 1
        else:
            c = prev[x - bpp] if x >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        out[x] = (line[x] + pred) & 0xFF
    return bytes(out)


def test_html_renders_in_headless_chromium(
        reports: tuple[dict[str, Path], list[Verdict]], tmp_path: Path) -> None:
    browser = chromium()
    page = reports[0]["html"]
    png = tmp_path / "shot.png"
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
         "--window-size=1200,1600", "--enable-logging=stderr", "--v=0",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    log: Any = result.stderr
    assert result.returncode == 0, log[-2000:]
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert not console, console
    img = decode_png(png.read_bytes())[:, :, :3]
    assert img.shape[:2] == (1600, 1200)
    plots = img[700:, :1000].reshape(-1, 3)  # below the tables: the fault plots
    non_white = np.count_nonzero(np.any(plots < 240, axis=1))
    colours = len(np.unique(plots.astype(np.uint32) @ np.array([65536, 256, 1])))
    assert non_white > 20_000, non_white
    assert colours > 50, colours
    red = np.count_nonzero(np.all(np.abs(plots.astype(int) - [214, 39, 40]) < 30, axis=1))
    assert red > 20  # a fail marker or badge is drawn
