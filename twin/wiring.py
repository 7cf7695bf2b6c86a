"""The point table of a twin: which states are sensors, commands, alarms and statuses.

Point ids are ``device.point`` (``cdu1.supply_temp``, ``cdu1.rack03.case_temp``,
``hp2.trip.high_pressure``). Units are SI with temperatures in degC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twin.points import DType, PointTable

if TYPE_CHECKING:
    from twin.cdu import CDUnit
    from twin.drycooler import DryCoolerUnit
    from twin.facility import Pump
    from twin.heatpump import HeatPumpUnit
    from twin.plant import Twin

T_LO, T_HI = -40.0, 150.0  # degC range of temperature transmitters


def register_points(tw: Twin) -> None:
    """Fill ``tw.points`` with every point of the site."""
    pts = tw.points
    sn = tw.site.sensors
    temp = {"noise_sd": sn.temperature_noise, "resolution": sn.temperature_resolution}
    _site_points(tw, pts, temp)
    for i, cdu in enumerate(tw.cdus):
        _cdu_points(tw, pts, i, cdu, temp)
    _facility_points(tw, pts, temp)
    for hp in tw.heat_pumps:
        _heat_pump_points(pts, hp, temp)
    for dc in tw.dry_coolers:
        _dry_cooler_points(pts, dc, temp)
    _district_points(tw, pts, temp)


def _dry_cooler_points(pts: PointTable, dc: DryCoolerUnit, temp: dict[str, float]) -> None:
    n = dc.name
    pts.sensor(f"{n}.inlet_temp", "degC", T_LO, T_HI, "water entering the dry cooler",
               lambda: dc.inlet, **temp)
    pts.sensor(f"{n}.outlet_temp", "degC", T_LO, T_HI, "water leaving the dry cooler",
               lambda: dc.temp, **temp)
    pts.sensor(f"{n}.fan_speed", "1", 0, 1, "fan speed feedback (fraction of full)",
               lambda: dc.fans.position)
    pts.sensor(f"{n}.heat_rejected", "W", 0, 50e6, "heat rejected to outdoor air",
               lambda: dc.duty)
    pts.sensor(f"{n}.fan_power", "W", 0, 5e6, "fan electrical power",
               lambda: dc.fan_power)
    pts.command(f"{n}.fan_speed_cmd", "1", 0, 1, "fan speed command (fraction)", dc.fan_cmd)
    pts.alarm(f"{n}.fan_fault", "fans failed", lambda: float(dc.fan_failed))


def _site_points(tw: Twin, pts: PointTable, temp: dict[str, float]) -> None:
    pts.sensor("site.outdoor_temp", "degC", -50, 60, "outdoor air temperature",
               lambda: tw.outdoor, **temp)
    pts.sensor("site.it_power", "W", 0, 1e9, "IT electrical power of all racks",
               lambda: float(tw.racks.power.sum()))
    pts.status("site.pue", "1", 0, 10, "PUE over the run so far",
               lambda: tw.kpi("pue"))
    pts.status("site.erf", "1", 0, 1, "ERF over the run so far", lambda: tw.kpi("erf"))
    pts.status("site.heat_recovered", "J", 0, 1e18, "heat delivered by the heat pumps so far",
               lambda: tw.meters.condensers)
    pts.sensor("air.supply_temp", "degC", -10, 60, "rack inlet air temperature",
               lambda: tw.air.temp, **temp)
    pts.sensor("air.cooling_power", "W", 0, 1e9, "heat removed by the CRAH units",
               lambda: tw.air.removed)
    pts.command("air.supply_temp_sp", "degC", 15, 35, "rack inlet air setpoint",
                tw.air.setpoint)


def _cdu_points(tw: Twin, pts: PointTable, i: int, cdu: CDUnit,
                temp: dict[str, float]) -> None:
    n = cdu.name
    s = tw.site
    flow_noise = s.sensors.flow_noise
    pts.sensor(f"{n}.supply_temp", "degC", T_LO, T_HI, "TCS coolant supply to the racks",
               lambda: cdu.supply_mean, **temp)
    pts.sensor(f"{n}.return_temp", "degC", T_LO, T_HI, "TCS coolant return from the racks",
               lambda: cdu.return_stream.temp, **temp)
    pts.sensor(f"{n}.primary_supply_temp", "degC", T_LO, T_HI, "facility water entering",
               lambda: cdu.primary_in, **temp)
    pts.sensor(f"{n}.primary_return_temp", "degC", T_LO, T_HI, "facility water leaving",
               lambda: cdu.primary_out, **temp)
    fmax = s.cdus.pump_flow * 3
    pts.sensor(f"{n}.primary_flow", "kg/s", 0, fmax, "facility water flow through the CDU",
               lambda: cdu.primary_flow, noise_sd=flow_noise * fmax)
    pts.sensor(f"{n}.secondary_flow", "kg/s", 0, fmax, "TCS coolant flow",
               lambda: cdu.secondary_flow, noise_sd=flow_noise * fmax)
    pts.sensor(f"{n}.pressure", "Pa", 0, 1e6, "TCS static pressure (gauge)",
               lambda: cdu.pressure, noise_sd=s.sensors.pressure_noise)
    pts.sensor(f"{n}.reservoir_level", "m", 0, 5, "reservoir water level",
               lambda: cdu.level, resolution=0.001)
    pts.sensor(f"{n}.makeup_flow", "kg/s", 0, 10, "make-up water flow",
               lambda: cdu.makeup_flow)
    pts.sensor(f"{n}.valve_position", "1", 0, 1, "primary valve position feedback",
               lambda: cdu.valve_position())
    pts.sensor(f"{n}.pump_speed", "1", 0, 1, "secondary pump speed feedback",
               lambda: cdu.pump.position)
    pts.sensor(f"{n}.heat_duty", "W", -1e8, 1e8, "heat from TCS to facility water",
               lambda: cdu.duty)
    pts.alarm(f"{n}.leak", "spot leak sensor under the CDU",
              lambda: float(cdu.leaked_here * 1.0 >= s.cdus.leak_sensor_volume * 1000.0))
    pts.alarm(f"{n}.low_level", "reservoir level below the make-up threshold",
              lambda: float(cdu.level_fraction < cdu.MAKEUP_ON))
    pts.command(f"{n}.supply_temp_sp", "degC", 15, 60, "TCS supply temperature setpoint",
                cdu.setpoint)
    pts.command(f"{n}.valve_cmd", "1", 0, 1, "primary valve position command", cdu.valve_cmd)
    pts.command(f"{n}.pump_speed_cmd", "1", 0, 1, "secondary pump speed command",
                cdu.pump_cmd)
    pts.command(f"{n}.makeup_enable", "1", 0, 1, "make-up water valve enabled",
                cdu.makeup_enable, DType.BOOL)
    pts.command(f"{n}.isolate", "1", 0, 1, "isolate the CDU (pump off, primary valve shut)",
                cdu.isolate, DType.BOOL)
    per = s.racks.per_cdu
    for r in range(per):
        _rack_points(tw, pts, f"{n}.rack{r + 1:02d}", i * per + r, temp)


def _rack_points(tw: Twin, pts: PointTable, rn: str, k: int, temp: dict[str, float]) -> None:
    racks = tw.racks
    s = tw.site
    pts.sensor(f"{rn}.power", "W", 0, 1e6, "IT power of the rack",
               lambda: float(racks.power[k]))
    pts.sensor(f"{rn}.outlet_temp", "degC", T_LO, T_HI, "coolant leaving the rack",
               lambda: float(racks.outlet[k]), **temp)
    pts.sensor(f"{rn}.case_temp", "degC", T_LO, T_HI, "hottest processor case",
               lambda: float(racks.case[k]), **temp)
    pts.status(f"{rn}.throttle", "1", 0, 1, "fraction of demanded power allowed",
               lambda: float(racks.throttle[k]))
    pts.alarm(f"{rn}.shutdown", "rack shut down on over-temperature",
              lambda: float(not racks.on[k]))
    pts.alarm(f"{rn}.leak", "spot leak sensor under the rack",
              lambda: float(racks.leaked[k] >= s.cdus.leak_sensor_volume * 1000.0))


def _facility_points(tw: Twin, pts: PointTable, temp: dict[str, float]) -> None:
    hyd = tw.hydraulics
    f = tw.site.facility
    pts.sensor("facility.supply_temp", "degC", T_LO, T_HI, "facility water at the CDUs",
               lambda: tw.supply_main.temps[-1], **temp)
    pts.sensor("facility.return_temp", "degC", T_LO, T_HI,
               "facility water back at the plant", lambda: tw.return_main.temps[-1], **temp)
    pts.sensor("facility.after_heat_pumps_temp", "degC", T_LO, T_HI,
               "facility water leaving the heat-pump evaporators",
               lambda: tw.after_heat_pumps, **temp)
    fmax = f.pump_flow * f.pumps * 2
    pts.sensor("facility.flow", "kg/s", 0, fmax, "facility water flow",
               lambda: hyd.flow, noise_sd=tw.site.sensors.flow_noise * fmax)
    pts.sensor("facility.dp", "Pa", 0, 2e6, "differential pressure across the CDUs",
               lambda: hyd.dp_branches, noise_sd=tw.site.sensors.pressure_noise)
    pts.sensor("facility.pressure", "Pa", 0, 2e6, "facility loop static pressure (gauge)",
               lambda: hyd.pressure, noise_sd=tw.site.sensors.pressure_noise)
    pts.sensor("facility.pump_power", "W", 0, 1e8, "electrical power of all pumps",
               lambda: hyd.power)
    pts.command("facility.pump_speed_cmd", "1", 0, 1, "pump speed command", hyd.speed_cmd)
    for p in hyd.pumps:
        _pump_points(pts, p)


def _pump_points(pts: PointTable, p: Pump) -> None:
    n = f"facility.{p.name}"
    pts.command(f"{n}.enable", "1", 0, 1, "pump enabled", p.enable, DType.BOOL)
    pts.status(f"{n}.running", "1", 0, 1, "pump running", lambda: float(p.running),
               DType.BOOL)
    pts.alarm(f"{n}.trip", "pump tripped", lambda: float(p.tripped))


def _heat_pump_points(pts: PointTable, hp: HeatPumpUnit, temp: dict[str, float]) -> None:
    n = hp.name
    pts.sensor(f"{n}.evap_in_temp", "degC", T_LO, T_HI, "evaporator entering water",
               lambda: hp.evap_in, **temp)
    pts.sensor(f"{n}.evap_out_temp", "degC", T_LO, T_HI, "evaporator leaving water",
               lambda: hp.evap_temp, **temp)
    pts.sensor(f"{n}.cond_in_temp", "degC", T_LO, T_HI, "condenser entering water",
               lambda: hp.cond_in, **temp)
    pts.sensor(f"{n}.cond_out_temp", "degC", T_LO, T_HI, "condenser leaving water",
               lambda: hp.cond_temp, **temp)
    pts.sensor(f"{n}.evap_flow", "kg/s", 0, 500, "evaporator water flow",
               lambda: hp.evap_flow)
    pts.sensor(f"{n}.cond_flow", "kg/s", 0, 500, "condenser water flow",
               lambda: hp.cond_flow)
    pts.sensor(f"{n}.evap_pressure", "Pa", 0, 1e7, "evaporating pressure (absolute)",
               lambda: hp.state.p_evap_Pa if hp.state else 0.0)
    pts.sensor(f"{n}.cond_pressure", "Pa", 0, 1e7, "condensing pressure (absolute)",
               lambda: hp.state.p_cond_Pa if hp.state else 0.0)
    pts.sensor(f"{n}.discharge_temp", "degC", T_LO, 250, "compressor discharge temperature",
               lambda: hp.state.t_discharge_C if hp.state else hp.cond_temp)
    pts.sensor(f"{n}.power", "W", 0, 1e8, "compressor electrical power", lambda: hp.power)
    pts.sensor(f"{n}.heat_output", "W", 0, 1e8, "condenser heat to the district side",
               lambda: hp.q_cond)
    pts.sensor(f"{n}.heat_input", "W", 0, 1e8, "evaporator heat from the facility water",
               lambda: hp.q_evap)
    pts.sensor(f"{n}.speed", "1", 0, 1, "compressor speed (fraction of maximum)",
               lambda: hp.speed.position)
    pts.status(f"{n}.cop", "1", 0, 20, "instant heating COP", lambda: hp.cop)
    pts.status(f"{n}.carnot_cop", "1", 0, 50, "Carnot COP at the refrigerant temperatures",
               lambda: hp.carnot_cop)
    pts.status(f"{n}.running", "1", 0, 1, "compressor running", lambda: float(hp.running),
               DType.BOOL)
    pts.status(f"{n}.trip_count", "1", 0, 1e6, "safety trips so far",
               lambda: float(hp.trip_count), DType.INT)
    pts.status(f"{n}.starts_last_hour", "1", 0, 100, "starts in the last hour",
               lambda: float(len(hp.starts)), DType.INT)
    for kind in hp.trips:
        _trip_alarm(pts, hp, kind)
    pts.alarm(f"{n}.lockout", "start refused: maximum starts per hour reached",
              lambda: float(hp.lockout))
    pts.command(f"{n}.enable", "1", 0, 1, "heat pump enable", hp.enable, DType.BOOL)
    pts.command(f"{n}.speed_cmd", "1", 0, 1, "compressor speed command (fraction)",
                hp.speed_cmd)
    pts.command(f"{n}.supply_temp_sp", "degC", 40, 120, "condenser leaving water setpoint",
                hp.setpoint)
    pts.command(f"{n}.reset", "1", 0, 1, "reset latched trips (pulse)", hp.reset, DType.BOOL)


def _district_points(tw: Twin, pts: PointTable, temp: dict[str, float]) -> None:
    d = tw.district
    pts.sensor("district.supply_temp", "degC", T_LO, T_HI, "district supply temperature",
               lambda: d.supply_temp, **temp)
    pts.sensor("district.return_temp", "degC", T_LO, T_HI, "district return temperature",
               lambda: d.return_temp, **temp)
    pts.status("district.supply_temp_sp", "degC", 0, 150,
               "supply setpoint from the outdoor-reset curve", lambda: d.supply_setpoint)
    pts.sensor("district.demand", "W", 0, 1e9, "network heat demand", lambda: d.demand)
    pts.sensor("district.delivered", "W", 0, 1e9, "heat delivered to the network",
               lambda: d.delivered)
    pts.sensor("district.flow", "kg/s", 0, 1e4, "network flow", lambda: d.network_flow)
    pts.sensor("district.boiler_power", "W", 0, 1e9, "peak boiler heat output",
               lambda: d.boiler_heat)
    pts.sensor("district.tank_top_temp", "degC", T_LO, T_HI, "storage top layer",
               lambda: d.top, **temp)
    pts.sensor("district.tank_bottom_temp", "degC", T_LO, T_HI, "storage bottom layer",
               lambda: d.bottom, **temp)
    hp_sp = tw.site.heat_pumps.supply_setpoint
    ret = tw.site.district.return_temperature
    pts.status("district.tank_soc", "1", 0, 1, "storage state of charge",
               lambda: d.state_of_charge(hp_sp, ret))
    pts.command("district.boiler_enable", "1", 0, 1, "peak boiler enabled",
                d.boiler_enable, DType.BOOL)


def _trip_alarm(pts: PointTable, hp: HeatPumpUnit, kind: str) -> None:
    pts.alarm(f"{hp.name}.trip.{kind}", f"{kind.replace('_', ' ')} trip (latched)",
              lambda: float(hp.trips[kind]))
