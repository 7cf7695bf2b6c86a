"""twin.thermal against the analytical solutions it claims to integrate.

References: the first-order lumped node (Incropera et al., Fundamentals of Heat and Mass
Transfer, 7th ed., sec. 5.2-5.3); effectiveness-NTU relations (ibid., Table 11.3,
eqs. 11.29a/11.29b counterflow, 11.32 crossflow with both fluids unmixed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from twin.thermal import (
    Stream,
    counterflow_effectiveness,
    crossflow_effectiveness,
    exchanger_duty,
    mixed_node,
    mixed_nodes,
)

# a node: 10 t of water-equivalent, through-flow, losses and a heater (SI: J/K, W/K, degC, W)
C, MCP, T_IN, UA, T_AMB, Q = 4.18e7, 8000.0, 30.0, 600.0, 12.0, 1.5e5


def analytic_node(t0: float, t: float) -> float:
    """T(t) of C dT/dt = MCP (T_IN - T) - UA (T - T_AMB) + Q, solved by hand."""
    g = MCP + UA
    t_eq = (MCP * T_IN + UA * T_AMB + Q) / g
    return t_eq + (t0 - t_eq) * math.exp(-g * t / C)


def analytic_mean(t0: float, dt: float) -> float:
    """Time average of analytic_node over [0, dt]: closed-form integral of the exponential."""
    g = MCP + UA
    t_eq = (MCP * T_IN + UA * T_AMB + Q) / g
    tau = C / g
    return t_eq + (t0 - t_eq) * tau / dt * (1.0 - math.exp(-dt / tau))


@pytest.mark.parametrize("dt", [1.0, 60.0, 3600.0, 1e6])
def test_mixed_node_is_the_exact_exponential_approach(dt: float) -> None:
    new, mean = mixed_node(70.0, C, MCP, T_IN, UA, T_AMB, Q, dt)
    assert new == pytest.approx(analytic_node(70.0, dt), rel=1e-12)
    assert mean == pytest.approx(analytic_mean(70.0, dt), rel=1e-12)


def test_mixed_node_mean_is_the_time_average_of_the_trajectory() -> None:
    dt = 5000.0
    times = np.linspace(0.0, dt, 200_001)
    fine = np.vectorize(lambda t: analytic_node(70.0, t))(times)
    quadrature = np.trapezoid(fine, times) / dt
    _, mean = mixed_node(70.0, C, MCP, T_IN, UA, T_AMB, Q, dt)
    assert mean == pytest.approx(quadrature, rel=1e-9)


def test_mixed_node_steps_compose_without_step_size_error() -> None:
    one, _ = mixed_node(70.0, C, MCP, T_IN, UA, T_AMB, Q, 600.0)
    t = 70.0
    for _ in range(600):
        t, _ = mixed_node(t, C, MCP, T_IN, UA, T_AMB, Q, 1.0)
    assert t == pytest.approx(one, rel=1e-12)


@pytest.mark.parametrize("dt", [0.5, 30.0, 7200.0])
def test_mixed_node_closes_its_energy_balance(dt: float) -> None:
    # the balance stated in the module docstring, every term evaluated independently
    new, mean = mixed_node(70.0, C, MCP, T_IN, UA, T_AMB, Q, dt)
    stored = C * (new - 70.0)
    flows = (MCP * (T_IN - mean) - UA * (mean - T_AMB) + Q) * dt
    scale = abs(MCP * (T_IN - mean) * dt) + abs(Q * dt)
    assert abs(stored - flows) <= 1e-12 * scale


def test_mixed_node_without_flow_integrates_the_heat_directly() -> None:
    new, mean = mixed_node(40.0, C, 0.0, 99.0, 0.0, -20.0, Q, 100.0)
    assert new == pytest.approx(40.0 + Q * 100.0 / C, rel=1e-15)
    assert mean == pytest.approx(0.5 * (40.0 + new), rel=1e-15)


def test_mixed_nodes_agrees_with_the_scalar_node_without_losses() -> None:
    dt = 2.0
    temps = np.array([25.0, 40.0, 55.0])
    caps = np.array([6e4, 1e5, 3e5])
    mcp = np.array([500.0, 2090.0, 4180.0])
    heat = np.array([0.0, 2e4, 5e3])
    new, mean = mixed_nodes(temps, caps / dt, mcp, 30.0, heat)
    for i in range(3):
        ref_new, ref_mean = mixed_node(temps[i], caps[i], mcp[i], 30.0, 0.0, 0.0, heat[i], dt)
        assert new[i] == pytest.approx(ref_new, rel=1e-12)
        assert mean[i] == pytest.approx(ref_mean, rel=1e-12)


# -- effectiveness-NTU -----------------------------------------------------------------

def incropera_counterflow(ntu: float, cr: float) -> float:
    """Incropera Table 11.3, eq. 11.29a (Cr < 1) and 11.29b (Cr = 1)."""
    if cr == 1.0:
        return ntu / (1.0 + ntu)
    e = math.exp(-ntu * (1.0 - cr))
    return (1.0 - e) / (1.0 - cr * e)


def numerical_counterflow(ua: float, c_hot: float, c_cold: float, t_hot_in: float,
                          t_cold_in: float, n: int = 4000) -> tuple[float, float]:
    """Outlets (hot, cold) of a counterflow exchanger from its ODEs, by shooting with RK4.

    Along x in [0, 1] the hot stream flows forward and the cold one backward:
    c_hot dTh/dx = -ua (Th - Tc), c_cold dTc/dx = -ua (Th - Tc); Th(0) and Tc(1) given.
    The system is linear, so two shots on Tc(0) determine it exactly.
    """
    def shoot(tc0: float) -> tuple[float, float]:
        th, tc, h = t_hot_in, tc0, 1.0 / n
        def f(a: float, b: float) -> tuple[float, float]:
            return -ua * (a - b) / c_hot, -ua * (a - b) / c_cold
        for _ in range(n):
            k1 = f(th, tc)
            k2 = f(th + 0.5 * h * k1[0], tc + 0.5 * h * k1[1])
            k3 = f(th + 0.5 * h * k2[0], tc + 0.5 * h * k2[1])
            k4 = f(th + h * k3[0], tc + h * k3[1])
            th += h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            tc += h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        return th, tc
    a, b = t_cold_in, t_hot_in
    _, ea = shoot(a)
    _, eb = shoot(b)
    tc0 = a + (t_cold_in - ea) * (b - a) / (eb - ea)
    th1, tc1 = shoot(tc0)
    assert tc1 == pytest.approx(t_cold_in, abs=1e-9)
    return th1, tc0


@pytest.mark.parametrize("ntu", [0.1, 0.5, 1.0, 3.0, 8.0])
@pytest.mark.parametrize("cr", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_counterflow_effectiveness_is_the_textbook_relation(ntu: float, cr: float) -> None:
    assert counterflow_effectiveness(ntu, cr) == pytest.approx(incropera_counterflow(ntu, cr),
                                                               rel=1e-12)


def test_counterflow_effectiveness_is_continuous_at_balanced_flow() -> None:
    for ntu in (0.3, 2.0, 10.0):
        limit = ntu / (1.0 + ntu)
        for cr in (0.99999, 0.9999999, 1.0):
            assert counterflow_effectiveness(ntu, cr) == pytest.approx(limit, rel=2e-5)
        assert counterflow_effectiveness(ntu, 0.0) == pytest.approx(1.0 - math.exp(-ntu),
                                                                    rel=1e-12)


def test_counterflow_effectiveness_has_the_physical_bounds() -> None:
    assert counterflow_effectiveness(0.0, 0.5) == 0.0
    ntus = np.linspace(0.01, 20.0, 200)
    for cr in (0.0, 0.5, 1.0):
        eff = np.array([counterflow_effectiveness(x, cr) for x in ntus])
        assert np.all(np.diff(eff) > 0) and np.all((eff > 0) & (eff < 1.0))
    # large NTU: a counterflow exchanger approaches eps = 1 even at Cr = 1
    assert counterflow_effectiveness(1e4, 1.0) > 0.9998


@pytest.mark.parametrize(("ntu", "cr"), [(0.5, 0.3), (1.0, 1.0), (3.0, 0.7)])
def test_crossflow_is_the_incropera_correlation_and_below_counterflow(ntu: float,
                                                                      cr: float) -> None:
    expected = 1.0 - math.exp((1.0 / cr) * ntu ** 0.22 * (math.exp(-cr * ntu ** 0.78) - 1.0))
    got = crossflow_effectiveness(ntu, cr)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got < counterflow_effectiveness(ntu, cr)  # counterflow is the best arrangement
    assert crossflow_effectiveness(ntu, 0.0) == pytest.approx(1.0 - math.exp(-ntu), rel=1e-12)


@pytest.mark.parametrize(("ua", "c_hot", "c_cold"),
                         [(80e3, 20_900.0, 20_900.0), (5e4, 3e4, 1e4), (2e4, 8e3, 6e4)])
def test_exchanger_duty_matches_the_solved_exchanger_odes(ua: float, c_hot: float,
                                                          c_cold: float) -> None:
    th_out, tc_out = numerical_counterflow(ua, c_hot, c_cold, 52.0, 28.0)
    q_hot = c_hot * (52.0 - th_out)
    q_cold = c_cold * (tc_out - 28.0)
    assert q_hot == pytest.approx(q_cold, rel=1e-12)  # the ODEs conserve energy
    assert exchanger_duty(ua, c_hot, c_cold, 52.0, 28.0) == pytest.approx(q_hot, rel=1e-9)


def test_exchanger_duty_is_antisymmetric_and_zero_without_flow_or_area() -> None:
    q = exchanger_duty(5e4, 3e4, 1e4, 60.0, 20.0)
    assert q > 0
    assert exchanger_duty(5e4, 1e4, 3e4, 20.0, 60.0) == pytest.approx(-q, rel=1e-15)
    assert exchanger_duty(5e4, 0.0, 1e4, 60.0, 20.0) == 0.0
    assert exchanger_duty(0.0, 3e4, 1e4, 60.0, 20.0) == 0.0
    # never more than the thermodynamic maximum Cmin * (Th,in - Tc,in)
    assert exchanger_duty(1e9, 3e4, 1e4, 60.0, 20.0) <= 1e4 * 40.0


def test_stream_energy_is_enthalpy_flow_times_time() -> None:
    s = Stream(mcp=4180.0 * 5.0, temp=42.0)
    assert s.energy(2.0) == pytest.approx(5.0 * 4180.0 * 42.0 * 2.0, rel=1e-15)
