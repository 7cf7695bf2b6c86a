"""The twin: a whole site wired together and stepped by SimPy.

SimPy processes: the physics step (every ``time_step``), the refrigerant cycle of each
heat pump (every ``cycle_period``), the boundary profiles (every minute), the heat-pump
staging (every 10 s) and the sensor sampling (every sensor period). Callers add their own
periodic callbacks with `Twin.every` and advance time with `Twin.run_until`; writes made
between two calls take effect at the next physics step.

Coarse steps (``time_step`` up to `twin.site.MAX_TIME_STEP_S`, for long studies): every
periodic process runs at max(its period, ``time_step``) and the controllers integrate over
that period, so one physics step sees at most one profile update, staging decision, cycle
evaluation and sensor sample. The nodes are integrated exactly, so the energy balance
still closes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import simpy

from twin.air import AirSide
from twin.cdu import CDUnit
from twin.controls import PI
from twin.defaults import DEFAULT_SEED, DEFAULT_START
from twin.district import DistrictSide
from twin.drycooler import DryCoolerUnit
from twin.economics import BusinessCase, business_case
from twin.facility import Hydraulics, Main, valve_conductance
from twin.heatpump import HeatPumpUnit
from twin.kpis import (
    ASHRAE_RECOMMENDED_AIR,
    WATER_CLASS_LIMIT,
    Factors,
    Kpis,
    Meters,
    kpi,
    kpis,
)
from twin.points import Kind, PointTable
from twin.profiles import Calendar, OutdoorTemperature, Utilisation, heat_demand, supply_setpoint
from twin.racks import RackArray
from twin.sensors import SensorBank
from twin.site import Site
from twin.thermal import Stream
from twin.water import CP_WATER

PROFILE_PERIOD_S = 60.0
STAGING_PERIOD_S = 10.0


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened in the plant at simulated time ``t`` (s)."""

    t: float
    source: str  # device or subsystem
    kind: str  # start, stop, trip, reset, shutdown, restart, command, fault, ...
    message: str


class Twin:
    """A simulated site. All quantities SI, temperatures degC, time in seconds."""

    def __init__(self, site: Site, *, seed: int = DEFAULT_SEED,
                 start: datetime = DEFAULT_START) -> None:
        self.site = site
        self.seed = seed
        self.env = simpy.Environment()
        self.calendar = Calendar(start)
        self.dt = site.time_step
        # a periodic process never runs more often than the physics step (coarse steps)
        self.profile_period = max(PROFILE_PERIOD_S, self.dt)
        self.staging_period = max(STAGING_PERIOD_S, self.dt)
        root = np.random.SeedSequence(seed)
        weather_seed, load_seed = root.spawn(2)
        self.weather = OutdoorTemperature(site.weather, self.calendar,
                                          np.random.default_rng(weather_seed))
        self.utilisation = Utilisation(site.it_load, self.calendar, site.rack_count,
                                       np.random.default_rng(load_seed))
        fws = site.facility.supply_setpoint
        t_ret = fws + 10.0
        self.racks = RackArray(site.racks, site.cdus.count, site.cdus.supply_setpoint + 5)
        self.cdus = [CDUnit(f"cdu{i + 1}", site.cdus, site.racks.per_cdu,
                            site.cdus.supply_setpoint) for i in range(site.cdus.count)]
        self.hydraulics = Hydraulics(site.facility, site.cdus.valve_kv, site.cdus.count)
        self.sut_owns = frozenset(site.sut_owns)  # sequences the twin leaves to the SUT
        if "standby_pump" in self.sut_owns and len(self.hydraulics.pumps) > 1:
            self.hydraulics.pumps[-1].enable.auto = 0.0  # duty + standby; only the SUT starts it
        fac = site.facility
        self.supply_main = Main(fac.pipe_mass, fac.pipe_ua, fac.pipe_segments, fws)
        self.return_main = Main(fac.pipe_mass, fac.pipe_ua, fac.pipe_segments, t_ret)
        self.plant_out = Stream(self.hydraulics.flow * CP_WATER, fws)
        self.air = AirSide(site.air)
        self.district = DistrictSide(site.district)
        self.heat_pumps = [HeatPumpUnit(f"hp{i + 1}", site.heat_pumps, t_ret,
                                        site.district.storage.initial_temperature)
                           for i in range(site.heat_pumps.count)]
        self.dry_coolers = [DryCoolerUnit(f"drycooler{i + 1}", site.dry_coolers, fws)
                            for i in range(site.dry_coolers.count)]
        hp = site.heat_pumps
        self.hp_capacity_pid = PI(kp=0.25, ti=300.0, lo=0.0, hi=float(hp.count), direct=True)
        self.hp_storage_pid = PI(kp=0.25, ti=600.0, lo=0.0, hi=float(hp.count), direct=False)
        self.hp_demand = 0.0  # units of heat pumps at full speed wanted by the staging
        self._stage_timer = 0.0
        self.after_heat_pumps = t_ret
        self.outdoor = self.weather.value
        self.meters = Meters(hp_running_s=[0.0] * hp.count)
        self.peak_heating = 0.0  # W, highest heat-pump heating power of a step so far
        self.events: list[Event] = []
        self._listeners: list[Callable[[Event], None]] = []
        self.points = PointTable()
        from twin.wiring import register_points  # late import: wiring needs the Twin type
        register_points(self)
        self.sensors = SensorBank(self.points, seed)
        self._supply_sensor = [self.sensors.position[f"{c.name}.supply_temp"] for c in self.cdus]
        self._profiles()
        self.sensors.sample(0.0, 0)
        self._energy_start = self.stored_energy()
        self.env.process(self._physics())
        self.env.process(self._periodic(self.profile_period, self._profiles))
        self.env.process(self._periodic(self.staging_period, self._staging))
        self.env.process(self._periodic(max(hp.cycle_period, self.dt), self._cycles))
        self.env.process(self._sampling())

    # -- public API ---------------------------------------------------------------------
    @property
    def now(self) -> float:
        """Simulated time since the start (s)."""
        return float(self.env.now)

    def run_until(self, t: float) -> None:
        """Advance simulated time to t (s)."""
        if t > self.env.now:
            self.env.run(until=t)

    def every(self, period: float, callback: Callable[[], None], *,
              offset: float = 0.0) -> None:
        """Call ``callback()`` every ``period`` seconds of simulated time, first at offset;
        never more often than the physics step (``period`` is raised to ``time_step``)."""
        period = max(period, self.dt)

        def proc() -> Generator[simpy.Event, object, None]:
            if offset > 0:
                yield self.env.timeout(offset)
            while True:
                callback()
                yield self.env.timeout(period)

        self.env.process(proc())

    def on_event(self, listener: Callable[[Event], None]) -> None:
        """Register a callback for every plant event."""
        self._listeners.append(listener)

    def emit(self, source: str, kind: str, message: str) -> None:
        """Record an event at the present simulated time."""
        event = Event(self.now, source, kind, message)
        self.events.append(event)
        for listener in self._listeners:
            listener(event)

    def write(self, point_id: str, value: object, source: str = "external") -> float:
        """Validate and apply an external write; returns the accepted value.

        Raises `twin.errors.WriteRefused` (nothing changes) or `twin.errors.PointError`.
        """
        point = self.points[point_id]
        number = point.coerce(value)
        assert point.setter is not None
        point.setter(number)
        self.emit(source, "command", f"{point_id} = {number:g}")
        return number

    def read(self, point_id: str) -> float:
        """Value a controller sees: the last sample for sensors, the present value else."""
        point = self.points[point_id]
        if point.kind is Kind.SENSOR:
            return self.sensors.measured(point_id)
        return float(point.getter())

    def truth(self, point_id: str) -> float:
        """Ground-truth value of a point now."""
        return float(self.points[point_id].getter())

    def measured_values(self) -> np.ndarray:
        """Measured values of all points in table order (sensors as last sampled)."""
        values = np.fromiter((p.getter() for p in self.points), dtype=float,
                             count=len(self.points))
        values[self.sensors.sensor_index] = self.sensors.values
        return values

    def truth_values(self) -> np.ndarray:
        """Ground-truth values of all points in table order."""
        return np.fromiter((p.getter() for p in self.points), dtype=float,
                           count=len(self.points))

    def kpis(self) -> Kpis:
        """KPIs of the run so far (see `twin.kpis.REGISTRY`)."""
        e = self.site.emissions
        return kpis(self.meters, e.electricity, e.fuel, self.site.district.boiler.efficiency)

    def kpi(self, name: str) -> float:
        """One KPI of the run so far, in its unit of `twin.kpis.REGISTRY`."""
        e = self.site.emissions
        return kpi(name, self.meters,
                   Factors(e.electricity, e.fuel, self.site.district.boiler.efficiency))

    def business_case(self) -> BusinessCase:
        """The economics of the run so far (`twin.economics`)."""
        return business_case(self.meters, self.site, peak_heating_w=self.peak_heating)

    def stored_energy(self) -> float:
        """Heat held in every node of the site relative to 0 degC (J)."""
        dt = self.dt
        total = self.racks.stored_energy() + self.air.stored_energy()
        total += sum(c.stored_energy(dt) for c in self.cdus)
        total += self.supply_main.stored_energy() + self.return_main.stored_energy()
        total += self.plant_out.energy(dt)
        total += sum(h.stored_energy() for h in self.heat_pumps)
        total += sum(d.stored_energy() for d in self.dry_coolers)
        total += self.district.stored_energy()
        return total

    def energy_balance(self) -> dict[str, float]:
        """Inputs, outputs and storage change (J) and the residual over IT energy (-)."""
        m = self.meters
        stored = self.stored_energy() - self._energy_start
        residual = m.inputs() - m.outputs() - stored
        return {"inputs_j": m.inputs(), "outputs_j": m.outputs(), "stored_change_j": stored,
                "residual_j": residual,
                "residual_fraction": residual / m.it if m.it > 0 else 0.0}

    # -- SimPy processes ----------------------------------------------------------------
    def _periodic(self, period: float,
                  fn: Callable[[], None]) -> Generator[simpy.Event, object, None]:
        while True:
            yield self.env.timeout(period)
            fn()

    def _physics(self) -> Generator[simpy.Event, object, None]:
        dt = self.dt
        while True:
            yield self.env.timeout(dt)
            self.step(dt)

    def _sampling(self) -> Generator[simpy.Event, object, None]:
        period = max(self.site.sensors.period, self.dt)
        k = 0
        while True:
            yield self.env.timeout(period)
            k += 1
            self.sensors.sample(self.now, k)

    def _profiles(self) -> None:
        t = self.now
        self.outdoor = self.weather.update(t, self.profile_period)
        self.utilisation.update(t)
        d = self.site.district
        self.demand = heat_demand(d, self.outdoor, self.calendar.hour(t))
        self.dh_setpoint = supply_setpoint(d, self.outdoor)

    def _cycles(self) -> None:
        for hp in self.heat_pumps:
            hp.evaluate_cycle()
            hp.condenser_flow_control()

    def _staging(self) -> None:
        """Built-in heat-pump staging and capacity with storage-charging limit.

        With ``heatpump_standby`` owned by the SUT, a tripped unit keeps its stage and no
        unit is staged up while one is tripped: replacing it is the SUT's job.
        """
        hp_spec = self.site.heat_pumps
        dt = self.staging_period
        target = self.site.facility.supply_setpoint - 1.0
        cooling = self.hp_capacity_pid.update(target, self.after_heat_pumps, dt)
        full_bottom = hp_spec.supply_setpoint - 10.0
        storage = self.hp_storage_pid.update(full_bottom, self.district.bottom, dt)
        self.hp_demand = demand = min(cooling, storage)
        if "heatpump_standby" in self.sut_owns:
            available = list(self.heat_pumps)
            running = [h for h in available if h.running or (h.tripped and h.enable.auto)]
            hold = any(h.tripped for h in available)
        else:
            available = [h for h in self.heat_pumps if not h.tripped]
            running = [h for h in available if h.running]
            hold = False
        wanted = len(running)
        if hold:
            self._stage_timer = 0.0
        elif demand > len(running) * 0.95 and len(running) < len(available):
            self._stage_timer += dt
            if self._stage_timer >= 60.0:
                wanted += 1
                self._stage_timer = 0.0
        elif running and demand < (len(running) - 1) + hp_spec.min_speed_fraction * 0.8:
            self._stage_timer -= dt
            if self._stage_timer <= -300.0:
                wanted -= 1
                self._stage_timer = 0.0
        else:
            self._stage_timer = 0.0
        if not running and demand > hp_spec.min_speed_fraction:
            wanted = 1
        order = running + [h for h in available if not h.running]
        for h in self.heat_pumps:
            h.enable.auto = 1.0 if h in order[:wanted] else 0.0
        share = demand / max(1, wanted)
        for h in self.heat_pumps:
            h.speed_cmd.auto = min(1.0, max(hp_spec.min_speed_fraction, share))

    # -- one physics step ---------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Advance the physics by dt seconds (the SimPy process calls this)."""
        site = self.site
        m = self.meters
        t = self.now
        room = site.facility.plant_room_temperature
        # CDU controls and valves, then the facility hydraulics
        conductances = []
        measured = self.sensors.values
        for cdu, index in zip(self.cdus, self._supply_sensor, strict=True):
            cdu.control(dt, float(measured[index]))
            cdu.valve.update(cdu.valve_cmd.value, dt)
            conductances.append(valve_conductance(site.cdus.valve_kv, cdu.valve_position()))
        hyd = self.hydraulics
        hyd.control(conductances)
        flows = hyd.solve(conductances, dt)
        hyd.step_inventory(dt)
        mcp_f = hyd.flow * CP_WATER
        # supply main: the plant's outlet of the last step arrives
        back = self.plant_out
        t_cdu_in = self.supply_main.step(mcp_f, back.temp, room, (back.mcp - mcp_f) * back.temp,
                                         dt)
        m.pipe_losses += self.supply_main.loss * dt
        # CDUs and racks
        per_cdu = site.racks.per_cdu
        leak_out = makeup_in = 0.0
        for i, (cdu, flow) in enumerate(zip(self.cdus, flows, strict=True)):
            cdu.primary_flow = flow
            cdu.primary_in = t_cdu_in
            lost, leak, mu = cdu.step_inventory(dt)
            if cdu.leak_at >= 0:
                self.racks.leaked[i * per_cdu + cdu.leak_at] += lost
            leak_out += leak
            makeup_in += mu
            cdu.step_thermal(dt)
            m.cdu_pumps += cdu.pump_power * dt
        m.leaked += leak_out
        m.makeup += makeup_in
        self._step_racks(t, dt, per_cdu)
        # facility return: CDU primaries mixed, plus air side and pump heat
        if hyd.flow > 0:
            t_mix = sum(c.primary_flow * c.primary_out for c in self.cdus) / hyd.flow
        else:
            t_mix = self.return_main.temps[0]
        air_to_water = self.air.step(self.racks.air_heat(), dt)
        m.chiller += self.air.chiller_power * dt
        m.crah_fans += self.air.fan_power * dt
        m.facility_pumps += hyd.power * dt
        t_plant_in = self.return_main.step(mcp_f, t_mix, room, air_to_water + hyd.power, dt)
        m.pipe_losses += self.return_main.loss * dt
        # heat pumps (evaporators in parallel on the return)
        self._step_heat_pumps(t, dt, hyd.flow, t_plant_in)
        # dry coolers in parallel after the heat pumps
        n_dc = len(self.dry_coolers)
        t_out_mix = 0.0
        for dc in self.dry_coolers:
            dc.inlet = self.after_heat_pumps
            dc.flow = hyd.flow / n_dc
            dc.control(site.facility.supply_setpoint, dt)
            t_out_mix += dc.step(self.outdoor, dt) / n_dc
            m.rejected += dc.duty * dt
            m.dry_cooler_fans += dc.fan_power * dt
        self.plant_out = Stream(mcp_f, t_out_mix)
        # district side
        dist = self.district
        hp_flow = sum(h.cond_flow for h in self.heat_pumps)
        hp_temp = (sum(h.cond_flow * h.cond_out for h in self.heat_pumps) / hp_flow
                   if hp_flow > 0 else dist.top)
        dist.step(self.demand, self.dh_setpoint, hp_flow, hp_temp, dt)
        m.boiler_heat += dist.boiler_heat * dt
        m.boiler_fuel += dist.boiler_fuel * dt
        m.delivered += dist.delivered * dt
        m.demand += dist.demand * dt
        shortfall = dist.demand - dist.delivered
        if shortfall > 1e-6 * dist.demand:  # not floating-point rounding of a met demand
            m.unmet += shortfall * dt
        m.tank_losses += dist.tank_loss * dt
        # comfort envelopes
        lo, hi = ASHRAE_RECOMMENDED_AIR
        if not lo <= self.air.temp <= hi:
            m.air_outside_s += dt
        if t_cdu_in > WATER_CLASS_LIMIT[site.facility.water_class]:
            m.water_outside_s += dt
        m.time += dt

    def _step_racks(self, t: float, dt: float, per_cdu: int) -> None:
        racks = self.racks
        supply = np.array([c.supply_mean for c in self.cdus])[racks.cdu_of]
        racks.flow = np.repeat([c.secondary_flow / per_cdu for c in self.cdus], per_cdu)
        for index, what in racks.step(t, dt, self.utilisation.values, supply):
            cdu = self.cdus[racks.cdu_of[index]]
            self.emit(f"{cdu.name}.rack{index % per_cdu + 1:02d}", what,
                      f"case {racks.case[index]:.1f} degC")
        self.meters.it += float(racks.power.sum()) * dt
        mcp = racks.flow * CP_WATER
        heat = np.bincount(racks.cdu_of, weights=mcp * racks.outlet, minlength=len(self.cdus))
        cap = np.bincount(racks.cdu_of, weights=mcp, minlength=len(self.cdus))
        for i, cdu in enumerate(self.cdus):
            temp = heat[i] / cap[i] if cap[i] > 0 else cdu.return_stream.temp
            cdu.return_stream = Stream(float(cap[i]), float(temp))

    def _step_heat_pumps(self, t: float, dt: float, flow: float, t_in: float) -> None:
        m = self.meters
        n = len(self.heat_pumps)
        bottom = self.district.bottom
        out = 0.0
        compressors = heating = 0.0
        for i, hp in enumerate(self.heat_pumps):
            hp.evap_in = t_in
            hp.evap_flow = flow / n
            hp.cond_in = bottom
            hp.supervise(t)
            if hp.running:
                hp.speed.update(hp.speed_cmd.value, dt)
                hp.condenser_flow_control()
            else:
                hp.cond_flow = 0.0
                hp.q_evap = hp.q_cond = hp.power = 0.0
                hp.state = None
            hp.step_water(dt)
            out += hp.evap_out / n
            m.compressors += hp.power * dt
            compressors += hp.power
            heating += hp.q_cond
            m.evaporators += hp.q_evap * dt
            m.condensers += hp.q_cond * dt
            m.carnot_weighted += hp.carnot_cop * hp.power * dt
            if hp.running:
                m.hp_running_s[i] += dt
            for kind, message in hp.events:
                self.emit(hp.name, kind, message)
            hp.events.clear()
        self.after_heat_pumps = out if flow > 0 else t_in
        m.compressors_by_hour[int(self.calendar.hour(t)) % 24] += compressors * dt
        self.peak_heating = max(self.peak_heating, heating)

    def clock_time(self) -> datetime:
        """Calendar time of the present simulated instant."""
        return self.calendar.start + timedelta(seconds=self.now)

