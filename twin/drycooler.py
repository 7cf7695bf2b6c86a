"""Dry coolers: facility water to outdoor air through a finned coil with fans."""

from __future__ import annotations

from twin.controls import PI, Ramp
from twin.points import Command
from twin.site import DryCooler as DryCoolerSpec
from twin.thermal import exchanger_duty, mixed_node
from twin.water import CP_AIR, CP_WATER


class DryCoolerUnit:
    """One dry cooler with variable-speed fans and a bypass when it would add heat.

    UA scales with air flow as UA_fan * speed^0.6 plus a natural-convection share; the
    duty follows crossflow effectiveness-NTU. Fan power follows the cube law.
    """

    def __init__(self, name: str, spec: DryCoolerSpec, initial_temp: float) -> None:
        self.name = name
        self.spec = spec
        self.fan_cmd = Command(0.0, 0.0)
        self.fans = Ramp(0.0, 0.02)
        self.pid = PI(kp=0.15, ti=200.0, lo=0.0, hi=1.0, direct=True)
        self.temp = initial_temp
        self.outlet = initial_temp
        self.inlet = initial_temp
        self.flow = 0.0  # kg/s water
        self.duty = 0.0  # W rejected to air
        self.fan_power = 0.0  # W
        self.fan_failed = False
        self.bypassed = False

    def control(self, setpoint: float, dt: float) -> None:
        """Built-in reference control: fan speed PI on the leaving water temperature."""
        self.fan_cmd.auto = self.pid.update(setpoint, self.outlet, dt)

    def step(self, t_out: float, dt: float) -> float:
        """Advance by dt at outdoor temperature t_out (degC); return the outlet mean."""
        s = self.spec
        speed = 0.0 if self.fan_failed else self.fans.update(self.fan_cmd.value, dt)
        self.fan_power = s.fan_power * speed ** 3
        ua = s.ua * (s.natural_ua_fraction + (1 - s.natural_ua_fraction) * speed ** 0.6)
        c_air = max(0.05, speed) * s.air_flow * CP_AIR
        duty = exchanger_duty(ua, self.flow * CP_WATER, c_air, self.inlet, t_out,
                              counterflow=False)
        self.bypassed = duty < 0.0
        self.duty = max(0.0, duty)
        self.temp, self.outlet = mixed_node(self.temp, s.water_mass * CP_WATER,
                                            self.flow * CP_WATER, self.inlet, 0.0, 0.0,
                                            -self.duty, dt)
        return self.outlet

    def stored_energy(self) -> float:
        """Heat in the coil water relative to 0 degC (J)."""
        return self.spec.water_mass * CP_WATER * self.temp
