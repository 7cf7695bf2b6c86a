"""Exact integration of well-mixed thermal nodes and heat-exchanger effectiveness.

A node with heat capacity C (J/K), a through-flow m*cp (W/K) entering at T_in (degC), a
loss conductance UA (W/K) to T_amb and a heat input Q (W) follows a linear ODE, so over a
step of length dt it is integrated exactly (no stability limit on dt). The step-mean
temperature is returned too: it is the temperature of what left the node during the step
and of what was lost, so the energy balance of every step closes by construction:

    C * (T_new - T) = (m*cp * (T_in - T_mean) - UA * (T_mean - T_amb) + Q) * dt
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def mixed_node(t: float, c: float, mcp: float, t_in: float, ua: float, t_amb: float,
               q: float, dt: float) -> tuple[float, float]:
    """Advance one well-mixed node by dt seconds; return (T_new, T_mean) in degC.

    t: node temperature (degC); c: heat capacity (J/K); mcp: through-flow capacity rate
    (W/K); t_in: inlet temperature (degC); ua: loss conductance (W/K); t_amb: ambient
    (degC); q: heat added (W); dt: step (s).
    """
    g = mcp + ua
    if g <= 0.0:
        t_new = t + q * dt / c
        return t_new, 0.5 * (t + t_new)
    t_eq = (mcp * t_in + ua * t_amb + q) / g
    x = g * dt / c
    decay = math.exp(-x)
    mean_factor = -math.expm1(-x) / x
    delta = t - t_eq
    return t_eq + delta * decay, t_eq + delta * mean_factor


def mixed_nodes(t: np.ndarray, c: np.ndarray | float, mcp: np.ndarray,
                t_in: np.ndarray | float, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `mixed_node` without losses, for dt folded into ``c`` (c = C/dt, W/K).

    Returns (T_new, T_mean) arrays in degC. Nodes with no flow integrate Q directly.
    """
    g = np.maximum(mcp, 1e-9)
    t_eq = t_in + q / g
    x = g / c
    decay = np.exp(-x)
    mean_factor = -np.expm1(-x) / x
    delta = t - t_eq
    return t_eq + delta * decay, t_eq + delta * mean_factor


def counterflow_effectiveness(ntu: float, cr: float) -> float:
    """Effectiveness of a counterflow heat exchanger (-) from NTU and Cmin/Cmax."""
    if ntu <= 0.0:
        return 0.0
    if cr >= 0.999999:
        return ntu / (1.0 + ntu)
    e = math.exp(-ntu * (1.0 - cr))
    return (1.0 - e) / (1.0 - cr * e)


def crossflow_effectiveness(ntu: float, cr: float) -> float:
    """Effectiveness of a crossflow exchanger, both fluids unmixed (approximation, -)."""
    if ntu <= 0.0:
        return 0.0
    if cr <= 1e-9:
        return 1.0 - math.exp(-ntu)
    return 1.0 - math.exp((ntu ** 0.22 / cr) * (math.exp(-cr * ntu ** 0.78) - 1.0))


def exchanger_duty(ua: float, c_hot: float, c_cold: float, t_hot_in: float,
                   t_cold_in: float, counterflow: bool = True) -> float:
    """Heat flow from the hot to the cold stream (W) by effectiveness-NTU.

    ua: conductance (W/K); c_hot, c_cold: capacity rates (W/K); temperatures in degC.
    Negative when the 'hot' stream is the colder one.
    """
    c_min = min(c_hot, c_cold)
    if c_min <= 0.0 or ua <= 0.0:
        return 0.0
    c_max = max(c_hot, c_cold)
    ntu = ua / c_min
    cr = c_min / c_max
    eff = counterflow_effectiveness(ntu, cr) if counterflow else crossflow_effectiveness(ntu, cr)
    return eff * c_min * (t_hot_in - t_cold_in)


@dataclass(slots=True)
class Stream:
    """Water that left one node during the last step and enters the next one now."""

    mcp: float  # capacity rate, W/K
    temp: float  # degC

    def energy(self, dt: float) -> float:
        """Enthalpy carried during one step of dt seconds relative to 0 degC (J)."""
        return self.mcp * self.temp * dt
