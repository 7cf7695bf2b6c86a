"""The business case: every figure against a hand calculation, the site block's validation,
the sensitivity study and the figures in the run summary."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from rig.present.summary import build_summary, economics_table
from twin.economics import REGISTRY, SENSITIVITY_FACTORS, business_case, irr, npv
from twin.kpis import J_PER_KWH, Meters
from twin.plant import Twin
from twin.site import Economics, Site

HOURS = 8760.0
MWH = 1e3 * J_PER_KWH


def made_up_case() -> tuple[Meters, Site]:
    """1 MWh/h of heat sold for 8760 h at a COP of 4, fixed prices."""
    m = Meters(it=8760 * MWH, condensers=8760 * MWH, compressors=2190 * MWH,
               evaporators=6570 * MWH, rejected=1000 * MWH, dry_cooler_fans=20 * MWH,
               time=HOURS * 3600.0)
    m.compressors_by_hour = [m.compressors / 24] * 24
    site = Site(name="made-up", economics=Economics(
        electricity_price=0.1, heat_price=50.0, fuel_price=30.0, capex_per_kw=800.0,
        heating_capacity=1.2e6, installation_factor=1.5, maintenance=0.02,
        discount_rate=0.05, lifetime=20, carbon_price=100.0, heat_demand_per_home=12.0,
        renewable_share=0.4, erf_minimum=0.1),
        emissions={"electricity": 0.4, "fuel": 0.2}, district={"boiler": {"efficiency": 0.9}})
    return m, site


def test_every_figure_follows_a_hand_calculation() -> None:
    m, site = made_up_case()
    v = business_case(m, site).values
    assert list(v) == list(REGISTRY)
    heat = 8760.0  # MWh/a
    fuel = heat / 0.9
    cooling = 6570.0
    cooling_el = cooling * 20.0 / 1000.0  # the run's fan energy per heat rejected
    comp = 2190.0
    co2 = fuel * 0.2 + (cooling_el - comp) * 0.4
    capex = 800.0 * 1200.0 * 1.5
    maintenance = 0.02 * capex
    revenue = heat * 50.0 + cooling_el * 100.0 + co2 * 100.0
    el_cost = comp * 100.0
    margin = revenue - el_cost - maintenance
    disc = sum(1.05 ** -y for y in range(1, 21))
    expected = {
        "heat_sold_mwh_per_year": heat, "fuel_displaced_mwh_per_year": fuel,
        "avoided_cooling_mwh_per_year": cooling,
        "avoided_cooling_electricity_mwh_per_year": cooling_el,
        "compressor_electricity_mwh_per_year": comp, "co2_avoided_t_per_year": co2,
        "homes_served": heat / 12.0, "heating_capacity_kw": 1200.0, "capex": capex,
        "revenue_per_year": revenue, "electricity_cost_per_year": el_cost,
        "maintenance_per_year": maintenance, "fuel_value_displaced_per_year": fuel * 30.0,
        "operating_margin_per_year": margin, "simple_payback_years": capex / margin,
        "npv": -capex + margin * disc,
        "lcoh_per_mwh": (capex + (el_cost + maintenance) * disc) / (heat * disc),
        # data-center energy = IT + dry-cooler fans
        "pue": 8780.0 / 8760.0, "erf": 6570.0 / 8780.0, "ref": 0.4, "erf_minimum": 0.1,
        "erf_meets_minimum": 1.0,
    }
    for name, value in expected.items():
        assert v[name] == pytest.approx(value, rel=1e-12), name
    # the IRR is where the NPV, summed year by year, is zero
    rate = v["irr"]
    assert 0.05 < rate < 1.0
    assert sum(margin * (1 + rate) ** -y for y in range(1, 21)) == pytest.approx(capex,
                                                                                 rel=1e-8)


def test_a_short_run_is_annualised_and_an_hourly_tariff_weights_compressor_energy() -> None:
    m, site = made_up_case()
    year = business_case(m, site).values
    day = Meters(**{k: v / 365.0 for k, v in m.as_dict().items()})
    day.compressors_by_hour = [0.0] * 24
    day.compressors_by_hour[3] = day.compressors  # all at night
    flat = business_case(day, site).values
    assert flat["heat_sold_mwh_per_year"] == pytest.approx(year["heat_sold_mwh_per_year"])
    profile = [0.2] * 24
    profile[3] = 0.05
    tariff = site.model_copy(update={"economics": site.economics.model_copy(
        update={"electricity_price_profile": profile})})
    night = business_case(day, tariff).values
    assert night["electricity_cost_per_year"] == pytest.approx(
        flat["electricity_cost_per_year"] * 0.05 / 0.1)


def test_payback_sensitivity_moves_the_right_way() -> None:
    m, site = made_up_case()
    case = business_case(m, site)
    base = case.values["simple_payback_years"]
    for name, rows in case.sensitivity.items():
        assert [f for f, _ in rows] == list(SENSITIVITY_FACTORS)
        assert dict(rows)[1.0] == pytest.approx(base), name
    paybacks = {k: [p for _, p in rows] for k, rows in case.sensitivity.items()}
    assert paybacks["heat_price"] == sorted(paybacks["heat_price"], reverse=True)
    assert paybacks["electricity_price"] == sorted(paybacks["electricity_price"])
    # maintenance is a fraction of the capex, so it scales with it too
    v = case.values
    before_maintenance = v["operating_margin_per_year"] + v["maintenance_per_year"]
    assert paybacks["capex"] == pytest.approx(
        [v["capex"] * f / (before_maintenance - v["maintenance_per_year"] * f)
         for f in SENSITIVITY_FACTORS])


def test_npv_and_irr_agree_and_a_losing_case_has_no_irr() -> None:
    assert npv(0.0, 100.0, 10.0, 20) == pytest.approx(100.0)
    assert irr(100.0, 10.0, 20) == pytest.approx(0.07754, abs=1e-5)  # annuity tables
    assert abs(npv(irr(100.0, 10.0, 20) or 0.0, 100.0, 10.0, 20)) < 1e-6
    assert irr(100.0, -1.0, 20) is None
    m, site = made_up_case()
    losing = site.model_copy(update={"economics": site.economics.model_copy(
        update={"heat_price": 0.0, "carbon_price": 0.0})})
    v = business_case(m, losing).values
    assert v["operating_margin_per_year"] < 0
    assert v["simple_payback_years"] == math.inf and math.isnan(v["irr"])
    assert business_case(m, losing).as_dict()["figures"]["irr"] is None  # JSON has no NaN


@pytest.mark.parametrize("field", ["electricity_price", "heat_price", "fuel_price",
                                   "capex_per_kw", "carbon_price"])
@pytest.mark.parametrize("value", [-1.0, None])
def test_negative_or_missing_prices_are_refused_naming_the_field(field: str,
                                                                 value: float | None) -> None:
    with pytest.raises(ValidationError) as info:
        Site(name="x", economics={field: value})
    assert f"economics.{field}" in str(info.value).replace("\n", ".")


def test_the_run_summary_carries_and_prints_the_economics() -> None:
    twin = Twin(Site(name="reference-1mw"))
    twin.run_until(600.0)
    summary = build_summary(twin, wall_s=1.0, mode="offline", run_dir=".")
    data = summary.as_dict()["economics"]
    assert data["currency"] == "USD"
    assert set(data["figures"]) == set(REGISTRY)
    assert data["figures"]["heat_sold_mwh_per_year"] == pytest.approx(
        twin.meters.condensers / MWH * 365 * 86400 / twin.meters.time)
    assert twin.meters.time == pytest.approx(600.0, abs=1.0)
    assert data["units"]["capex"] == "USD"
    assert set(data["sensitivity"]) == {"heat_price", "electricity_price", "capex"}
    table = economics_table(summary)
    for spec in REGISTRY.values():
        assert spec.label in table


def test_the_report_section_shows_every_figure_and_a_payback_chart() -> None:
    import re
    import xml.etree.ElementTree as ET

    from rig.present.report import economics_section

    m, site = made_up_case()
    case = business_case(m, site)
    page = "\n".join(economics_section(case, 20.0))
    for name in REGISTRY:
        assert f"<code>{name}</code>" in page
    svg = re.search(r"<svg.*?</svg>", page, re.DOTALL)
    assert svg is not None
    root = ET.fromstring(svg.group(0))  # well-formed, self-contained
    lines = [p for p in root.iter("{http://www.w3.org/2000/svg}path")]
    assert len(lines) == 3
    for p in lines:  # one vertex per sensitivity factor
        assert p.get("d", "").count("L") == len(SENSITIVITY_FACTORS) - 1
    assert "heat price" in page and "capital cost" in page
    assert "No economics" in "\n".join(economics_section(None))
