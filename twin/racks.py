"""Direct-liquid-cooled server racks, all racks of a site held in numpy arrays."""

from __future__ import annotations

import numpy as np

from twin.site import Racks
from twin.thermal import mixed_nodes
from twin.water import CP_WATER


class RackArray:
    """IT power, cold-plate thermal mass, case temperature, throttling and shutdown.

    Every rack is a well-mixed coolant node of heat capacity C (J/K) fed by its CDU at the
    CDU supply temperature. Its liquid share of IT power heats the coolant; the rest goes
    to the room air. The case temperature is the coolant mean plus the case resistance
    times the liquid heat. Above ``throttle_case`` power is reduced in proportion; above
    ``shutdown_case`` the rack shuts down; it restarts at half power once its case is
    10 K below the throttle limit and at least ``RESTART_DELAY_S`` after the shutdown.
    """

    RESTART_DELAY_S = 600.0

    def __init__(self, spec: Racks, cdu_count: int, initial_temp: float) -> None:
        self.spec = spec
        n = spec.per_cdu * cdu_count
        self.n = n
        self.cdu_of = np.repeat(np.arange(cdu_count), spec.per_cdu)
        self.temp = np.full(n, initial_temp)  # coolant node, degC
        self.outlet = self.temp.copy()  # step-mean outlet, degC
        self.case = self.temp.copy()  # degC
        self.flow = np.full(n, spec.flow)  # kg/s
        self.power = np.zeros(n)  # IT electrical power, W
        self.liquid_heat = np.zeros(n)  # W
        self.throttle = np.ones(n)  # fraction of demanded power allowed
        self.on = np.ones(n, dtype=bool)
        self.powered = np.ones(n, dtype=bool)  # electrical supply present
        self.off_since = np.full(n, -np.inf)
        self.leaked = np.zeros(n)  # water spilled at each rack, kg
        self.capacity = spec.heat_capacity

    def step(self, t: float, dt: float, utilisation: np.ndarray, supply: np.ndarray,
             ) -> list[tuple[int, str]]:
        """Advance by dt (s) with per-rack supply temperatures (degC).

        Returns (rack index, 'shutdown' | 'restart') transitions for the event log.
        """
        s = self.spec
        demand = s.max_power * (s.idle_fraction + (1.0 - s.idle_fraction) * utilisation)
        np.multiply(demand, self.throttle * (self.on & self.powered), out=self.power)
        np.multiply(self.power, s.liquid_fraction, out=self.liquid_heat)
        mcp = self.flow * CP_WATER
        self.temp, self.outlet = mixed_nodes(self.temp, self.capacity / dt, mcp, supply,
                                             self.liquid_heat)
        self.case = self.outlet + s.case_resistance * self.liquid_heat
        over = self.case - s.throttle_case
        target = np.clip(1.0 - s.throttle_gain * over, 0.05, 1.0)
        # throttle down at once, recover at 1 % per second
        self.throttle = np.minimum(target, self.throttle + 0.01 * dt)
        events: list[tuple[int, str]] = []
        tripped = self.on & (self.case > s.shutdown_case)
        if tripped.any():
            self.on[tripped] = False
            self.off_since[tripped] = t
            events += [(int(i), "shutdown") for i in np.flatnonzero(tripped)]
        ready = (~self.on) & (self.case < s.throttle_case - 10.0) & (
            t - self.off_since >= self.RESTART_DELAY_S)
        if ready.any():
            self.on[ready] = True
            self.throttle[ready] = 0.5
            events += [(int(i), "restart") for i in np.flatnonzero(ready)]
        return events

    def air_heat(self) -> float:
        """Heat of all racks to the room air (W)."""
        return float(self.power.sum()) * (1.0 - self.spec.liquid_fraction)

    def stored_energy(self) -> float:
        """Heat stored in the rack nodes relative to 0 degC (J)."""
        return float(self.temp.sum()) * self.capacity
