"""twin.racks: coolant heat-up m cp dT, case temperature, throttling and shutdown thresholds.

Figures are the site defaults (twin.site.Racks): 25 kW racks, 80 % to liquid, 0.5 kg/s of
coolant, case resistance 0.8 K/kW, throttling above 85 degC case, shutdown above 100 degC.
"""

from __future__ import annotations

import numpy as np
import pytest

from twin.racks import RackArray
from twin.site import Racks
from twin.water import CP_WATER

SPEC = Racks(per_cdu=3)


def settle(racks: RackArray, supply: float, utilisation: float, seconds: float,
           t0: float = 0.0, dt: float = 1.0) -> list[tuple[int, str]]:
    events = []
    u = np.full(racks.n, utilisation)
    s = np.full(racks.n, supply)
    for k in range(int(seconds / dt)):
        events += racks.step(t0 + k * dt, dt, u, s)
    return events


def test_steady_coolant_rise_and_case_temperature() -> None:
    racks = RackArray(SPEC, cdu_count=1, initial_temp=40.0)
    settle(racks, 40.0, 0.75, 600.0)
    power = 25e3 * (0.3 + 0.7 * 0.75)
    liquid = 0.8 * power
    assert racks.power == pytest.approx(np.full(3, power), rel=1e-12)
    assert racks.air_heat() == pytest.approx(3 * 0.2 * power, rel=1e-12)
    # coolant: Q = m cp (T_out - T_in); case: coolant plus R * Q
    outlet = 40.0 + liquid / (0.5 * CP_WATER)
    assert racks.outlet == pytest.approx(np.full(3, outlet), rel=1e-9)
    assert racks.case == pytest.approx(np.full(3, outlet + 0.0008 * liquid), rel=1e-9)
    assert (racks.throttle == 1.0).all() and racks.on.all()


def test_rack_node_energy_balance_of_one_step() -> None:
    racks = RackArray(SPEC, cdu_count=1, initial_temp=30.0)
    before = racks.stored_energy()
    dt = 2.0
    racks.step(0.0, dt, np.array([0.2, 0.6, 1.0]), np.full(3, 40.0))
    carried = float((racks.flow * CP_WATER * (racks.outlet - 40.0)).sum())
    residual = (racks.liquid_heat.sum() - carried) * dt - (racks.stored_energy() - before)
    assert abs(residual) <= 1e-12 * racks.liquid_heat.sum() * dt


def supply_for_case(case: float, utilisation: float = 1.0) -> float:
    """Supply temperature that puts the case at ``case`` unthrottled at steady state."""
    liquid = 0.8 * 25e3 * (0.3 + 0.7 * utilisation)
    return case - liquid / (0.5 * CP_WATER) - 0.0008 * liquid


def test_no_throttling_just_below_the_threshold_and_some_just_above() -> None:
    below = RackArray(SPEC, cdu_count=1, initial_temp=60.0)
    settle(below, supply_for_case(84.5), 1.0, 900.0)
    assert (below.throttle == 1.0).all() and below.case.max() < 85.0
    above = RackArray(SPEC, cdu_count=1, initial_temp=60.0)
    settle(above, supply_for_case(86.0), 1.0, 900.0)
    assert (above.throttle < 1.0).all() and above.on.all()


def test_throttled_racks_settle_where_power_matches_the_proportional_law() -> None:
    racks = RackArray(SPEC, cdu_count=1, initial_temp=60.0)
    settle(racks, supply_for_case(95.0), 1.0, 1800.0)
    allowed = racks.throttle.copy()
    settle(racks, supply_for_case(95.0), 1.0, 1.0)
    assert racks.power == pytest.approx(25e3 * allowed, rel=1e-12)  # the step obeys it
    over = racks.case - 85.0
    assert (over > 0).all() and (racks.case < 100.0).all()
    # reduced in proportion: allowed fraction = 1 - gain * (case - throttle limit); the
    # throttle chatters by about 1 % around it (case resistance * liquid power * gain > 1)
    assert racks.throttle == pytest.approx(1.0 - 0.1 * over, abs=0.02)
    assert racks.throttle.max() < 0.8


def test_shutdown_above_the_limit_and_restart_after_cooling_and_delay() -> None:
    racks = RackArray(SPEC, cdu_count=1, initial_temp=60.0)
    # a coolant so hot that even 5 % power leaves the case above 100 degC
    events = []
    t = 0.0
    while not events and t < 600.0:
        events = settle(racks, 101.0, 1.0, 1.0, t0=t)
        t += 1.0
    assert [what for _, what in events] == ["shutdown"] * 3
    assert racks.case.max() > SPEC.shutdown_case  # it tripped above the limit, not before
    settle(racks, 101.0, 1.0, 1.0, t0=t)
    assert not racks.on.any() and (racks.power == 0.0).all()
    off_at = float(racks.off_since.max())
    # cold coolant again: no restart before the delay even though the case is cold
    delay = RackArray.RESTART_DELAY_S
    events = settle(racks, 30.0, 1.0, off_at + delay - 1.0 - (t + 1.0), t0=t + 1.0)
    assert events == [] and racks.case.max() < SPEC.throttle_case - 10.0
    events = settle(racks, 30.0, 1.0, 2.0, t0=off_at + delay - 1.0)
    assert [what for _, what in events] == ["restart"] * 3
    assert racks.on.all() and (racks.throttle <= 0.51).all()  # restarts at half power


def test_unpowered_racks_draw_nothing() -> None:
    racks = RackArray(SPEC, cdu_count=1, initial_temp=40.0)
    racks.powered[1] = False
    racks.step(0.0, 1.0, np.full(3, 0.5), np.full(3, 40.0))
    assert racks.power[1] == 0.0 and racks.power[0] > 0 and racks.liquid_heat[1] == 0.0
