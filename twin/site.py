"""Typed description of a site: what plant exists and how it is sized.

Every quantity accepts a plain SI number or a string with a unit (``25 kW``, ``35 degC``,
``2 h``); see `twin.units`. Temperatures are degC inside. Unknown keys are rejected.
Defaults are figures from the project's domain notes (DOMAIN.md) or stated engineering
assumptions.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from twin.defaults import DEFAULT_MQTT_PREFIX
from twin.units import (
    Area,
    Displacement,
    Duration,
    EmissionFactor,
    Fraction,
    HeatCapacity,
    Mass,
    MassFlow,
    Power,
    Pressure,
    Speed,
    Temperature,
    TemperatureDelta,
    ThermalConductance,
    Volume,
)

Refrigerant = Literal["R1234ze(E)", "R32", "R410A", "R454B", "R717", "R134a",
                      "R1233zd(E)", "R1336mzz(Z)", "R245fa", "R600", "R601"]
CycleKind = Literal["single", "two_stage", "cascade"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
WaterClass = Literal["W17", "W27", "W32", "W40", "W45"]
SutSequence = Literal["leak_isolation", "heatpump_reset", "heatpump_standby", "standby_pump"]
"""Supervisory sequences a system under test can own (``Site.sut_owns``)."""
Positive = Annotated[int, Field(ge=1)]
MAX_TIME_STEP_S = 60.0
"""Longest physics step (s): up to it the reference controls settle and a run's energies
stay within 2 % of a 1 s run (docs/benchmarks.md, "Coarse steps"); beyond it they do not."""


class Strict(BaseModel):
    """Base model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Weather(Strict):
    """Outdoor temperature: annual and daily sinusoids plus seeded random weather (degC)."""

    annual_mean: Temperature = Field(9.0, ge=-30, le=35)
    annual_amplitude: TemperatureDelta = Field(9.0, ge=0, le=30)
    coldest_day_of_year: int = Field(20, ge=1, le=365)
    daily_amplitude: TemperatureDelta = Field(4.0, ge=0, le=20)
    warmest_hour: float = Field(15.0, ge=0, le=24)
    random_sd: TemperatureDelta = Field(1.0, ge=0, le=10)
    offset: TemperatureDelta = Field(0.0, ge=-30, le=30)  # heat waves and overrides


class ITLoad(Strict):
    """Utilisation profile of the IT equipment (fractions of the rack's dynamic range)."""

    mean: Fraction = Field(0.75, ge=0, le=1)
    daily_amplitude: Fraction = Field(0.1, ge=0, le=0.5)
    peak_hour: float = Field(15.0, ge=0, le=24)
    random_sd: Fraction = Field(0.03, ge=0, le=0.3)
    update_period: Duration = Field(60.0, gt=0, le=3600)


class Racks(Strict):
    """Direct-liquid-cooled racks, ``per_cdu`` behind every CDU."""

    per_cdu: Positive = Field(10, le=200)
    max_power: Power = Field(25e3, gt=0, le=500e3)
    idle_fraction: Fraction = Field(0.3, ge=0, le=1)
    liquid_fraction: Fraction = Field(0.8, ge=0, le=1)
    heat_capacity: HeatCapacity = Field(60e3, gt=0)  # cold plates, manifolds and coolant
    flow: MassFlow = Field(0.5, gt=0, le=20)  # nominal coolant flow per rack
    case_resistance: Annotated[float, Field(gt=0, le=0.01)] = 0.0008  # K/W, coolant to case
    throttle_case: Temperature = Field(85.0, ge=40, le=110)
    shutdown_case: Temperature = Field(100.0, ge=50, le=125)
    throttle_gain: Annotated[float, Field(gt=0, le=1)] = 0.1  # fraction of power per K


class CDU(Strict):
    """Coolant distribution unit: liquid-to-liquid exchanger, pump, reservoir, valve."""

    count: Positive = Field(4, le=200)
    supply_setpoint: Temperature = Field(40.0, ge=15, le=60)
    hx_ua: ThermalConductance = Field(80e3, gt=0)  # W/K, at nominal flows
    pump_flow: MassFlow = Field(5.0, gt=0, le=200)  # secondary (TCS) flow at full speed
    pump_power: Power = Field(3e3, gt=0)  # electrical at full speed
    loop_mass: Mass = Field(800.0, gt=0)  # coolant in the TCS loop outside the reservoir
    reservoir_volume: Volume = Field(0.2, gt=0)
    reservoir_area: Area = Field(0.25, gt=0)
    fill_pressure: Pressure = Field(2.0e5, gt=0)  # loop pressure when full (gauge, Pa)
    vessel_gas_volume: Volume = Field(0.05, gt=0)  # expansion vessel gas at fill
    makeup_flow: MassFlow = Field(0.1, ge=0)  # when the make-up valve is open
    makeup_temperature: Temperature = Field(15.0, ge=0, le=40)
    valve_kv: Annotated[float, Field(gt=0)] = 60.0  # m3/h at 1 bar, fully open
    valve_stroke_time: Duration = Field(60.0, gt=0)
    leak_sensor_volume: Volume = Field(0.0005, gt=0)  # water that wets a spot sensor


class FacilityLoop(Strict):
    """Facility water system between CDUs, heat pumps and dry coolers."""

    supply_setpoint: Temperature = Field(30.0, ge=10, le=45)
    water_class: WaterClass = "W32"
    pumps: Positive = Field(2, le=20)
    pump_head: Pressure = Field(2.5e5, gt=0)  # shut-off head at full speed, Pa
    pump_flow: MassFlow = Field(20.0, gt=0)  # flow per pump at full speed and design head
    pump_efficiency: Fraction = Field(0.7, gt=0, le=1)
    dp_setpoint: Pressure = Field(0.8e5, gt=0)  # differential pressure across the CDUs
    pipe_mass: Mass = Field(5000.0, gt=0)  # water in each of the supply and return mains
    pipe_ua: ThermalConductance = Field(150.0, ge=0)  # heat loss of each main, W/K
    pipe_segments: Positive = Field(8, le=50)
    plant_room_temperature: Temperature = Field(20.0, ge=-10, le=45)
    fill_pressure: Pressure = Field(3.0e5, gt=0)
    volume: Volume = Field(15.0, gt=0)
    vessel_gas_volume: Volume = Field(1.0, gt=0)
    makeup_flow: MassFlow = Field(0.5, ge=0)


class AirCooling(Strict):
    """Air-side cooling of the racks' air heat: CRAH units with a chiller on the facility loop."""

    supply_setpoint: Temperature = Field(24.0, ge=10, le=35)
    capacity: Power = Field(400e3, gt=0)
    chiller_cop: Annotated[float, Field(gt=1, le=15)] = 5.0
    fan_power_fraction: Fraction = Field(0.03, ge=0, le=0.5)  # of heat removed
    room_heat_capacity: HeatCapacity = Field(20e6, gt=0)


class HeatPump(Strict):
    """Water-to-water heat pump on the facility return (source) and district side (sink)."""

    count: Positive = Field(2, le=50)
    refrigerant: Refrigerant = "R1234ze(E)"
    displacement: Displacement = Field(2.0e-3, gt=0)  # m3 per revolution
    max_speed: Speed = Field(50.0, gt=0, le=200)  # rev/s
    min_speed_fraction: Fraction = Field(0.3, gt=0, le=1)
    speed_ramp: Annotated[float, Field(gt=0, le=1)] = 0.01  # fraction of max per second
    clearance_ratio: Fraction = Field(0.04, ge=0, le=0.2)  # for volumetric efficiency
    evaporator_approach: TemperatureDelta = Field(5.0, gt=0, le=20)
    condenser_approach: TemperatureDelta = Field(5.0, gt=0, le=20)
    supply_setpoint: Temperature = Field(70.0, ge=40, le=120)  # condenser leaving water
    condenser_flow_max: MassFlow = Field(12.0, gt=0)
    max_condensing: Temperature = Field(88.0, ge=30, le=140)  # high-pressure trip
    min_evaporating: Temperature = Field(2.0, ge=-40, le=40)  # low-pressure trip
    antifreeze: Temperature = Field(4.0, ge=-10, le=20)  # evaporator leaving water
    min_flow: MassFlow = Field(2.0, ge=0)  # evaporator and condenser water
    min_on_time: Duration = Field(300.0, ge=0)
    min_off_time: Duration = Field(300.0, ge=0)
    max_starts_per_hour: Positive = Field(4, le=60)
    cycle_period: Duration = Field(5.0, gt=0, le=60)  # refrigerant cycle re-evaluation
    water_mass: Mass = Field(300.0, gt=0)  # water in each exchanger
    # Staged cycles (twin.refrigerant_two_stage, twin.refrigerant_cascade). ``refrigerant``
    # is the fluid of a two-stage machine and the high stage of a cascade.
    cycle: CycleKind = "single"
    low_stage_refrigerant: Refrigerant = "R717"  # cascade low stage
    eta_low: Fraction = Field(0.7, ge=0.3, le=1)  # isentropic efficiency, low stage
    eta_high: Fraction = Field(0.7, ge=0.3, le=1)  # isentropic efficiency, high stage
    intermediate_temperature: Temperature | None = None  # two-stage p_int; None: geometric
    cascade_temperature: Temperature | None = None  # low-stage condensing; None: best COP
    cascade_approach: TemperatureDelta = Field(5.0, gt=0, le=20)  # cascade exchanger
    max_discharge: Temperature = Field(200.0, ge=60, le=250)  # discharge trip, each stage
    low_stage_max_condensing: Temperature = Field(120.0, ge=20, le=140)  # low-stage HP trip

    @model_validator(mode="after")
    def _staged_cycle(self) -> HeatPump:
        if self.cycle == "single":
            return self
        from twin.errors import RefrigerantError
        from twin.heatpump import staged_spec

        try:
            spec = staged_spec(self)
        except RefrigerantError as exc:
            raise ValueError(str(exc)) from None
        t_need = self.supply_setpoint + self.condenser_approach
        if t_need > spec.envelope()[3]:
            raise ValueError(f"supply_setpoint {self.supply_setpoint:g} degC needs condensing "
                             f"at {t_need:g} degC, above the {spec.label} envelope "
                             f"({spec.envelope()[3]:g} degC)")
        return self


class DryCooler(Strict):
    """Dry cooler rejecting facility-loop heat to outdoor air."""

    count: Positive = Field(1, le=50)
    ua: ThermalConductance = Field(120e3, gt=0)  # at full fan speed, W/K
    natural_ua_fraction: Fraction = Field(0.08, ge=0, le=1)  # fans off
    air_flow: MassFlow = Field(120.0, gt=0)  # air at full fan speed, kg/s
    fan_power: Power = Field(15e3, gt=0)  # at full speed (cube law)
    water_mass: Mass = Field(800.0, gt=0)


class Storage(Strict):
    """Stratified hot-water storage on the district side."""

    volume: Volume = Field(200.0, gt=0)
    layers: Positive = Field(6, le=50)
    ua: ThermalConductance = Field(100.0, ge=0)  # loss to surroundings, W/K (whole tank)
    ambient: Temperature = Field(10.0, ge=-30, le=40)
    initial_temperature: Temperature = Field(55.0, ge=5, le=99)


class Boiler(Strict):
    """Peak boiler topping the district supply up to its setpoint."""

    capacity: Power = Field(4e6, ge=0)
    efficiency: Fraction = Field(0.92, gt=0, le=1)


class District(Strict):
    """District-heating connection: outdoor-reset supply, demand and return temperature."""

    supply_at_design: Temperature = Field(90.0, ge=60, le=120)  # at design outdoor temp
    supply_at_mild: Temperature = Field(65.0, ge=60, le=120)  # at the heating limit
    design_outdoor: Temperature = Field(-12.0, ge=-40, le=10)
    heating_limit: Temperature = Field(15.0, ge=5, le=25)
    design_demand: Power = Field(3.0e6, ge=0)  # space heating at design outdoor temp
    hot_water_base: Power = Field(0.3e6, ge=0)
    return_temperature: Temperature = Field(45.0, ge=10, le=80)
    demand_scale: Fraction = Field(1.0, ge=0, le=2)  # demand drops and losses
    storage: Storage = Storage()
    boiler: Boiler = Boiler()

    @model_validator(mode="after")
    def _supply_range(self) -> District:
        if self.supply_at_mild > self.supply_at_design:
            raise ValueError("supply_at_mild must not exceed supply_at_design")
        if self.return_temperature >= self.supply_at_mild:
            raise ValueError("return_temperature must be below supply_at_mild")
        return self


class Emissions(Strict):
    """Emission factors (kg CO2 per kWh of electricity or fuel)."""

    electricity: EmissionFactor = Field(0.38, ge=0, le=2)
    fuel: EmissionFactor = Field(0.20, ge=0, le=2)


class Economics(Strict):
    """Prices and financial assumptions of the business case (`twin.economics`).

    Money in ``currency``; energy prices per kWh of electricity, per MWh of heat and per
    MWh of fuel; sources of the defaults in docs/economics.md. CO2 intensities are the
    ``emissions`` block and the boiler efficiency is ``district.boiler.efficiency``.
    """

    currency: str = Field("USD", pattern=r"^[A-Za-z$\u20ac\u00a3]{1,8}$")
    electricity_price: float = Field(0.10, ge=0)  # per kWh
    electricity_price_profile: list[Annotated[float, Field(ge=0)]] | None = Field(
        None, min_length=24, max_length=24)  # per kWh for each hour of the day, 0-23
    heat_price: float = Field(40.0, ge=0)  # per MWh of heat sold
    fuel_price: float = Field(40.0, ge=0)  # per MWh of peak-boiler fuel
    capex_per_kw: float = Field(1000.0, ge=0)  # per kW of heating capacity; article 500-1500
    heating_capacity: Power | None = Field(None, gt=0)  # None: the run's peak heating power
    installation_factor: float = Field(1.5, ge=1, le=5)  # installed over equipment cost
    maintenance: Fraction = Field(0.02, ge=0, le=0.5)  # of capex per year
    maintenance_per_year: float | None = Field(None, ge=0)  # absolute; replaces the fraction
    discount_rate: Fraction = Field(0.06, gt=-1, le=1)
    lifetime: Positive = Field(20, le=60)  # years
    carbon_price: float = Field(80.0, ge=0)  # per t CO2 avoided
    heat_demand_per_home: Annotated[float, Field(gt=0)] = 15.0  # MWh per home and year
    rejection_electricity: Fraction = Field(0.02, ge=0, le=1)  # kWh fans per kWh rejected
    renewable_share: Fraction = Field(0.0, ge=0, le=1)  # of the electricity supply (REF)
    erf_minimum: Fraction = Field(0.0, ge=0, le=1)  # e.g. EnEfG 0.10 from July 2026


class Sensors(Strict):
    """Sampling and quality of the virtual field instruments."""

    period: Duration = Field(1.0, gt=0, le=60)
    temperature_noise: TemperatureDelta = Field(0.05, ge=0, le=5)
    temperature_resolution: TemperatureDelta = Field(0.01, ge=0, le=1)
    pressure_noise: Pressure = Field(200.0, ge=0)
    flow_noise: Fraction = Field(0.005, ge=0, le=0.2)  # relative to the range


class ScaledEncoding(Strict):
    """A point held in one 16-bit register as raw = value / scale."""

    type: Literal["int16", "uint16"]
    scale: Annotated[float, Field(gt=0)] = 1.0


class Protocols(Strict):
    """Addressing of the site's points (used by the rig's adapters)."""

    word_order: WordOrder = "ABCD"
    mqtt_prefix: str = Field(DEFAULT_MQTT_PREFIX, pattern=r"^[A-Za-z0-9_\-/]{1,64}$")
    unit_ids: dict[str, Annotated[int, Field(ge=1, le=247)]] = Field(default_factory=dict)
    scaled: dict[str, ScaledEncoding] = Field(default_factory=dict)  # point id -> encoding

    @field_validator("unit_ids")
    @classmethod
    def _unique_unit_ids(cls, unit_ids: dict[str, int]) -> dict[str, int]:
        seen: dict[int, str] = {}
        for device, uid in unit_ids.items():
            if uid in seen:
                raise ValueError(f"unit id {uid} given to both {seen[uid]} and {device}")
            seen[uid] = device
        return unit_ids


class Site(Strict):
    """A whole site."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    description: str = ""
    time_step: Duration = Field(1.0, gt=0, le=MAX_TIME_STEP_S)  # physics step
    weather: Weather = Weather()
    it_load: ITLoad = ITLoad()
    racks: Racks = Racks()
    cdus: CDU = CDU()
    facility: FacilityLoop = FacilityLoop()
    air: AirCooling = AirCooling()
    heat_pumps: HeatPump = HeatPump()
    dry_coolers: DryCooler = DryCooler()
    district: District = District()
    emissions: Emissions = Emissions()
    economics: Economics = Economics()
    sensors: Sensors = Sensors()
    protocols: Protocols = Protocols()
    # sequences the system under test owns: the twin's own supervisory control of each is
    # off (see docs/expectations.md, "Whose job is it")
    sut_owns: tuple[SutSequence, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Site:
        if self.racks.shutdown_case <= self.racks.throttle_case:
            raise ValueError("racks.shutdown_case must be above racks.throttle_case")
        if self.heat_pumps.max_condensing <= self.heat_pumps.supply_setpoint:
            raise ValueError("heat_pumps.max_condensing must be above heat_pumps.supply_setpoint")
        return self

    @property
    def rack_count(self) -> int:
        """Number of racks on the site."""
        return self.racks.per_cdu * self.cdus.count
