"""The business case of a run: heat sold, avoided cooling, CO2, homes, margin, payback, NPV,
IRR and levelised cost of heat (pure, no I/O).

Every figure is annualised from the run: energies metered over the run's simulated time are
scaled to a year of 365 days (``annual = run * 365 d / run time``), so a 2-day run and a
year-long run give comparable figures. Definitions (all energies from `twin.kpis.Meters`):

- heat sold: heat the heat-pump condensers gave to the district side (the sale meter sits
  at the heat-pump outlet), MWh/a;
- boiler fuel displaced: heat sold / boiler efficiency (fuel the peak boiler would have
  burnt for the same heat), MWh of fuel per year;
- avoided cooling: heat the heat-pump evaporators took from the facility water, which the
  dry coolers would otherwise have had to reject (MWh of heat per year); its electricity is
  that heat times the run's dry-cooler fan energy per unit of heat rejected (when the run
  rejected nothing: ``Economics.rejection_electricity``), MWh/a;
- CO2 avoided: fuel displaced x fuel CO2 intensity plus avoided cooling electricity x grid
  intensity, less the compressors' electricity x grid intensity (t/a);
- homes served: heat sold per year / annual heat demand per home;
- operating margin: heat sales + avoided cooling electricity at the electricity price +
  CO2 avoided at the carbon price, less the compressors' electricity and maintenance (per a);
- capex: capital cost per kW of heating capacity x capacity x installation factor;
- simple payback = capex / margin (years; infinite when the margin is not positive);
- NPV = -capex + sum over the lifetime of margin / (1 + r)^year;
- IRR: the rate at which NPV is zero, by bisection (bracketed root find) over -99 % to
  1000 %: NPV falls monotonically with the rate for an investment followed by positive
  margins, so a bracket with a sign change holds exactly one root; numpy-financial's IRR
  finds polynomial roots and would add a dependency for one function. None when NPV has
  no sign change in the bracket (a margin that never repays the capex);
- LCOH = (capex + sum of discounted yearly costs) / sum of discounted yearly heat sold
  (currency per MWh), yearly costs being compressor electricity and maintenance.

CO2 intensities come from the site's ``emissions`` block (kg per kWh) and the boiler
efficiency from ``district.boiler`` (the same factors as the ``co2_avoided_kg`` KPI).
`REGISTRY` names each figure with its unit, label and description, like the KPI registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypedDict

from twin.kpis import J_PER_KWH, Meters
from twin.site import Economics, Site

YEAR_S = 365.0 * 86_400.0
J_PER_MWH = 1e3 * J_PER_KWH
SENSITIVITY_FACTORS = (0.5, 0.625, 0.75, 0.875, 1.0, 1.125, 1.25, 1.375, 1.5)
"""Multipliers of the sensitivity study (-50 % to +50 %)."""
SENSITIVITY_PARAMETERS = ("heat_price", "electricity_price", "capex")


@dataclass(frozen=True, slots=True)
class FigureSpec:
    """One economic figure: name, unit (``{cur}`` stands for the currency), label and
    description; ``group`` is ``economics`` for money and energy, ``regulatory`` for the
    figures of EU Delegated Regulation 2024/1364."""

    name: str
    unit: str
    label: str
    description: str
    group: str = "economics"

    def unit_in(self, currency: str) -> str:
        """The unit with the currency filled in."""
        return self.unit.replace("{cur}", currency)


_SPECS = (
    FigureSpec("heat_sold_mwh_per_year", "MWh/a", "heat sold",
               "heat the heat-pump condensers gave to the district side, annualised"),
    FigureSpec("fuel_displaced_mwh_per_year", "MWh/a", "boiler fuel displaced",
               "peak-boiler fuel the heat sold replaces (heat sold / boiler efficiency)"),
    FigureSpec("avoided_cooling_mwh_per_year", "MWh/a", "avoided cooling (heat)",
               "heat the evaporators took that the dry coolers did not have to reject"),
    FigureSpec("avoided_cooling_electricity_mwh_per_year", "MWh/a",
               "avoided cooling electricity",
               "dry-cooler fan electricity the avoided cooling saves"),
    FigureSpec("compressor_electricity_mwh_per_year", "MWh/a", "compressor electricity",
               "electricity of the heat-pump compressors, annualised"),
    FigureSpec("co2_avoided_t_per_year", "t/a", "CO2 avoided",
               "fuel and cooling-electricity CO2 avoided less the compressors' CO2"),
    FigureSpec("homes_served", "1", "homes served",
               "heat sold per year over the annual heat demand of one home"),
    FigureSpec("heating_capacity_kw", "kW", "heating capacity",
               "heat-pump heating capacity the capex is priced on"),
    FigureSpec("capex", "{cur}", "capital cost (installed)",
               "capital cost per kW x heating capacity x installation factor"),
    FigureSpec("revenue_per_year", "{cur}/a", "revenue",
               "heat sales, avoided cooling electricity and CO2 credit"),
    FigureSpec("electricity_cost_per_year", "{cur}/a", "compressor electricity cost",
               "compressor electricity at the electricity price (profile-weighted)"),
    FigureSpec("maintenance_per_year", "{cur}/a", "maintenance", "maintenance per year"),
    FigureSpec("fuel_value_displaced_per_year", "{cur}/a", "value of fuel displaced",
               "the displaced boiler fuel at the fuel price (the heat buyer's saving)"),
    FigureSpec("operating_margin_per_year", "{cur}/a", "operating margin",
               "revenue less compressor electricity and maintenance"),
    FigureSpec("simple_payback_years", "a", "simple payback",
               "capex over the operating margin (infinite when the margin is not positive)"),
    FigureSpec("npv", "{cur}", "net present value",
               "margin discounted over the lifetime, less the capex"),
    FigureSpec("irr", "1", "internal rate of return",
               "discount rate at which the NPV is zero (NaN when there is none)"),
    FigureSpec("lcoh_per_mwh", "{cur}/MWh", "levelised cost of heat",
               "discounted capex and yearly costs over discounted heat sold"),
    FigureSpec("pue", "1", "PUE", "power usage effectiveness (ISO/IEC 30134-2)",
               "regulatory"),
    FigureSpec("erf", "1", "ERF", "energy reuse factor (ISO/IEC 30134-6)", "regulatory"),
    FigureSpec("ref", "1", "REF",
               "renewable energy factor: renewable share of the data-center energy "
               "(ISO/IEC 30134-3; the site's economics.renewable_share)", "regulatory"),
    FigureSpec("erf_minimum", "1", "ERF minimum", "the configured minimum ERF",
               "regulatory"),
    FigureSpec("erf_meets_minimum", "1", "ERF meets the minimum",
               "1 when the ERF is at least the configured minimum, else 0", "regulatory"),
)
REGISTRY: Mapping[str, FigureSpec] = MappingProxyType({s.name: s for s in _SPECS})
"""Every economic and regulatory figure by name, in table order (read-only)."""


@dataclass(frozen=True, slots=True)
class AnnualEnergy:
    """The annualised energies the business case rests on (kWh/a) and the capacity (W)."""

    heat_sold_kwh: float
    evaporators_kwh: float
    compressors_kwh: float
    rejection_electricity: float  # kWh of fan electricity per kWh of heat rejected (-)
    compressor_price_weight: float  # profile-weighted mean price over the flat price (-)
    heating_capacity_w: float
    erf: float
    pue: float


def annual_energy(m: Meters, econ: Economics, *, peak_heating_w: float = 0.0) -> AnnualEnergy:
    """Annualise the meters of a run (``m.time`` s long). ``peak_heating_w`` is the run's
    peak heat-pump heating power (W), the capacity when ``econ.heating_capacity`` is unset."""
    if m.time <= 0:
        raise ValueError("the run has no simulated time to annualise")
    scale = YEAR_S / m.time
    rejection = (m.dry_cooler_fans / m.rejected if m.rejected > 0
                 else econ.rejection_electricity)
    weight = 1.0
    profile = econ.electricity_price_profile
    if profile is not None and m.compressors > 0 and len(m.compressors_by_hour) == 24:
        mean_price = sum(e * p for e, p in zip(m.compressors_by_hour, profile, strict=True)
                         ) / m.compressors
        weight = mean_price / econ.electricity_price if econ.electricity_price > 0 else 0.0
    capacity = econ.heating_capacity if econ.heating_capacity is not None else peak_heating_w
    facility = m.facility
    return AnnualEnergy(
        heat_sold_kwh=m.condensers / J_PER_KWH * scale,
        evaporators_kwh=m.evaporators / J_PER_KWH * scale,
        compressors_kwh=m.compressors / J_PER_KWH * scale,
        rejection_electricity=rejection, compressor_price_weight=weight,
        heating_capacity_w=capacity,
        erf=m.evaporators / facility if facility > 0 else 0.0,
        pue=facility / m.it if m.it > 0 else 0.0)


def npv(rate: float, capex: float, margin: float, years: int) -> float:
    """Net present value of ``capex`` now and ``margin`` at the end of each of ``years``."""
    if abs(rate) < 1e-12:
        return -capex + margin * years
    return -capex + margin * (1.0 - (1.0 + rate) ** -years) / rate


def irr(capex: float, margin: float, years: int, *, lo: float = -0.99, hi: float = 10.0,
        tol: float = 1e-10) -> float | None:
    """Internal rate of return (-) by bisection on [lo, hi]; None without a sign change."""
    f_lo, f_hi = npv(lo, capex, margin, years), npv(hi, capex, margin, years)
    if f_lo == 0:
        return lo
    if f_lo * f_hi > 0:
        return None
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        f_mid = npv(mid, capex, margin, years)
        if f_lo * f_mid <= 0:
            hi = mid
        else:
            lo, f_lo = mid, f_mid
        if hi - lo < tol:
            break
    return 0.5 * (lo + hi)


def _annuity(rate: float, years: int) -> float:
    """Sum of the discount factors of years 1..years (-)."""
    if abs(rate) < 1e-12:
        return float(years)
    return (1.0 - (1.0 + rate) ** -years) / rate


def figures(a: AnnualEnergy, econ: Economics, *, emissions_electricity: float,
            emissions_fuel: float, boiler_efficiency: float,
            heat_price_factor: float = 1.0, electricity_price_factor: float = 1.0,
            capex_factor: float = 1.0) -> dict[str, float]:
    """Every figure of `REGISTRY` from the annualised energies, in its registry unit.

    Emission factors in kg CO2 per kWh; the factors scale the heat price, the electricity
    price and the capex (sensitivity study).
    """
    heat_mwh = a.heat_sold_kwh / 1e3
    fuel_mwh = heat_mwh / boiler_efficiency
    cooling_mwh = a.evaporators_kwh / 1e3
    cooling_el_mwh = cooling_mwh * a.rejection_electricity
    comp_mwh = a.compressors_kwh / 1e3
    co2_t = (fuel_mwh * emissions_fuel + (cooling_el_mwh - comp_mwh) * emissions_electricity)
    el_price = econ.electricity_price * electricity_price_factor  # per kWh
    capacity_kw = a.heating_capacity_w / 1e3
    capex = econ.capex_per_kw * capacity_kw * econ.installation_factor * capex_factor
    maintenance = (econ.maintenance if econ.maintenance_per_year is None
                   else 0.0) * capex + (econ.maintenance_per_year or 0.0)
    revenue = (heat_mwh * econ.heat_price * heat_price_factor
               + cooling_el_mwh * 1e3 * el_price + co2_t * econ.carbon_price)
    el_cost = comp_mwh * 1e3 * el_price * a.compressor_price_weight
    margin = revenue - el_cost - maintenance
    payback = capex / margin if margin > 0 else math.inf
    years = econ.lifetime
    rate = econ.discount_rate
    rate_of_return = irr(capex, margin, years)
    disc = _annuity(rate, years)
    lcoh = ((capex + (el_cost + maintenance) * disc) / (heat_mwh * disc)
            if heat_mwh > 0 else math.inf)
    return {
        "heat_sold_mwh_per_year": heat_mwh,
        "fuel_displaced_mwh_per_year": fuel_mwh,
        "avoided_cooling_mwh_per_year": cooling_mwh,
        "avoided_cooling_electricity_mwh_per_year": cooling_el_mwh,
        "compressor_electricity_mwh_per_year": comp_mwh,
        "co2_avoided_t_per_year": co2_t,
        "homes_served": heat_mwh / econ.heat_demand_per_home,
        "heating_capacity_kw": capacity_kw,
        "capex": capex,
        "revenue_per_year": revenue,
        "electricity_cost_per_year": el_cost,
        "maintenance_per_year": maintenance,
        "fuel_value_displaced_per_year": fuel_mwh * econ.fuel_price,
        "operating_margin_per_year": margin,
        "simple_payback_years": payback,
        "npv": npv(rate, capex, margin, years),
        "irr": math.nan if rate_of_return is None else rate_of_return,
        "lcoh_per_mwh": lcoh,
        "pue": a.pue,
        "erf": a.erf,
        "ref": econ.renewable_share,
        "erf_minimum": econ.erf_minimum,
        "erf_meets_minimum": 1.0 if a.erf >= econ.erf_minimum else 0.0,
    }


def sensitivity(a: AnnualEnergy, econ: Economics, *, emissions_electricity: float,
                emissions_fuel: float, boiler_efficiency: float,
                factors: tuple[float, ...] = SENSITIVITY_FACTORS,
                ) -> dict[str, list[tuple[float, float]]]:
    """Simple payback (years) against each of heat price, electricity price and capex
    scaled by ``factors`` (the others held): parameter -> [(factor, payback)]."""
    out: dict[str, list[tuple[float, float]]] = {}
    for name in SENSITIVITY_PARAMETERS:
        rows = []
        for f in factors:
            values = figures(a, econ, emissions_electricity=emissions_electricity,
                             emissions_fuel=emissions_fuel,
                             boiler_efficiency=boiler_efficiency,
                             **{f"{name}_factor": f})
            rows.append((f, values["simple_payback_years"]))
        out[name] = rows
    return out


@dataclass(frozen=True, slots=True)
class BusinessCase:
    """The economics of a run: the figures (units of `REGISTRY`), the currency and the
    payback sensitivity (parameter -> [(factor, payback in years)])."""

    currency: str
    values: Mapping[str, float]
    sensitivity: Mapping[str, list[tuple[float, float]]]

    def unit(self, name: str) -> str:
        """The unit of one figure with the currency filled in."""
        return REGISTRY[name].unit_in(self.currency)

    def as_dict(self) -> dict[str, object]:
        """``economics`` of ``summary.json``: non-finite values as None (JSON has none)."""
        def clean(v: float) -> float | None:
            return v if math.isfinite(v) else None
        return {
            "currency": self.currency,
            "figures": {k: clean(v) for k, v in self.values.items()},
            "units": {k: self.unit(k) for k in self.values},
            "sensitivity": {k: [[f, clean(p)] for f, p in rows]
                            for k, rows in self.sensitivity.items()},
        }


class _SiteFactors(TypedDict):
    """The site's figures that `figures` and `sensitivity` take as keywords."""

    emissions_electricity: float  # kg CO2 per kWh
    emissions_fuel: float  # kg CO2 per kWh
    boiler_efficiency: float  # fraction


def business_case(m: Meters, site: Site, *, peak_heating_w: float = 0.0) -> BusinessCase:
    """The economics of a run of ``site`` from its meters (see the module docstring)."""
    econ = site.economics
    a = annual_energy(m, econ, peak_heating_w=peak_heating_w)
    kw: _SiteFactors = {"emissions_electricity": site.emissions.electricity,
                        "emissions_fuel": site.emissions.fuel,
                        "boiler_efficiency": site.district.boiler.efficiency}
    return BusinessCase(econ.currency, figures(a, econ, **kw), sensitivity(a, econ, **kw))
