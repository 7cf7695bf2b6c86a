"""twin.facility: pump curve and affinity laws, equal-percentage valves, loop balance, mains.

References: pump affinity laws Q ~ n, H ~ n^2, P ~ n^3 (Karassik et al., Pump Handbook,
4th ed., ch. 2); equal-percentage characteristic Kv = Kvs * R^(h - 1) and the Kv
definition (m3/h of water at 1 bar, IEC 60534-1); tanks-in-series residence time
distribution (Levenspiel, Chemical Reaction Engineering, 3rd ed., ch. 14): N mixed
segments of total residence time tau answer a step with the Erlang-N distribution
F(t) = 1 - exp(-N t / tau) * sum_{k<N} (N t / tau)^k / k!, mean delay tau = mass / flow.
"""

from __future__ import annotations

import math

import pytest

from twin.facility import VALVE_RANGEABILITY, Hydraulics, Main, valve_conductance
from twin.site import FacilityLoop
from twin.water import CP_WATER, P_ATM, RHO_WATER

KVS = 60.0  # m3/h at 1 bar


def kg_s_at_1_bar(kv: float) -> float:
    """Mass flow of water (kg/s) through a valve of this Kv at 1 bar, from the definition."""
    return kv * RHO_WATER / 3600.0


# -- valves -------------------------------------------------------------------------------

def test_valve_fully_open_passes_its_kvs_at_one_bar() -> None:
    flow = valve_conductance(KVS, 1.0) * math.sqrt(1e5)
    assert flow == pytest.approx(kg_s_at_1_bar(KVS), rel=1e-12)


def test_equal_percentage_characteristic() -> None:
    assert VALVE_RANGEABILITY == 50.0  # the module's stated rangeability
    half = valve_conductance(KVS, 0.5) * math.sqrt(1e5)
    assert half == pytest.approx(kg_s_at_1_bar(KVS * 50.0 ** (0.5 - 1.0)), rel=1e-12)
    # equal strokes give equal percentage changes of flow
    ratios = [valve_conductance(KVS, h + 0.1) / valve_conductance(KVS, h)
              for h in (0.1, 0.3, 0.5, 0.8)]
    assert ratios == [pytest.approx(50.0 ** 0.1, rel=1e-12)] * 4


def test_valve_shuts_tight_below_its_rangeable_stroke() -> None:
    assert valve_conductance(KVS, 0.0) == 0.0
    assert valve_conductance(KVS, -0.1) == 0.0
    at_2 = valve_conductance(KVS, 0.02)
    assert valve_conductance(KVS, 0.01) == pytest.approx(0.5 * at_2, rel=1e-12)
    assert valve_conductance(KVS, 0.0199999999) == pytest.approx(at_2, rel=1e-6)


# -- pumps and loop -----------------------------------------------------------------------

def at_speed(hyd: Hydraulics, speed: float) -> None:
    hyd.speed_cmd.auto = speed
    for p in hyd.pumps:
        p.speed.position = speed


def test_pump_curve_at_rated_flow_and_near_shut_off() -> None:
    spec = FacilityLoop()
    hyd = Hydraulics(spec, KVS, 4)
    at_speed(hyd, 1.0)
    n, h0, q_rated = spec.pumps, spec.pump_head, spec.pump_flow
    # branch conductance that makes the loop pass the rated flow per pump at full speed:
    # H0 - k (Q/n)^2 = (R + 1/g^2) Q^2 at Q = n * q_rated, with the pump's k and loop R
    q = n * q_rated
    g = 1.0 / math.sqrt(h0 / q ** 2 - hyd.k_pump / n ** 2 - hyd.r_fixed)
    flows = hyd.solve([g / 4] * 4, 1.0)
    assert hyd.flow == pytest.approx(q, rel=1e-12)
    # the model states 60 % of the shut-off head at the rated flow
    assert hyd.head == pytest.approx(0.6 * h0, rel=1e-12)
    assert sum(flows) == pytest.approx(q, rel=1e-12)
    # towards zero flow the head rises to the shut-off head H0 * s^2
    at_speed(hyd, 0.7)
    hyd.solve([1e-9] * 4, 1.0)
    assert hyd.flow < 1e-3
    assert hyd.head == pytest.approx(h0 * 0.49, rel=1e-6)
    assert hyd.dp_branches == pytest.approx(h0 * 0.49, rel=1e-6)


def test_closed_branches_see_the_shut_off_head() -> None:
    spec = FacilityLoop()
    hyd = Hydraulics(spec, KVS, 4)
    at_speed(hyd, 0.7)
    flows = hyd.solve([0.0] * 4, 1.0)
    assert flows == [0.0] * 4 and hyd.flow == 0.0
    # running pumps against shut valves: the whole shut-off head is across the branches
    assert hyd.head == pytest.approx(spec.pump_head * 0.49, rel=1e-12)
    assert hyd.dp_branches == pytest.approx(spec.pump_head * 0.49, rel=1e-12)
    for p in hyd.pumps:
        p.enable.auto = 0.0
    for _ in range(30):  # stopped pumps ramp down to standstill
        hyd.solve([0.0] * 4, 1.0)
    assert hyd.head == 0.0 and hyd.dp_branches == 0.0


def test_affinity_laws_with_speed() -> None:
    spec = FacilityLoop()
    hyd = Hydraulics(spec, KVS, 4)
    g = [valve_conductance(KVS, x) for x in (0.3, 0.5, 0.7, 0.9)]
    results = {}
    for s in (0.5, 0.8, 1.0):
        at_speed(hyd, s)
        hyd.solve(g, 1.0)
        results[s] = (hyd.flow, hyd.head, hyd.power)
    q1, h1, p1 = results[1.0]
    for s in (0.5, 0.8):
        q, h, p = results[s]
        assert q / q1 == pytest.approx(s, rel=1e-12)
        assert h / h1 == pytest.approx(s ** 2, rel=1e-12)
        assert p / p1 == pytest.approx(s ** 3, rel=1e-12)


def test_loop_balance_branch_flows_and_pump_power() -> None:
    spec = FacilityLoop()
    hyd = Hydraulics(spec, KVS, 4)
    at_speed(hyd, 0.9)
    g = [valve_conductance(KVS, x) for x in (0.2, 0.5, 0.5, 1.0)]
    flows = hyd.solve(g, 1.0)
    # mass: the branches add up to the pump flow; each branch passes g * sqrt(dp)
    assert sum(flows) == pytest.approx(hyd.flow, rel=1e-12)
    for q, gi in zip(flows, g, strict=True):
        assert q == pytest.approx(gi * math.sqrt(hyd.dp_branches), rel=1e-12)
    # the pump head is used up by the fixed resistance and the branches
    assert hyd.head == pytest.approx(hyd.r_fixed * hyd.flow ** 2 + hyd.dp_branches, rel=1e-12)
    # electrical power = volume flow * head / efficiency
    assert hyd.power == pytest.approx(hyd.flow / RHO_WATER * hyd.head / spec.pump_efficiency,
                                      rel=1e-12)


def test_one_pump_of_two_gives_less_than_the_full_flow() -> None:
    spec = FacilityLoop(pumps=2)
    hyd = Hydraulics(spec, KVS, 4)
    g = [valve_conductance(KVS, 0.7)] * 4
    at_speed(hyd, 1.0)
    hyd.solve(g, 1.0)
    both = hyd.flow
    hyd.pumps[1].tripped = True
    hyd.pumps[1].speed.position = 0.0
    hyd.solve(g, 1.0)
    assert 0.5 * both < hyd.flow < both  # parallel pumps on a system curve


def test_facility_vessel_pressure_and_makeup_threshold() -> None:
    spec = FacilityLoop(fill_pressure=3.0e5, vessel_gas_volume=1.0, volume=15.0)
    hyd = Hydraulics(spec, KVS, 4)
    assert hyd.pressure == pytest.approx(3.0e5, rel=1e-12)
    hyd.inventory -= 100.0  # kg lost
    expected = (3.0e5 + P_ATM) * 1.0 / (1.0 + 100.0 / RHO_WATER) - P_ATM
    assert hyd.pressure == pytest.approx(expected, rel=1e-12)
    assert hyd.pressure > 0.8 * spec.fill_pressure
    assert hyd.step_inventory(1.0) == 0.0  # above 80 % of fill pressure: no make-up
    hyd.leak_rate = 2.0
    steps = 0
    while hyd.pressure >= 0.8 * spec.fill_pressure:
        steps += 1
        assert hyd.step_inventory(1.0) == -2.0
    assert steps > 10
    assert hyd.step_inventory(1.0) == pytest.approx(spec.makeup_flow - 2.0, rel=1e-12)


# -- mains --------------------------------------------------------------------------------

def erlang_cdf(t: float, tau: float, n: int) -> float:
    x = n * t / tau
    return 1.0 - math.exp(-x) * sum(x ** k / math.factorial(k) for k in range(n))


def test_main_delays_a_step_by_its_residence_time() -> None:
    mass, flow, n, dt = 5000.0, 25.0, 8, 0.25
    tau = mass / flow  # 200 s
    main = Main(mass, 0.0, n, 20.0)
    mcp = flow * CP_WATER
    times, response = [], []
    t = 0.0
    while t < 6 * tau:
        out = main.step(mcp, 30.0, 20.0, 0.0, dt)
        t += dt
        times.append(t - dt / 2)
        response.append((out - 20.0) / 10.0)
    # the mean delay (first moment of the response) is volume / flow
    mean_delay = sum((1.0 - f) * dt for f in response)
    assert mean_delay == pytest.approx(tau, rel=0.01)
    # and the shape is the tanks-in-series answer
    worst = max(abs(f - erlang_cdf(tm, tau, n)) for tm, f in zip(times, response, strict=True))
    assert worst < 0.01
    quarter = times.index(min(times, key=lambda x: abs(x - 0.25 * tau)))
    assert response[quarter] < 0.01  # nothing arrives early


def test_main_heat_loss_at_steady_state() -> None:
    mass, ua, n, flow = 5000.0, 150.0, 8, 20.0
    main = Main(mass, ua, n, 60.0)
    mcp = flow * CP_WATER
    for _ in range(200):
        out = main.step(mcp, 60.0, 20.0, 0.0, 60.0)
    # each segment: T_i - T_amb = (T_{i-1} - T_amb) * mcp / (mcp + UA/N)
    expected = 20.0 + 40.0 * (mcp / (mcp + ua / n)) ** n
    assert out == pytest.approx(expected, rel=1e-12)
    # close to the plug-flow figure exp(-UA / mcp) of a buried pipe
    assert (out - 20.0) / 40.0 == pytest.approx(math.exp(-ua / mcp), rel=1e-5)
    # the loss is what the water gave up
    assert main.loss == pytest.approx(mcp * (60.0 - out), rel=1e-9)


@pytest.mark.parametrize("dt", [1.0, 30.0])
def test_main_step_closes_its_energy_balance(dt: float) -> None:
    main = Main(5000.0, 150.0, 8, 35.0)
    mcp = 20.0 * CP_WATER
    before = main.stored_energy()
    out = main.step(mcp, 45.0, 20.0, 2e4, dt)
    residual = (mcp * (45.0 - out) + 2e4 - main.loss) * dt - (main.stored_energy() - before)
    assert abs(residual) <= 1e-12 * mcp * 10.0 * dt
