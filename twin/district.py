"""District-heating side: stratified storage tank, network draw and peak boiler.

The heat pumps' condensers take water from the bottom of the tank and return it to the
top. The network draws from the top; a peak boiler lifts it to the outdoor-reset supply
setpoint, or a shunt mixes return water in when the tank is hotter than needed. The
network returns at its return temperature into the bottom. Layers exchange water by
upwind advection (explicit, with sub-steps that keep each layer's Courant number <= 0.5),
so every joule leaving one layer enters the next.
"""

from __future__ import annotations

import math

from twin.points import Command
from twin.site import District
from twin.water import CP_WATER, RHO_WATER


class DistrictSide:
    """Storage, network and boiler; powers in W, temperatures in degC."""

    def __init__(self, spec: District) -> None:
        self.spec = spec
        st = spec.storage
        self.layer_mass = st.volume * RHO_WATER / st.layers
        self.layers = [st.initial_temperature] * st.layers  # top first
        self.boiler_enable = Command(1.0, 1.0)
        self.demand = 0.0
        self.supply_setpoint = spec.supply_at_mild
        self.supply_temp = spec.supply_at_mild
        self.return_temp = spec.return_temperature
        self.return_offset = 0.0  # fault: network returns hotter (K)
        self.demand_factor = 1.0  # fault: demand drop (0 = network lost)
        self.network_flow = 0.0  # kg/s
        self.tank_draw = 0.0  # kg/s through the tank to the network
        self.delivered = 0.0  # W
        self.boiler_heat = 0.0  # W into the water
        self.boiler_fuel = 0.0  # W of fuel
        self.tank_loss = 0.0  # W

    @property
    def top(self) -> float:
        """Top layer temperature (degC)."""
        return self.layers[0]

    @property
    def bottom(self) -> float:
        """Bottom layer temperature (degC)."""
        return self.layers[-1]

    def state_of_charge(self, hot: float, cold: float) -> float:
        """Fraction of the tank's heat above ``cold`` relative to all layers at ``hot``."""
        span = hot - cold
        if span <= 0:
            return 0.0
        return sum(min(1.0, max(0.0, (t - cold) / span)) for t in self.layers) / len(self.layers)

    def step(self, demand: float, setpoint: float, hp_flow: float, hp_temp: float,
             dt: float) -> None:
        """Advance by dt with the network demand (W), supply setpoint (degC) and the heat
        pumps' condenser flow (kg/s) returning to the top at hp_temp (degC)."""
        spec = self.spec
        demand *= self.demand_factor
        self.demand = demand
        self.supply_setpoint = setpoint
        t_ret = spec.return_temperature + self.return_offset
        self.return_temp = t_ret
        lift = max(1.0, setpoint - t_ret)
        m_net = demand / (CP_WATER * lift)
        self.network_flow = m_net
        top = self.top
        if top >= setpoint and top > t_ret:
            m_tank = m_net * (setpoint - t_ret) / (top - t_ret)
            boiler = 0.0
            supply = setpoint
        else:
            m_tank = m_net
            cap = spec.boiler.capacity if self.boiler_enable.value >= 0.5 else 0.0
            boiler = min(cap, m_net * CP_WATER * max(0.0, setpoint - top))
            supply = top + boiler / (m_net * CP_WATER) if m_net > 0 else top
        self.tank_draw = m_tank
        self.boiler_heat = boiler
        self.boiler_fuel = boiler / spec.boiler.efficiency
        self.supply_temp = supply
        self.delivered = m_net * CP_WATER * (supply - t_ret)
        self._advect(hp_flow, hp_temp, m_tank, t_ret, dt)

    def _advect(self, m_hp: float, t_hp: float, m_net: float, t_ret: float, dt: float) -> None:
        st = self.spec.storage
        n = len(self.layers)
        ua = st.ua / n
        down = m_hp - m_net  # kg/s flowing down through the layer interfaces
        courant = (max(m_hp, m_net) + abs(down)) * dt / self.layer_mass
        subs = max(1, math.ceil(courant / 0.5))
        h = dt / subs
        c = self.layer_mass * CP_WATER
        loss_total = 0.0
        layers = self.layers
        top0, bottom0 = layers[0], layers[-1]  # what leaves the tank during this step
        for _ in range(subs):
            new = layers[:]
            # inflows: heat pumps into the top, network return into the bottom
            new[0] += (m_hp * CP_WATER * t_hp - m_net * CP_WATER * top0) * h / c
            new[-1] += (m_net * CP_WATER * t_ret - m_hp * CP_WATER * bottom0) * h / c
            for i in range(n - 1):
                # flow across the interface between layer i (above) and i+1 (below)
                upwind = layers[i] if down >= 0 else layers[i + 1]
                q = down * CP_WATER * upwind
                new[i] -= q * h / c
                new[i + 1] += q * h / c
            for i in range(n):
                loss = ua * (layers[i] - st.ambient)
                loss_total += loss * h
                new[i] -= loss * h / c
            # buoyancy: a hotter layer below an upper one mixes with it
            for i in range(n - 1):
                if new[i + 1] > new[i]:
                    mean = 0.5 * (new[i] + new[i + 1])
                    new[i] = new[i + 1] = mean
            layers = new
        self.layers = layers
        self.tank_loss = loss_total / dt

    def stored_energy(self) -> float:
        """Heat in the tank relative to 0 degC (J)."""
        return self.layer_mass * CP_WATER * sum(self.layers)
