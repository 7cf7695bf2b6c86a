"""twin.drycooler: duty by crossflow effectiveness-NTU, fans off, fan cube law, bypass.

Crossflow with both fluids unmixed: Incropera et al., Fundamentals of Heat and Mass
Transfer, 7th ed., eq. 11.32; fan affinity law P ~ n^3 (ASHRAE Handbook, HVAC Systems and
Equipment, ch. 21).
"""

from __future__ import annotations

import math

import pytest

from twin.drycooler import DryCoolerUnit
from twin.site import DryCooler
from twin.water import CP_AIR, CP_WATER


def incropera_crossflow_duty(ua: float, c_water: float, c_air: float, t_in: float,
                             t_out: float) -> float:
    c_min, c_max = min(c_water, c_air), max(c_water, c_air)
    ntu, cr = ua / c_min, c_min / c_max
    eff = 1.0 - math.exp((1.0 / cr) * ntu ** 0.22 * (math.exp(-cr * ntu ** 0.78) - 1.0))
    return eff * c_min * (t_in - t_out)


def unit_at(speed: float, flow: float = 40.0, inlet: float = 35.0) -> DryCoolerUnit:
    dc = DryCoolerUnit("dc1", DryCooler(), initial_temp=inlet)
    dc.fans.position = speed
    dc.fan_cmd.auto = speed
    dc.flow = flow
    dc.inlet = inlet
    return dc


def test_duty_at_full_fan_speed_is_the_crossflow_figure_of_the_rated_ua() -> None:
    dc = unit_at(1.0)
    dc.step(15.0, 1.0)
    s = dc.spec
    expected = incropera_crossflow_duty(s.ua, 40.0 * CP_WATER, s.air_flow * CP_AIR, 35.0, 15.0)
    assert dc.duty == pytest.approx(expected, rel=1e-12)
    assert dc.duty < s.air_flow * CP_AIR * 20.0  # below the maximum Cmin * dT
    assert dc.fan_power == pytest.approx(s.fan_power, rel=1e-12)
    assert not dc.bypassed


def test_duty_at_part_speed_follows_the_documented_ua_law() -> None:
    dc = unit_at(0.5)
    dc.step(15.0, 1.0)
    s = dc.spec
    # UA = UA_fan * (natural share + (1 - natural share) * speed^0.6), air flow ~ speed
    ua = s.ua * (s.natural_ua_fraction + (1 - s.natural_ua_fraction) * 0.5 ** 0.6)
    expected = incropera_crossflow_duty(ua, 40.0 * CP_WATER, 0.5 * s.air_flow * CP_AIR,
                                        35.0, 15.0)
    assert dc.duty == pytest.approx(expected, rel=1e-12)
    assert dc.fan_power == pytest.approx(s.fan_power / 8.0, rel=1e-12)  # cube law


def test_fans_off_leave_only_natural_convection() -> None:
    full, off, failed = unit_at(1.0), unit_at(0.0), unit_at(1.0)
    failed.fan_failed = True
    for dc in (full, off, failed):
        dc.step(15.0, 1.0)
    s = off.spec
    assert off.fan_power == 0.0 and failed.fan_power == 0.0
    assert failed.duty == pytest.approx(off.duty, rel=1e-12)
    # some heat still goes (natural convection), bounded by UA_natural * dT
    assert 0.0 < off.duty <= s.ua * s.natural_ua_fraction * 20.0
    assert off.duty < 0.3 * full.duty


def test_bypass_when_the_outdoor_air_is_warmer_than_the_water() -> None:
    dc = unit_at(1.0, inlet=25.0)
    for _ in range(100):
        outlet = dc.step(32.0, 1.0)
    assert dc.bypassed and dc.duty == 0.0
    assert outlet == pytest.approx(25.0, rel=1e-12)  # the cooler adds no heat


@pytest.mark.parametrize("dt", [1.0, 20.0])
def test_water_side_energy_balance_of_one_step(dt: float) -> None:
    dc = unit_at(0.7, flow=30.0, inlet=38.0)
    dc.temp = 33.0
    before = dc.stored_energy()
    outlet = dc.step(10.0, dt)
    residual = (dc.flow * CP_WATER * (38.0 - outlet) - dc.duty) * dt - (
        dc.stored_energy() - before)
    assert dc.duty > 0
    assert abs(residual) <= 1e-12 * dc.flow * CP_WATER * 38.0 * dt


def test_fan_control_holds_the_leaving_water_setpoint() -> None:
    dc = unit_at(0.3, flow=40.0, inlet=36.0)
    for _ in range(3600):
        dc.control(28.0, 1.0)
        dc.step(12.0, 1.0)
    assert dc.outlet == pytest.approx(28.0, abs=0.05)
    assert 0.0 < dc.fans.position < 1.0
