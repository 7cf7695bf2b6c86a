"""Air-side cooling of the racks' air heat (CRAH units and a chiller on the facility loop)."""

from __future__ import annotations

from twin.points import Command
from twin.site import AirCooling


class AirSide:
    """White-space air as one node; CRAH cooling with a P-plus-feed-forward controller.

    Heat removed from the air plus the chiller's electrical power is rejected into the
    facility return main; CRAH fan power ends in the room air.
    """

    def __init__(self, spec: AirCooling) -> None:
        self.spec = spec
        self.setpoint = Command(spec.supply_setpoint, spec.supply_setpoint)
        self.temp = spec.supply_setpoint  # rack inlet air, degC
        self.removed = 0.0  # W
        self.chiller_power = 0.0  # W
        self.fan_power = 0.0  # W
        self.capacity_factor = 1.0  # CRAH failure fault

    def step(self, heat_in: float, dt: float) -> float:
        """Advance by dt with heat_in (W) from the racks; return heat to the water (W)."""
        s = self.spec
        # W/K, settles within minutes; at steps longer than that, within one step (stable)
        gain = s.room_heat_capacity / max(300.0, dt)
        wanted = heat_in + self.fan_power + gain * (self.temp - self.setpoint.value)
        self.removed = min(s.capacity * self.capacity_factor, max(0.0, wanted))
        self.chiller_power = self.removed / s.chiller_cop
        self.fan_power = self.removed * s.fan_power_fraction
        self.temp += (heat_in + self.fan_power - self.removed) * dt / s.room_heat_capacity
        return self.removed + self.chiller_power

    def stored_energy(self) -> float:
        """Heat in the room air node relative to 0 degC (J)."""
        return self.spec.room_heat_capacity * self.temp
