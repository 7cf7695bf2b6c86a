"""Campaign files: base scenario(s), parameter axes, seeds and SUT variants -> a job matrix.

An axis sets one dotted path of the scenario document in every cell:
``faults.<id>.<field>`` (a fault found by its id), ``site.<path>`` (into
``site_overrides``), or any other scenario key path (``duration``, ``weather.<key>``).
Values are a list, a range ``{from, to, step}`` or random samples
``{low, high, samples, seed}``; quantities keep their unit (``0.05 kg/s``).
"""

from __future__ import annotations

import copy
import itertools
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rig.config.loader import validate_data
from rig.config.scenario import scenario_path
from rig.config.yamlsafe import load_yaml
from rig.sut import CONTROLLER_VARIANTS, LEAK_DETECTOR_VARIANTS
from twin.errors import ConfigError

DEFAULT_MAX_JOBS = 5000
_QTY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")


class Range(BaseModel):
    """Values from ``from`` to ``to`` (inclusive) by ``step``, in one unit."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    start: str | float = Field(alias="from")
    to: str | float
    step: str | float


class Random(BaseModel):
    """``samples`` values drawn uniformly in [low, high] with ``seed``."""

    model_config = ConfigDict(extra="forbid")
    low: str | float
    high: str | float
    samples: int = Field(ge=1, le=10_000)
    seed: int = Field(0, ge=0)


class Axis(BaseModel):
    """One parameter axis."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(pattern=_PATH.pattern)
    values: list[Any] | None = None
    range: Range | None = None
    random: Random | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Axis:
        given = [k for k in ("values", "range", "random") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of values, range or random")
        if self.values is not None and not self.values:
            raise ValueError("empty axis: values has no entries")
        return self


class Sut(BaseModel):
    """One system-under-test variant pair."""

    model_config = ConfigDict(extra="forbid")
    controller: str = "none"
    leak_detector: str = "none"

    @model_validator(mode="after")
    def _known(self) -> Sut:
        if self.controller not in (*CONTROLLER_VARIANTS, "none", "base"):
            raise ValueError(f"controller must be one of {', '.join(CONTROLLER_VARIANTS)}, "
                             f"none or base (got {self.controller!r})")
        if self.leak_detector not in (*LEAK_DETECTOR_VARIANTS, "none", "base"):
            raise ValueError(f"leak_detector must be one of "
                             f"{', '.join(LEAK_DETECTOR_VARIANTS)}, none or base "
                             f"(got {self.leak_detector!r})")
        return self


class Campaign(BaseModel):
    """A campaign file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    description: str = ""
    scenarios: list[str] = Field(min_length=1, max_length=50)
    axes: list[Axis] = Field(default_factory=list, max_length=16)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=10_000)
    sut: list[Sut] = Field(default_factory=lambda: [Sut(controller="base",
                                                       leak_detector="base")],
                           min_length=1, max_length=64)
    speed: float | None = Field(None, gt=0, le=10_000)
    max_jobs: int = Field(DEFAULT_MAX_JOBS, ge=1, le=1_000_000)


@dataclass
class Cell:
    """One job: a scenario document with every axis value set."""

    key: str
    scenario: str
    params: dict[str, Any]
    seed: int
    controller: str
    leak_detector: str
    document: dict[str, Any] = field(repr=False)

    @property
    def live(self) -> bool:
        """True when a system under test runs over the network."""
        return self.controller != "none" or self.leak_detector != "none"

    @property
    def duration_s(self) -> float:
        from twin.units import parse_quantity

        return parse_quantity(self.document["duration"], "duration")

    @property
    def speed(self) -> float:
        return float(self.document.get("speed", 60))


@dataclass
class LoadedCampaign:
    path: Path
    campaign: Campaign
    bases: dict[str, dict[str, Any]]
    cells: list[Cell]


def _split(value: str | float, where: str) -> tuple[float, str]:
    if isinstance(value, int | float):
        return float(value), ""
    m = _QTY.match(value)
    if not m:
        raise ConfigError([f"{where}: expected a number with an optional unit "
                           f"such as '0.05 kg/s' (got {value!r})"])
    return float(m.group(1)), m.group(2)


def _join(number: float, unit: str) -> str | float:
    text = f"{round(number, 12):g}"
    return f"{text} {unit}" if unit else float(text)


def axis_values(axis: Axis, where: str) -> list[Any]:
    """The values of one axis (quantities as text with their unit)."""
    if axis.values is not None:
        return list(axis.values)
    if axis.range is not None:
        lo, unit = _split(axis.range.start, f"{where}.range.from")
        hi, unit_hi = _split(axis.range.to, f"{where}.range.to")
        step, unit_st = _split(axis.range.step, f"{where}.range.step")
        if {unit_hi, unit_st} != {unit}:
            raise ConfigError([f"{where}.range: from, to and step must have the same unit "
                               f"(got {unit!r}, {unit_hi!r}, {unit_st!r})"])
        if step <= 0 or hi < lo:
            raise ConfigError([f"{where}.range: empty axis (need step > 0 and to >= from)"])
        count = int((hi - lo) / step + 1e-9) + 1
        if count > 100_000:
            raise ConfigError([f"{where}.range: {count} values; at most 100000"])
        return [_join(lo + i * step, unit) for i in range(count)]
    assert axis.random is not None
    lo, unit = _split(axis.random.low, f"{where}.random.low")
    hi, unit_hi = _split(axis.random.high, f"{where}.random.high")
    if unit_hi != unit or hi < lo:
        raise ConfigError([f"{where}.random: low and high need one unit and high >= low"])
    rng = random.Random(axis.random.seed)
    return [_join(rng.uniform(lo, hi), unit) for _ in range(axis.random.samples)]


def _set(doc: dict[str, Any], path: str, value: Any, where: str) -> None:
    """Set a dotted ``path`` in a scenario document (see the module docstring)."""
    parts = path.split(".")
    if parts[0] == "faults":
        if len(parts) != 3:
            raise ConfigError([f"{where}: '{path}': a fault axis is faults.<id>.<field>"])
        faults = doc.get("faults") or []
        ids = [f.get("id") for f in faults if isinstance(f, dict)]
        if parts[1] not in ids:
            raise ConfigError([f"{where}: '{path}': no fault '{parts[1]}' in the base "
                               f"scenario (known: {', '.join(map(str, ids)) or 'none'})"])
        faults[ids.index(parts[1])][parts[2]] = value
        return
    if parts[0] == "site":
        parts = ["site_overrides", *parts[1:]]
        if len(parts) < 2:
            raise ConfigError([f"{where}: '{path}': a site axis is site.<path>"])
    node = doc
    for key in parts[:-1]:
        nxt = node.setdefault(key, {})
        if not isinstance(nxt, dict):
            raise ConfigError([f"{where}: '{path}': '{key}' is not a mapping"])
        node = nxt
    node[parts[-1]] = value


def _base(name: str, campaign_dir: Path, where: str) -> dict[str, Any]:
    path = Path(name)
    if not path.is_absolute() and (campaign_dir / path).is_file():
        path = campaign_dir / path
    try:
        path = scenario_path(path if path.is_file() else name)
    except ConfigError as exc:
        raise ConfigError([f"{where}: {p}" for p in exc.problems]) from None
    data = load_yaml(path).data
    if not isinstance(data, dict):
        raise ConfigError([f"{where}: {path} is not a scenario mapping"])
    if data.get("include"):
        raise ConfigError([f"{where}: {path}: a campaign base scenario may not use include"])
    return data


def load_campaign(path: str | Path, *, max_jobs: int | None = None) -> LoadedCampaign:
    """Load and validate a campaign file and expand its matrix; raises `ConfigError`."""
    path = Path(path)
    loaded = load_yaml(path)
    if not isinstance(loaded.data, dict):
        raise ConfigError([f"{path}:1: expected a mapping of campaign keys"])
    camp = validate_data(loaded.data, Campaign, source=str(path), locate=loaded.locate)
    bases = {s: _base(s, path.parent, loaded.where(("scenarios", i)) + f" scenarios[{i}]")
             for i, s in enumerate(camp.scenarios)}
    values = [axis_values(a, f"{loaded.where(('axes', i))}: axes[{i}]")
              for i, a in enumerate(camp.axes)]
    size = len(bases) * len(camp.seeds) * len(camp.sut)
    for v in values:
        size *= len(v)
    limit = max_jobs if max_jobs is not None else camp.max_jobs
    if size > limit:
        raise ConfigError([f"{loaded.where(('axes',))}: axes: the matrix has {size} jobs, "
                           f"more than max_jobs {limit}"])
    cells: list[Cell] = []
    for (name, base), combo, seed, sut in itertools.product(
            bases.items(), itertools.product(*values), camp.seeds, camp.sut):
        doc = copy.deepcopy(base)
        params: dict[str, Any] = {}
        for i, (axis, value) in enumerate(zip(camp.axes, combo, strict=True)):
            _set(doc, axis.path, value, f"{loaded.where(('axes', i))}: axes[{i}].path")
            params[axis.path] = value
        doc["seed"] = seed
        if camp.speed is not None:
            doc["speed"] = camp.speed
        doc_sut = dict(doc.get("sut") or {})
        ctl = doc_sut.get("controller", "none") if sut.controller == "base" else sut.controller
        det = (doc_sut.get("leak_detector", "none") if sut.leak_detector == "base"
               else sut.leak_detector)
        doc_sut.update(controller=ctl, leak_detector=det)
        doc["sut"] = doc_sut
        key = f"{len(cells):05d}"
        cells.append(Cell(key, name, params, seed, ctl, det, doc))
    return LoadedCampaign(path, camp, bases, cells)


def estimate_s(cells: list[Cell], workers: int = 1, startup_s: float = 6.0) -> float:
    """Wall seconds for ``cells`` on ``workers``: simulated duration / speed plus start-up."""
    total = sum(c.duration_s / c.speed + startup_s for c in cells)
    return total / max(1, workers)
