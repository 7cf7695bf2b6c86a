"""Scenario files: a site, what happens when (faults) and what must then be seen (expect).

Loading is safe (`rig.config.yamlsafe`: plain YAML only, size and alias expansion bounded);
``include:`` files are fragments with more ``faults:`` and ``expect:`` entries and must
stay inside the scenario's folder; ``site:`` names a shipped site or a site file next to
the scenario. Every problem is reported as ``FILE:LINE: field.path: what is allowed``.
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rig.assess.expect import Expectation
from rig.assess.faults import CATALOG, FaultContext, FaultSpec
from rig.build import build_plan
from rig.config import shipped
from rig.config.defaults import (
    DEFAULT_SEED,
    DEFAULT_SITE,
    DEFAULT_START,
    LIVE_RECORD_PERIOD_S,
    SCENARIO_SPEED,
    WATCHDOG_FALLBACK,
    WATCHDOG_TIMEOUT_S,
)
from rig.config.loader import validate_data
from rig.config.sites import site_names, site_path
from rig.config.yamlsafe import LoadedYaml, load_yaml, resolve_include
from rig.sut import CONTROLLER_VARIANTS, LEAK_DETECTOR_VARIANTS
from twin.errors import ConfigError, ScenarioError
from twin.faults import FaultTargetError
from twin.site import Site, SutSequence
from twin.units import Duration

MAX_SCENARIO_BYTES = 256 * 1024
MAX_INCLUDES = 16
PROTOCOL_TARGETS = ("modbus", "mqtt")


class SystemsUnderTest(BaseModel):
    """Reference systems the rig starts for a scenario (each a separate process), and the
    supervisory sequences that are theirs alone (``owns``: the twin's own control of each
    is off, see docs/expectations.md)."""

    model_config = ConfigDict(extra="forbid")
    controller: Literal[(*CONTROLLER_VARIANTS, "none")] = "none"  # type: ignore[valid-type]
    leak_detector: Literal[(*LEAK_DETECTOR_VARIANTS, "none")] = "none"  # type: ignore[valid-type]
    owns: list[SutSequence] = Field(default_factory=list, max_length=16)


class WatchdogSpec(BaseModel):
    """Communication-loss watchdog of every controlled device (simulated seconds)."""

    model_config = ConfigDict(extra="forbid")
    timeout: Duration = Field(WATCHDOG_TIMEOUT_S, gt=0, le=86_400)
    fallback: Literal["hold", "safe"] = WATCHDOG_FALLBACK


class Scenario(BaseModel):
    """A scenario file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    description: str = ""
    site: str = Field(DEFAULT_SITE, pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    site_overrides: dict[str, Any] = Field(default_factory=dict)
    weather: dict[str, Any] = Field(default_factory=dict)
    it_load: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(DEFAULT_SEED, ge=0, le=2**32 - 1)
    start: datetime = DEFAULT_START
    duration: Duration = Field(gt=0, le=30 * 86400)
    speed: Annotated[float, Field(gt=0, le=10000)] = SCENARIO_SPEED
    record_period: Duration = Field(LIVE_RECORD_PERIOD_S, gt=0, le=600)
    include: list[str] = Field(default_factory=list, max_length=MAX_INCLUDES)
    faults: list[FaultSpec] = Field(default_factory=list, max_length=200)
    expect: list[Expectation] = Field(default_factory=list, max_length=500)
    sut: SystemsUnderTest = SystemsUnderTest()
    watchdog: WatchdogSpec = WatchdogSpec()


class LoadedScenario:
    """A validated scenario and the site it runs on."""

    def __init__(self, path: Path, scenario: Scenario, site: Site) -> None:
        self.path = path
        self.scenario = scenario
        self.site = site


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _with_includes(loaded: LoadedYaml, path: Path) -> dict[str, Any]:
    data = loaded.data
    if not isinstance(data, dict):
        raise ConfigError([f"{loaded.where(())}: expected a mapping of scenario keys"])
    includes = data.get("include") or []
    if not isinstance(includes, list):
        raise ConfigError([f"{loaded.where(('include',))}: include: expected a list of files"])
    merged = dict(data)
    for i, rel in enumerate(includes[:MAX_INCLUDES]):
        where = loaded.where(("include", i))
        if not isinstance(rel, str):
            raise ConfigError([f"{where}: include[{i}]: expected a file name"])
        target = resolve_include(path.parent, rel, where=f"{where}: include[{i}]")
        fragment = load_yaml(target, max_bytes=MAX_SCENARIO_BYTES).data or {}
        if not isinstance(fragment, dict) or set(fragment) - {"faults", "expect"}:
            raise ConfigError([f"{where}: include[{i}]: {rel} may only hold 'faults' and "
                               "'expect' lists"])
        for key in ("faults", "expect"):
            items = fragment.get(key) or []
            if not isinstance(items, list):
                raise ConfigError([f"{target}:1: {key}: expected a list"])
            merged[key] = list(merged.get(key) or []) + items
    return merged


def load_scenario(path: str | Path) -> LoadedScenario:
    """Load, validate and cross-check a scenario file; raises `ScenarioError`."""
    path = scenario_path(path)
    try:
        loaded = load_yaml(path, max_bytes=MAX_SCENARIO_BYTES)
        data = _with_includes(loaded, path)
        scenario = validate_data(data, Scenario, source=str(path), locate=loaded.locate)
        site = _site_for(scenario, loaded, path)
        _cross_check(scenario, site, loaded)
    except ScenarioError:
        raise
    except ConfigError as exc:  # YAML, include, site and cross-check problems alike
        raise ScenarioError(exc.problems) from None
    return LoadedScenario(path, scenario, site)


def scenario_path(name_or_path: str | Path) -> Path:
    """A scenario file from a path, or from the name of a shipped example (``cdu-leak``)."""
    return shipped.resolve(name_or_path, "scenarios")


def _site_for(scenario: Scenario, loaded: LoadedYaml, path: Path) -> Site:
    """The scenario's site: a shipped site by name, or a site file next to the scenario."""
    try:
        site_file = site_path(scenario.site, near=path.parent)
    except ConfigError:
        known = ", ".join(site_names())
        raise ConfigError([f"{loaded.where(('site',))}: site: no site named "
                           f"'{scenario.site}' (not a site file next to the scenario; "
                           f"known sites: {known})"]) from None
    site_data = load_yaml(site_file).data
    overrides = _merge(scenario.site_overrides, {
        k: v for k, v in (("weather", scenario.weather), ("it_load", scenario.it_load)) if v})
    if scenario.sut.owns:  # the twin leaves these sequences to the SUT (in the manifest)
        overrides["sut_owns"] = sorted(set(scenario.sut.owns))

    def locate(field_path: tuple[str | int, ...]) -> tuple[int, int]:
        head = field_path[:1]
        key = "site_overrides"
        if head and head[0] in ("weather", "it_load") and getattr(scenario, str(head[0])):
            return loaded.locate(field_path)
        return loaded.locate((key, *field_path))

    return validate_data(_merge(site_data, overrides), Site,
                         source=str(path), locate=locate)


def _cross_check(scenario: Scenario, site: Site, loaded: LoadedYaml) -> None:
    problems: list[str] = []
    twin = build_plan(site, seed=scenario.seed, start=scenario.start).twin  # the live table
    ctx = FaultContext(twin)
    ids: set[str] = set()
    for i, fault in enumerate(scenario.faults):
        where = loaded.where(("faults", i))
        if fault.id in ids:
            problems.append(f"{where}: faults[{i}].id: duplicate fault id '{fault.id}'")
        ids.add(fault.id)
        if fault.at >= scenario.duration:
            problems.append(f"{loaded.where(('faults', i, 'at'))}: faults[{i}].at: onset "
                            f"{fault.at:g} s is not before the end of the run "
                            f"({scenario.duration:g} s)")
        kind = CATALOG[fault.kind]
        if kind.category == "protocol":
            devices = twin.points.devices()
            if fault.target not in (*PROTOCOL_TARGETS, *devices):
                problems.append(f"{loaded.where(('faults', i, 'target'))}: faults[{i}].target:"
                                f" '{fault.target}' is not modbus, mqtt or a device")
            continue
        params = {name: getattr(fault, name) for name in kind.params}
        try:
            kind.apply(ctx, fault.target, **params)
        except FaultTargetError as exc:
            problems.append(f"{loaded.where(('faults', i, 'target'))}: faults[{i}].target: "
                            f"{exc} ({kind.name} targets {kind.target})")
    names: set[str] = set()
    for i, exp in enumerate(scenario.expect):
        where = loaded.where(("expect", i))
        if exp.name in names:
            problems.append(f"{where}: expect[{i}].name: duplicate name '{exp.name}'")
        names.add(exp.name)
        anchor = getattr(exp, "after", "start")
        if anchor not in ("start", *ids):
            problems.append(f"{loaded.where(('expect', i, 'after'))}: expect[{i}].after: "
                            f"no fault '{anchor}' (known: start, {', '.join(sorted(ids))})")
        for path in (("point",), ("first", "point"), ("then", "point")):
            point: Any = exp
            for key in path:
                point = getattr(point, key, None)
            if isinstance(point, str) and point not in twin.points:
                field = ".".join(path)
                problems.append(f"{loaded.where(('expect', i, *path))}: expect[{i}].{field}: "
                                f"no such point '{point}' (see 'heatrig points {site.name}')")
    if problems:
        raise ConfigError(sorted(problems))
