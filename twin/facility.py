"""Facility water system: parallel variable-speed pumps, CDU branch valves and mains.

Hydraulics are quasi-static (water is incompressible and the loop settles within a
second): identical pumps in parallel follow dp = H0*s^2 - k*(Q/n)^2, the CDU branches are
equal-percentage valves in parallel, and the rest of the loop (mains, heat-pump
evaporators, dry coolers) is one fixed resistance R*Q^2. The mains carry water with a
transport delay, modelled as a chain of well-mixed segments that lose heat to the
plant room.
"""

from __future__ import annotations

import math

from twin.controls import Ramp
from twin.points import Command
from twin.site import FacilityLoop
from twin.thermal import mixed_node
from twin.water import CP_WATER, P_ATM, RHO_WATER

VALVE_RANGEABILITY = 50.0  # equal-percentage characteristic
KV_TO_KG_S = RHO_WATER / 3600.0 / math.sqrt(1e5)  # Kv (m3/h at 1 bar) to kg/s per sqrt(Pa)


def valve_conductance(kv: float, position: float) -> float:
    """Flow conductance of an equal-percentage valve, kg/s per sqrt(Pa).

    position 0-1; below 2 % the valve closes linearly to tight shut-off.
    """
    if position <= 0.0:
        return 0.0
    kv_eff: float = kv * VALVE_RANGEABILITY ** (max(position, 0.02) - 1.0)
    if position < 0.02:
        kv_eff *= position / 0.02
    return kv_eff * KV_TO_KG_S


class Pump:
    """One facility pump: enable and speed commands, trip and degradation faults."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.enable = Command(1.0, 1.0)
        self.tripped = False
        self.head_factor = 1.0  # degraded pump fault (fraction of head)
        self.speed = Ramp(0.8, 0.05)

    @property
    def running(self) -> bool:
        """True when the pump turns."""
        return self.enable.value >= 0.5 and not self.tripped


class Main:
    """A pipe main as a chain of well-mixed segments with heat loss (transport delay)."""

    def __init__(self, mass: float, ua: float, segments: int, initial_temp: float) -> None:
        self.c = mass * CP_WATER / segments  # J/K per segment
        self.ua = ua / segments  # W/K per segment
        self.temps = [initial_temp] * segments
        self.loss = 0.0  # W, last step

    def step(self, mcp: float, t_in: float, t_amb: float, q_in: float, dt: float) -> float:
        """Advance by dt with inflow mcp (W/K) at t_in plus q_in (W) into the first segment.

        Returns the step-mean outlet temperature (degC).
        """
        loss = 0.0
        t = t_in
        q = q_in
        for i, temp in enumerate(self.temps):
            new, mean = mixed_node(temp, self.c, mcp, t, self.ua, t_amb, q, dt)
            self.temps[i] = new
            loss += self.ua * (mean - t_amb)
            t = mean
            q = 0.0
        self.loss = loss
        return t

    def stored_energy(self) -> float:
        """Heat in the main relative to 0 degC (J)."""
        return self.c * sum(self.temps)


class Hydraulics:
    """Pumps and branches of the facility loop; solves flows and pressures each step."""

    def __init__(self, spec: FacilityLoop, cdu_kv: float, cdu_count: int) -> None:
        self.spec = spec
        self.pumps = [Pump(f"pump{i + 1}") for i in range(spec.pumps)]
        self.speed_cmd = Command(0.8, 0.8)
        self.cdu_kv = cdu_kv
        design_flow = spec.pump_flow * spec.pumps * 0.9
        # pump: 60 % of shut-off head at the nominal flow per pump
        self.k_pump = 0.4 * spec.pump_head / spec.pump_flow ** 2
        # fixed resistance: takes what is left of the head at design flow, 10 % margin
        branch = cdu_count * valve_conductance(cdu_kv, 0.7)
        dp_branches = (design_flow / branch) ** 2
        dp_pump = spec.pump_head - self.k_pump * (design_flow / spec.pumps) ** 2
        self.r_fixed = max(0.2 * dp_pump, 0.9 * dp_pump - dp_branches) / design_flow ** 2
        self.flow = design_flow  # kg/s
        self.dp_branches = dp_branches  # Pa across the CDU branches
        self.head = dp_pump  # Pa across the pumps
        self.power = 0.0  # W electrical
        self.inventory = spec.volume * RHO_WATER  # kg
        self.leak_rate = 0.0  # kg/s, facility-loop leak fault
        self.makeup_flow = 0.0

    def running_pumps(self) -> list[Pump]:
        """Pumps that turn now."""
        return [p for p in self.pumps if p.running]

    def control(self, conductances: list[float]) -> None:
        """Built-in reference control: pump speed for the dp setpoint across the CDUs."""
        pumps = self.running_pumps()
        g = sum(conductances)
        if not pumps or g <= 0:
            self.speed_cmd.auto = 1.0
            return
        n = len(pumps)
        head_factor = min(p.head_factor for p in pumps)
        q = g * math.sqrt(self.spec.dp_setpoint)
        needed = self.spec.dp_setpoint + self.r_fixed * q * q + self.k_pump * (q / n) ** 2
        self.speed_cmd.auto = min(1.0, max(0.3, math.sqrt(needed / (self.spec.pump_head
                                                                     * head_factor))))

    def solve(self, conductances: list[float], dt: float) -> list[float]:
        """Ramp pump speeds, solve total and branch flows (kg/s); return branch flows."""
        command = self.speed_cmd.value
        speeds = []
        for p in self.pumps:
            speeds.append(p.speed.update(command if p.running else 0.0, dt))
        running = [(p, s) for p, s in zip(self.pumps, speeds, strict=True) if s > 0.0]
        g = sum(conductances)
        if not running or g <= 0:
            # no flow: running pumps hold their shut-off head H0*s^2 across the shut branches
            shut_off = 0.0
            if running:
                s = sum(sp for _, sp in running) / len(running)
                shut_off = self.spec.pump_head * min(p.head_factor for p, _ in running) * s * s
            self.flow = 0.0
            self.dp_branches = shut_off
            self.head = shut_off
            self.power = 0.0
            return [0.0] * len(conductances)
        n = len(running)
        s = sum(sp for _, sp in running) / n
        h0 = self.spec.pump_head * min(p.head_factor for p, _ in running)
        self.flow = s * math.sqrt(h0 / (self.k_pump / n ** 2 + self.r_fixed + 1.0 / g ** 2))
        self.dp_branches = (self.flow / g) ** 2
        self.head = h0 * s * s - self.k_pump * (self.flow / n) ** 2
        self.power = self.flow / RHO_WATER * self.head / self.spec.pump_efficiency
        return [self.flow * c / g for c in conductances]

    def step_inventory(self, dt: float) -> float:
        """Facility-loop leak and make-up for dt; returns the net water mass change (kg)."""
        s = self.spec
        lost = self.leak_rate * dt
        self.makeup_flow = s.makeup_flow if self.pressure < 0.8 * s.fill_pressure else 0.0
        added = self.makeup_flow * dt
        self.inventory += added - lost
        return added - lost

    @property
    def pressure(self) -> float:
        """Static pressure of the facility loop (Pa gauge), expansion-vessel gas law."""
        s = self.spec
        lost = max(0.0, s.volume * RHO_WATER - self.inventory) / RHO_WATER
        gas = s.vessel_gas_volume + lost
        return max(0.0, (s.fill_pressure + P_ATM) * s.vessel_gas_volume / gas - P_ATM)
