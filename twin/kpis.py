"""Energy meters, KPIs and the site energy balance.

Boundaries: the data center is racks, CDUs, facility pumps, air cooling and dry coolers.
The heat pumps belong to the heat-recovery plant; the energy reuse hand-over point is
their evaporators, so reused energy = heat taken by the evaporators. Then
PUE = facility / IT (ISO/IEC 30134-2), ERF = reused / facility (ISO/IEC 30134-6) and
ERE = (facility - reused) / IT.

The balance covers every water and air node of the site, the heat pumps and the district
side: inputs are electricity that ends as heat in water or air, boiler heat, make-up
water and the network's return water; outputs are heat to outdoor air, pipe and tank
losses, leaked water and the network's supply water.

`REGISTRY` is the one list of KPIs: name, unit, label, description, how each is computed
and where it is shown. Everything that names, computes or shows a KPI reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

J_PER_KWH = 3.6e6

# ASHRAE TC9.9: recommended inlet air band and the facility-water class supply limits (degC)
ASHRAE_RECOMMENDED_AIR = (18.0, 27.0)
WATER_CLASS_LIMIT = {"W17": 17.0, "W27": 27.0, "W32": 32.0, "W40": 40.0, "W45": 45.0}


@dataclass(slots=True)
class Meters:
    """Energies in J integrated over the run, and times in s."""

    it: float = 0.0
    cdu_pumps: float = 0.0
    facility_pumps: float = 0.0
    chiller: float = 0.0
    crah_fans: float = 0.0
    dry_cooler_fans: float = 0.0
    compressors: float = 0.0
    boiler_fuel: float = 0.0
    boiler_heat: float = 0.0
    evaporators: float = 0.0
    condensers: float = 0.0
    rejected: float = 0.0
    pipe_losses: float = 0.0
    tank_losses: float = 0.0
    delivered: float = 0.0
    demand: float = 0.0
    unmet: float = 0.0
    leaked: float = 0.0
    makeup: float = 0.0
    carnot_weighted: float = 0.0  # integral of Carnot COP * compressor power (J)
    time: float = 0.0
    air_outside_s: float = 0.0
    water_outside_s: float = 0.0
    hp_running_s: list[float] = field(default_factory=list)
    compressors_by_hour: list[float] = field(default_factory=lambda: [0.0] * 24)  # J, by
    # hour of day 0-23 (prices an hourly electricity tariff, `twin.economics`)

    @property
    def facility(self) -> float:
        """Data-center energy (J): IT and its cooling."""
        return (self.it + self.cdu_pumps + self.facility_pumps + self.chiller + self.crah_fans
                + self.dry_cooler_fans)

    def inputs(self) -> float:
        """Energy entering the balance boundary as heat (J), network return excluded."""
        return (self.it + self.cdu_pumps + self.facility_pumps + self.chiller + self.crah_fans
                + self.compressors + self.boiler_heat + self.makeup)

    def outputs(self) -> float:
        """Energy leaving the balance boundary (J), network heat as delivered."""
        return (self.rejected + self.pipe_losses + self.tank_losses + self.delivered
                + self.leaked)

    def as_dict(self) -> dict[str, float]:
        """All meters, energies in J."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("hp_running_s", "compressors_by_hour")}


@dataclass(frozen=True, slots=True)
class Factors:
    """What turns meters into emissions: kg CO2 per kWh of electricity and of boiler fuel,
    and the boiler efficiency (-) that sets the fuel the recovered heat replaces."""

    emissions_electricity: float
    emissions_fuel: float
    boiler_efficiency: float


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def _co2_avoided(m: Meters, f: Factors) -> float:
    avoided_fuel = m.condensers / f.boiler_efficiency
    return (avoided_fuel * f.emissions_fuel - m.compressors * f.emissions_electricity) / J_PER_KWH


@dataclass(frozen=True, slots=True)
class KpiSpec:
    """One KPI: its name, unit, the words that show it, how it is computed, where it shows.

    ``unit`` is what the value is in ("1" for a ratio); ``label`` names it in tables (the
    CLI's KPI table, the report); ``title`` is the short name of a dashboard stat;
    ``compute(meters, factors)`` gives the value in ``unit``; ``summary``, ``report`` and
    ``dashboard`` say whether the CLI's KPI table, the HTML report and the dashboards'
    KPI tables show it.
    """

    name: str
    unit: str
    label: str
    title: str
    description: str
    compute: Callable[[Meters, Factors], float]
    summary: bool = True
    report: bool = True
    dashboard: bool = True


def _energy(meter: str) -> Callable[[Meters, Factors], float]:
    """A KPI that is one meter (J) in kWh."""
    return lambda m, f: float(getattr(m, meter)) / J_PER_KWH


def _hours(meter: str) -> Callable[[Meters, Factors], float]:
    """A KPI that is one timer (s) in h."""
    return lambda m, f: float(getattr(m, meter)) / 3600.0


_SPECS = (
    KpiSpec("pue", "1", "PUE", "PUE",
            "power usage effectiveness: data-center energy over IT energy (ISO/IEC 30134-2)",
            lambda m, f: _ratio(m.facility, m.it)),
    KpiSpec("erf", "1", "ERF", "ERF",
            "energy reuse factor: heat taken by the heat-pump evaporators over data-center "
            "energy (ISO/IEC 30134-6)", lambda m, f: _ratio(m.evaporators, m.facility)),
    KpiSpec("ere", "1", "ERE", "ERE",
            "energy reuse effectiveness: data-center energy less the reused heat, over IT "
            "energy", lambda m, f: _ratio(m.facility - m.evaporators, m.it)),
    KpiSpec("cop", "1", "heat-pump COP (run)", "COP (run)",
            "coefficient of performance of the heat pumps over the run: condenser heat over "
            "compressor energy", lambda m, f: _ratio(m.condensers, m.compressors)),
    KpiSpec("carnot_cop", "1", "Carnot COP (run, weighted)", "Carnot COP (run)",
            "Carnot COP of the heat pumps' temperature lift, weighted by compressor power "
            "over the run", lambda m, f: _ratio(m.carnot_weighted, m.compressors)),
    KpiSpec("heat_recovered_kwh", "kWh", "heat recovered (condensers)", "Heat recovered",
            "heat the heat-pump condensers gave to the district side", _energy("condensers")),
    KpiSpec("heat_reused_kwh", "kWh", "heat reused (evaporators)", "Heat reused",
            "data-center heat taken by the heat-pump evaporators (the reuse hand-over point)",
            _energy("evaporators")),
    KpiSpec("heat_rejected_kwh", "kWh", "heat rejected (dry coolers)", "Heat rejected",
            "heat the dry coolers rejected to outdoor air", _energy("rejected")),
    KpiSpec("heat_delivered_kwh", "kWh", "heat delivered to the network", "Heat delivered",
            "heat delivered to the district-heating network", _energy("delivered")),
    KpiSpec("demand_kwh", "kWh", "district demand", "District demand",
            "heat the district-heating network asked for", _energy("demand")),
    KpiSpec("unmet_demand_kwh", "kWh", "unmet district demand", "Unmet demand",
            "district demand that was not delivered", _energy("unmet")),
    KpiSpec("boiler_heat_kwh", "kWh", "heat from the peak boiler", "Boiler heat",
            "heat the peak boiler gave to the network", _energy("boiler_heat")),
    KpiSpec("it_energy_kwh", "kWh", "IT energy", "IT energy",
            "electrical energy of the IT load (racks)", _energy("it")),
    KpiSpec("facility_energy_kwh", "kWh", "data-center energy (IT and cooling)",
            "Data-center energy",
            "data-center energy: IT, CDU and facility pumps, chiller, CRAH fans and dry-cooler "
            "fans", _energy("facility")),
    KpiSpec("compressor_energy_kwh", "kWh", "heat-pump compressor energy", "Compressor energy",
            "electrical energy of the heat-pump compressors", _energy("compressors")),
    KpiSpec("co2_avoided_kg", "kg", "CO2 avoided", "CO2 avoided",
            "CO2 of the boiler fuel the recovered heat replaces, less that of the "
            "compressors' electricity", _co2_avoided),
    KpiSpec("air_outside_recommended_h", "h", "air inlet outside ASHRAE recommended",
            "Air outside ASHRAE",
            "time the rack inlet air was outside the ASHRAE recommended band "
            f"({ASHRAE_RECOMMENDED_AIR[0]:g}-{ASHRAE_RECOMMENDED_AIR[1]:g} degC)",
            _hours("air_outside_s")),
    KpiSpec("water_outside_class_h", "h", "facility water above its W class",
            "Water above W class",
            "time the facility water into the CDUs was above the supply limit of its ASHRAE "
            "W class", _hours("water_outside_s")),
)

_BY_NAME: dict[str, KpiSpec] = {k.name: k for k in _SPECS}
REGISTRY: Mapping[str, KpiSpec] = MappingProxyType(_BY_NAME)
"""Every KPI of the twin by name, in the order tables show them (read-only)."""


class Kpis(Mapping[str, float]):
    """KPI values by name (units as in `REGISTRY`), in registry order; read-only."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, float]) -> None:
        unknown = [k for k in values if k not in REGISTRY]
        if unknown:
            raise KeyError(f"not a KPI: {', '.join(map(repr, unknown))}")
        self._values = {k: float(values[k]) for k in REGISTRY if k in values}

    def __getitem__(self, name: str) -> float:
        return self._values[name]

    @classmethod
    def _computed(cls, values: dict[str, float]) -> Kpis:
        """Values computed from `REGISTRY` itself (its names, its order): not re-checked."""
        out = cls.__new__(cls)
        out._values = values
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Kpis({self._values!r})"

    def as_dict(self) -> dict[str, float]:
        """The values as a plain dict (what ``summary.json`` and the run store hold)."""
        return dict(self._values)


def kpis(m: Meters, emissions_electricity: float, emissions_fuel: float,
         boiler_efficiency: float) -> Kpis:
    """Every KPI of `REGISTRY` from the meters, each in its registry unit."""
    f = Factors(emissions_electricity, emissions_fuel, boiler_efficiency)
    return Kpis._computed({k.name: k.compute(m, f) for k in REGISTRY.values()})


def kpi(name: str, m: Meters, factors: Factors) -> float:
    """One KPI of `REGISTRY` from the meters, in its registry unit."""
    return REGISTRY[name].compute(m, factors)
