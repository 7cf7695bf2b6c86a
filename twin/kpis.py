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
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

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
                if f.name != "hp_running_s"}


def kpis(m: Meters, emissions_electricity: float, emissions_fuel: float,
         boiler_efficiency: float) -> dict[str, float]:
    """Run KPIs from the meters; energies in kWh, ratios dimensionless, CO2 in kg."""
    it = m.it
    facility = m.facility
    reused = m.evaporators
    cop = m.condensers / m.compressors if m.compressors > 0 else 0.0
    carnot = m.carnot_weighted / m.compressors if m.compressors > 0 else 0.0
    avoided_fuel = m.condensers / boiler_efficiency
    co2 = (avoided_fuel * emissions_fuel - m.compressors * emissions_electricity) / J_PER_KWH
    return {
        "pue": facility / it if it > 0 else 0.0,
        "erf": reused / facility if facility > 0 else 0.0,
        "ere": (facility - reused) / it if it > 0 else 0.0,
        "cop": cop,
        "carnot_cop": carnot,
        "heat_recovered_kwh": m.condensers / J_PER_KWH,
        "heat_reused_kwh": reused / J_PER_KWH,
        "heat_rejected_kwh": m.rejected / J_PER_KWH,
        "heat_delivered_kwh": m.delivered / J_PER_KWH,
        "demand_kwh": m.demand / J_PER_KWH,
        "unmet_demand_kwh": m.unmet / J_PER_KWH,
        "boiler_heat_kwh": m.boiler_heat / J_PER_KWH,
        "it_energy_kwh": it / J_PER_KWH,
        "facility_energy_kwh": facility / J_PER_KWH,
        "compressor_energy_kwh": m.compressors / J_PER_KWH,
        "co2_avoided_kg": co2,
        "air_outside_recommended_h": m.air_outside_s / 3600.0,
        "water_outside_class_h": m.water_outside_s / 3600.0,
    }
