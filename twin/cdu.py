"""Coolant distribution units: exchanger, secondary pump, reservoir, leaks and make-up.

One CDU couples the technology cooling system (TCS: the racks' coolant loop) to the
facility water system (FWS) through a counterflow liquid-to-liquid exchanger. The TCS
side is one well-mixed node (reservoir, exchanger and piping). The primary control valve
sets the facility flow through the exchanger and so the TCS supply temperature.
"""

from __future__ import annotations

import math

from twin.controls import PI, Ramp
from twin.points import Command
from twin.site import CDU as CDUSpec
from twin.thermal import Stream, exchanger_duty, mixed_node
from twin.water import CP_WATER, P_ATM, RHO_WATER

METAL_HEAT_CAPACITY = 400e3  # J/K, exchanger plates and pump casing (assumption)


class CDUnit:
    """One coolant distribution unit and the state of its TCS loop."""

    RESERVOIR_FULL = 0.8  # fill fraction of the reservoir at commissioning
    MAKEUP_ON, MAKEUP_OFF = 0.5, 0.75  # level fractions of the make-up hysteresis
    SUCTION_LOSS = 0.1  # below this fill fraction the pump loses suction

    def __init__(self, name: str, spec: CDUSpec, racks: int, initial_temp: float) -> None:
        self.name = name
        self.spec = spec
        self.racks = racks
        self.temp = initial_temp  # TCS supply node, degC
        self.supply_mean = initial_temp
        self.reservoir_mass = spec.reservoir_volume * RHO_WATER * self.RESERVOIR_FULL
        self.return_stream = Stream(spec.pump_flow * CP_WATER, initial_temp)
        self.setpoint = Command(spec.supply_setpoint, spec.supply_setpoint)
        self.valve_cmd = Command(0.5, 0.5)
        self.pump_cmd = Command(1.0, 1.0)
        self.makeup_enable = Command(1.0, 1.0)
        self.isolate = Command(0.0, 0.0)
        self.valve = Ramp(0.5, 1.0 / spec.valve_stroke_time)
        self.pump = Ramp(1.0, 0.1)
        self.valve_pid = PI(kp=0.08, ti=120.0, lo=0.0, hi=1.0, direct=True)
        self.valve_pid.preset(0.5)
        self.makeup_open = False
        self.leak_rate = 0.0  # kg/s at fill pressure, set by a leak fault
        self.leak_at = -1  # -1 under the CDU, -2 in its piping, else the rack index in it
        self.leaked_here = 0.0  # kg spilled under the CDU
        self.hx_fouling = 0.0  # fraction of UA lost
        self.pump_failed = False  # pump trip or power loss
        self.primary_flow = 0.0  # kg/s, set by the facility hydraulics
        self.primary_in = initial_temp
        self.primary_out = initial_temp
        self.secondary_flow = spec.pump_flow
        self.duty = 0.0  # W from TCS to FWS
        self.makeup_flow = 0.0  # kg/s
        self.leak_flow = 0.0  # kg/s
        self.pump_power = 0.0  # W

    # -- derived state -------------------------------------------------------------
    @property
    def level_fraction(self) -> float:
        """Reservoir fill fraction (0-1)."""
        return self.reservoir_mass / (self.spec.reservoir_volume * RHO_WATER)

    @property
    def level(self) -> float:
        """Reservoir level above its floor (m)."""
        return self.reservoir_mass / (RHO_WATER * self.spec.reservoir_area)

    @property
    def pressure(self) -> float:
        """TCS static pressure (Pa gauge) from the expansion vessel's gas law."""
        s = self.spec
        lost = (s.reservoir_volume * self.RESERVOIR_FULL * RHO_WATER - self.reservoir_mass)
        gas = s.vessel_gas_volume + max(0.0, lost) / RHO_WATER
        return max(0.0, (s.fill_pressure + P_ATM) * s.vessel_gas_volume / gas - P_ATM)

    @property
    def heat_capacity(self) -> float:
        """Heat capacity of the TCS node (J/K)."""
        return (self.reservoir_mass + self.spec.loop_mass) * CP_WATER + METAL_HEAT_CAPACITY

    @property
    def isolated(self) -> bool:
        """True when the CDU is commanded isolated (pump off, valve shut)."""
        return self.isolate.value >= 0.5

    def valve_position(self) -> float:
        """Effective primary valve position (0-1)."""
        return 0.0 if self.isolated else self.valve.position

    # -- control -------------------------------------------------------------------
    def control(self, dt: float, measured_supply: float) -> None:
        """Built-in reference control: valve PI on the measured TCS supply temperature
        (degC), as a real CDU controller reads its own sensor; holds on a NaN reading."""
        if measured_supply == measured_supply:  # not NaN
            self.valve_cmd.auto = self.valve_pid.update(self.setpoint.value, measured_supply,
                                                        dt)

    # -- physics -------------------------------------------------------------------
    def step_inventory(self, dt: float) -> tuple[float, float, float]:
        """Apply leak and make-up for dt.

        Returns (water lost in kg, its enthalpy in J, make-up enthalpy in J).
        """
        s = self.spec
        pressure_ratio = min(1.5, self.pressure / s.fill_pressure)
        # isolation closes the valves around the leaking section, which stops the leak
        self.leak_flow = 0.0 if self.isolated else self.leak_rate * math.sqrt(pressure_ratio)
        lost = min(self.leak_flow * dt, self.reservoir_mass)
        self.reservoir_mass -= lost
        if self.leak_at == -1:  # under the CDU, where its spot sensor is
            self.leaked_here += lost
        leak_energy = lost * CP_WATER * self.temp
        level = self.level_fraction
        if level < self.MAKEUP_ON:
            self.makeup_open = True
        elif level > self.MAKEUP_OFF:
            self.makeup_open = False
        enabled = self.makeup_enable.value >= 0.5
        self.makeup_flow = s.makeup_flow if (self.makeup_open and enabled) else 0.0
        added = self.makeup_flow * dt
        makeup_energy = added * CP_WATER * s.makeup_temperature
        if added > 0:
            c = self.heat_capacity
            self.temp = (c * self.temp + makeup_energy) / (c + added * CP_WATER)
            self.reservoir_mass += added
        return lost, leak_energy, makeup_energy

    def step_thermal(self, dt: float) -> None:
        """Exchanger and TCS node for dt (s); the racks take ``supply_mean`` next."""
        s = self.spec
        command = 0.0 if self.isolated or self.pump_failed else self.pump_cmd.value
        speed = self.pump.update(command, dt)
        if self.pump_failed:
            speed = self.pump.position = 0.0
        suction = min(1.0, self.level_fraction / self.SUCTION_LOSS)
        self.secondary_flow = s.pump_flow * speed * suction
        self.pump_power = s.pump_power * speed ** 3
        mcp_s = self.secondary_flow * CP_WATER
        mcp_p = self.primary_flow * CP_WATER
        flow_ratio = 0.5 * ((self.secondary_flow / s.pump_flow) ** 0.8
                            + (self.primary_flow / max(s.pump_flow, 1e-9)) ** 0.8)
        ua = s.hx_ua * min(1.2, flow_ratio) * (1.0 - self.hx_fouling)
        back = self.return_stream
        self.duty = exchanger_duty(ua, mcp_s, mcp_p, back.temp, self.primary_in)
        # Flow changes since the last step: the in-flight return brings back.mcp, not mcp_s.
        correction = (back.mcp - mcp_s) * back.temp
        self.temp, self.supply_mean = mixed_node(
            self.temp, self.heat_capacity, mcp_s, back.temp, 0.0, 0.0,
            correction - self.duty + self.pump_power, dt)
        self.primary_out = (self.primary_in + self.duty / mcp_p) if mcp_p > 0 else \
            self.primary_in

    def stored_energy(self, dt: float) -> float:
        """Heat in the TCS node and the in-flight return relative to 0 degC (J)."""
        return self.heat_capacity * self.temp + self.return_stream.energy(dt)
