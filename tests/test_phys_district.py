"""twin.district and the district curves of twin.profiles: outdoor reset, demand, storage
energy balance, shunt and peak boiler.

The outdoor-reset (weather-compensated) supply curve is linear between its design point and
the heating limit and flat outside (e.g. Frederiksen & Werner, District Heating and
Cooling, 2013, ch. 6); the space-heating demand is proportional to the heating degree
difference below the heating limit (degree-day method, ibid.).
"""

from __future__ import annotations

import itertools

import pytest

from twin.district import DistrictSide
from twin.profiles import heat_demand, supply_setpoint
from twin.site import District, Storage
from twin.water import CP_WATER, RHO_WATER

D = District()  # 90 degC at -12 degC, 65 degC at 15 degC, return 45 degC


@pytest.mark.parametrize(("t_out", "expected"), [
    (-12.0, 90.0), (15.0, 65.0), (1.5, 77.5), (-25.0, 90.0), (30.0, 65.0),
    (-12.0 + 27.0 * 0.2, 90.0 - 25.0 * 0.2)])
def test_outdoor_reset_curve_at_its_documented_points(t_out: float, expected: float) -> None:
    assert supply_setpoint(D, t_out) == pytest.approx(expected, rel=1e-12)


def test_heat_demand_is_degree_proportional_space_heating_plus_hot_water() -> None:
    for hour in (3.0, 7.5, 19.0):
        at_limit = heat_demand(D, D.heating_limit, hour)
        # above the heating limit only hot water is left
        assert heat_demand(D, 25.0, hour) == pytest.approx(at_limit, rel=1e-12)
        # at the design outdoor temperature the space heating is the design demand
        assert heat_demand(D, D.design_outdoor, hour) - at_limit == pytest.approx(
            D.design_demand, rel=1e-12)
        # halfway in temperature, half the space heating
        mid = 0.5 * (D.design_outdoor + D.heating_limit)
        assert heat_demand(D, mid, hour) - at_limit == pytest.approx(0.5 * D.design_demand,
                                                                     rel=1e-12)
    # hot water: a morning peak at 7:30 above the night base
    assert heat_demand(D, 20.0, 7.5) > 1.3 * heat_demand(D, 20.0, 3.0)
    assert heat_demand(D, 20.0, 3.0) == pytest.approx(0.8 * D.hot_water_base, rel=1e-3)
    scaled = District(demand_scale=0.5)
    assert heat_demand(scaled, 0.0, 12.0) == pytest.approx(0.5 * heat_demand(D, 0.0, 12.0))


def tank(temp: float, **storage: float) -> DistrictSide:
    spec = District(storage=Storage(initial_temperature=temp, **storage))
    return DistrictSide(spec)


def test_hot_tank_shunts_return_water_and_burns_nothing() -> None:
    side = tank(80.0)
    side.step(2.0e6, 70.0, 0.0, 70.0, 1.0)
    m_net = 2.0e6 / (CP_WATER * (70.0 - 45.0))
    assert side.network_flow == pytest.approx(m_net, rel=1e-12)
    assert side.boiler_heat == 0.0 and side.boiler_fuel == 0.0
    assert side.supply_temp == 70.0
    # mixing: only enough tank water to reach 70 degC; the tank supplies the whole demand
    assert side.tank_draw * CP_WATER * (80.0 - 45.0) == pytest.approx(2.0e6, rel=1e-12)
    assert side.delivered == pytest.approx(2.0e6, rel=1e-12)


def test_peak_boiler_covers_the_shortfall_only() -> None:
    side = tank(55.0)
    demand, setpoint = 2.0e6, 75.0
    side.step(demand, setpoint, 0.0, 70.0, 1.0)
    m_net = demand / (CP_WATER * (setpoint - 45.0))
    from_tank = m_net * CP_WATER * (55.0 - 45.0)
    assert side.tank_draw == pytest.approx(m_net, rel=1e-12)
    assert side.boiler_heat == pytest.approx(demand - from_tank, rel=1e-12)
    assert side.boiler_fuel == pytest.approx(side.boiler_heat / D.boiler.efficiency,
                                             rel=1e-12)
    assert side.delivered == pytest.approx(demand, rel=1e-12)
    assert side.supply_temp == pytest.approx(setpoint, rel=1e-12)


def test_boiler_at_capacity_or_disabled_leaves_demand_unmet() -> None:
    spec = District(boiler={"capacity": 0.5e6})
    side = DistrictSide(spec)  # tank at 55 degC
    side.step(2.0e6, 75.0, 0.0, 70.0, 1.0)
    m_net = 2.0e6 / (CP_WATER * 30.0)
    assert side.boiler_heat == 0.5e6
    assert side.delivered == pytest.approx(m_net * CP_WATER * 10.0 + 0.5e6, rel=1e-12)
    assert side.supply_temp < 75.0
    side.boiler_enable.auto = 0.0
    side.step(2.0e6, 75.0, 0.0, 70.0, 1.0)
    assert side.boiler_heat == 0.0
    assert side.supply_temp == pytest.approx(side.top, abs=2.0)


@pytest.mark.parametrize(("hp_flow", "demand", "dt"),
                         [(10.0, 1.0e6, 1.0), (40.0, 0.2e6, 60.0), (2.0, 3.0e6, 600.0)])
def test_storage_step_closes_its_energy_balance(hp_flow: float, demand: float,
                                                dt: float) -> None:
    side = tank(55.0, volume=50.0, layers=8, ua=400.0)
    side.layers = [70.0, 66.0, 60.0, 58.0, 52.0, 50.0, 48.0, 46.0]
    before = side.stored_energy()
    top0, bottom0 = side.top, side.bottom
    side.step(demand, 70.0, hp_flow, 72.0, dt)
    flows = (hp_flow * CP_WATER * (72.0 - bottom0)
             + side.tank_draw * CP_WATER * (side.return_temp - top0)
             - side.tank_loss) * dt
    change = side.stored_energy() - before
    assert side.tank_loss > 0
    assert abs(change - flows) <= 1e-12 * (abs(flows) + hp_flow * CP_WATER * 72.0 * dt)


def test_tank_loss_is_ua_times_the_excess_over_ambient() -> None:
    side = tank(60.0, ua=100.0, ambient=10.0)
    side.step(0.0, 70.0, 0.0, 60.0, 1.0)
    assert side.tank_loss == pytest.approx(100.0 * 50.0, rel=1e-12)
    mass = side.spec.storage.volume * RHO_WATER
    assert side.top == pytest.approx(60.0 - 100.0 * 50.0 / (mass * CP_WATER), rel=1e-12)


def test_charging_keeps_the_tank_stratified_and_counts_its_charge() -> None:
    side = tank(45.0, volume=20.0, layers=10)
    assert side.state_of_charge(75.0, 45.0) == 0.0
    for _ in range(600):
        side.step(0.3e6, 70.0, 8.0, 75.0, 5.0)
        # buoyancy mixing (one pass per sub-step) leaves no inversion above 1 mK
        assert all(a >= b - 1e-3 for a, b in itertools.pairwise(side.layers))
    assert side.top > 70.0 and side.bottom < side.top
    soc = side.state_of_charge(75.0, 45.0)
    assert 0.0 < soc <= 1.0
    side.layers = [75.0] * 10
    assert side.state_of_charge(75.0, 45.0) == 1.0
