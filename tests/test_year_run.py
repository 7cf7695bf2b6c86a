"""Coarse physics steps for long studies: a run at the longest allowed step against the same
run at 1 s, the energy balance, the periodic processes and the limit on the step."""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from rig.cli import main
from rig.config.sites import load_site
from twin.plant import Twin
from twin.site import MAX_TIME_STEP_S, Site

HOURS = 3.0


def run(step: float) -> Twin:
    site = load_site("reference-1mw").model_copy(update={"time_step": step})
    twin = Twin(site)
    twin.run_until(HOURS * 3600.0 + 0.5)  # the events at HOURS themselves run too
    return twin


@pytest.fixture(scope="module")
def fine() -> Twin:
    return run(1.0)


@pytest.fixture(scope="module")
def coarse() -> Twin:
    return run(MAX_TIME_STEP_S)


def test_a_coarse_run_matches_the_same_run_at_1_s(fine: Twin, coarse: Twin) -> None:
    f, c = fine.kpis(), coarse.kpis()
    assert f["heat_recovered_kwh"] > 0.5 * f["it_energy_kwh"]  # the heat pumps do work
    assert c["it_energy_kwh"] == pytest.approx(f["it_energy_kwh"], rel=0.01)
    assert c["heat_recovered_kwh"] == pytest.approx(f["heat_recovered_kwh"], rel=0.05)
    assert c["compressor_energy_kwh"] == pytest.approx(f["compressor_energy_kwh"], rel=0.05)
    assert c["erf"] == pytest.approx(f["erf"], rel=0.05)
    assert not [e for e in coarse.events if e.kind in ("trip", "shutdown")]
    fe, ce = fine.business_case().values, coarse.business_case().values
    assert ce["heat_sold_mwh_per_year"] == pytest.approx(fe["heat_sold_mwh_per_year"],
                                                         rel=0.05)


def test_the_energy_balance_of_a_coarse_run_closes(coarse: Twin) -> None:
    assert abs(coarse.energy_balance()["residual_fraction"]) <= 1e-9
    assert coarse.meters.time == pytest.approx(HOURS * 3600.0)


def test_periodic_processes_run_no_faster_than_the_step(coarse: Twin) -> None:
    assert coarse.sensors.sample_number == int(HOURS * 3600.0 / MAX_TIME_STEP_S)
    assert coarse.staging_period == coarse.profile_period == MAX_TIME_STEP_S
    calls: list[float] = []
    coarse.every(1.0, lambda: calls.append(coarse.now))
    coarse.run_until(coarse.now + 10 * MAX_TIME_STEP_S)
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(calls)}
    assert gaps == {MAX_TIME_STEP_S}


def test_a_step_beyond_the_limit_is_refused(capsys: pytest.CaptureFixture[str],
                                            tmp_path: object) -> None:
    with pytest.raises(ValidationError, match="time_step"):
        Site(name="x", time_step=MAX_TIME_STEP_S * 2)
    with pytest.raises(SystemExit) as info:
        main(["sim", "reference-1mw", "--duration", "1h", "--step", "1h", "--quiet",
              "--out", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "heatrig: error: argument --step: must be at most 60 s" in err
    assert len(err.strip().splitlines()) == 1


def test_sim_prints_the_economics_after_the_kpis(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: object) -> None:
    assert main(["sim", "reference-1mw", "--duration", "10 min", "--step", "60s", "--quiet",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.index("PUE") < out.index("economics (annualised from") < out.index(
        "simple payback")
    assert "homes served" in out and "levelised cost of heat" in out
