"""twin.cdu: energy balance of one CDU, reservoir mass balance, expansion-vessel law.

Exchanger figures from the effectiveness-NTU method (Incropera et al., Fundamentals of
Heat and Mass Transfer, 7th ed., Table 11.3); expansion vessel as an isothermal ideal gas
(Boyle: p V = const in absolute pressure, as in EN 12828 vessel sizing).
"""

from __future__ import annotations

import math

import pytest

from twin.cdu import CDUnit
from twin.site import CDU
from twin.thermal import Stream
from twin.water import CP_WATER, P_ATM, RHO_WATER


def running_cdu(spec: CDU | None = None) -> CDUnit:
    """A CDU at nominal flows: racks return 50 degC coolant, facility water enters at 30."""
    cdu = CDUnit("cdu1", spec or CDU(), racks=10, initial_temp=40.0)
    cdu.primary_flow = cdu.spec.pump_flow
    cdu.primary_in = 30.0
    cdu.return_stream = Stream(cdu.spec.pump_flow * CP_WATER, 50.0)
    return cdu


def test_exchanger_duty_at_nominal_flows_is_the_balanced_counterflow_figure() -> None:
    cdu = running_cdu()
    cdu.step_thermal(1.0)
    s = cdu.spec
    # both sides at pump_flow: Cr = 1, UA = hx_ua, eps = NTU / (1 + NTU)
    c = s.pump_flow * CP_WATER
    ntu = s.hx_ua / c
    assert cdu.duty == pytest.approx(ntu / (1 + ntu) * c * (50.0 - 30.0), rel=1e-12)
    # what the TCS gives up the facility water takes: Q_hot = Q_cold
    assert cdu.primary_flow * CP_WATER * (cdu.primary_out - cdu.primary_in) == \
        pytest.approx(cdu.duty, rel=1e-12)


@pytest.mark.parametrize("dt", [0.5, 1.0, 10.0])
def test_one_cdu_step_closes_its_energy_balance(dt: float) -> None:
    cdu = running_cdu()
    cdu.pump.position = 0.6  # the pump is ramping: secondary flow differs from the return
    before = cdu.heat_capacity * cdu.temp
    back = cdu.return_stream
    cdu.step_thermal(dt)
    # heat brought by the racks' return minus what leaves to the racks, plus pump work,
    # equals heat to the facility water plus the change of the node's content
    from_racks = (back.mcp * back.temp - cdu.secondary_flow * CP_WATER * cdu.supply_mean) * dt
    stored = cdu.heat_capacity * cdu.temp - before
    residual = from_racks + cdu.pump_power * dt - cdu.duty * dt - stored
    assert cdu.duty > 0 and cdu.pump_power > 0
    assert abs(residual) <= 1e-12 * abs(from_racks)


def test_pump_follows_the_cube_law_and_isolation_stops_it() -> None:
    cdu = running_cdu()
    cdu.pump.position = 0.5
    cdu.pump_cmd.auto = 0.5
    cdu.step_thermal(1.0)
    assert cdu.pump_power == pytest.approx(cdu.spec.pump_power * 0.125, rel=1e-12)
    assert cdu.secondary_flow == pytest.approx(0.5 * cdu.spec.pump_flow, rel=1e-12)
    cdu.isolate.auto = 1.0
    for _ in range(20):  # the pump ramps down at 10 % per second
        cdu.step_thermal(1.0)
    assert cdu.secondary_flow == 0.0 and cdu.pump_power == 0.0
    assert cdu.valve_position() == 0.0


def test_reservoir_level_falls_at_leak_minus_makeup_over_rho_area() -> None:
    spec = CDU()
    cdu = CDUnit("cdu1", spec, racks=10, initial_temp=40.0)
    cdu.leak_rate = 0.3  # kg/s at fill pressure
    dt = 1.0
    seen_makeup = False
    for _ in range(400):
        level = cdu.level
        pressure = cdu.pressure
        lost, _, _ = cdu.step_inventory(dt)
        # leak law: orifice flow ~ sqrt(dp), relative to fill pressure (capped at 1.5)
        assert cdu.leak_flow == pytest.approx(
            0.3 * math.sqrt(min(1.5, pressure / spec.fill_pressure)), rel=1e-12)
        assert lost == pytest.approx(cdu.leak_flow * dt, rel=1e-12)
        rate = (cdu.level - level) / dt
        expected = -(cdu.leak_flow - cdu.makeup_flow) / (RHO_WATER * spec.reservoir_area)
        assert rate == pytest.approx(expected, rel=1e-9, abs=1e-15)
        seen_makeup |= cdu.makeup_flow > 0
    assert seen_makeup  # the level went below the make-up threshold during the run
    assert cdu.level_fraction < CDUnit.RESERVOIR_FULL


def test_makeup_hysteresis_between_its_documented_levels() -> None:
    spec = CDU(makeup_flow=0.1)
    cdu = CDUnit("cdu1", spec, racks=10, initial_temp=40.0)
    full = spec.reservoir_volume * RHO_WATER
    cdu.reservoir_mass = 0.55 * full
    cdu.step_inventory(1.0)
    assert cdu.makeup_flow == 0.0  # between the thresholds: stays closed
    cdu.reservoir_mass = 0.49 * full
    fractions = []
    for _ in range(2000):
        cdu.step_inventory(1.0)
        fractions.append((cdu.level_fraction, cdu.makeup_flow))
    opened = [f for f, m in fractions if m > 0]
    assert opened and min(opened) < CDUnit.MAKEUP_ON + 0.01
    assert max(f for f, _ in fractions) == pytest.approx(CDUnit.MAKEUP_OFF, abs=0.1 / full)
    assert fractions[-1][1] == 0.0  # closed after reaching the upper threshold
    cdu.makeup_enable.auto = 0.0
    cdu.reservoir_mass = 0.3 * full
    cdu.step_inventory(1.0)
    assert cdu.makeup_flow == 0.0  # disabled make-up never opens


def test_makeup_water_mixes_in_by_enthalpy() -> None:
    spec = CDU(makeup_flow=0.2, makeup_temperature=15.0)
    cdu = CDUnit("cdu1", spec, racks=10, initial_temp=40.0)
    cdu.reservoir_mass = 0.4 * spec.reservoir_volume * RHO_WATER
    c_before = cdu.heat_capacity
    _, _, makeup_energy = cdu.step_inventory(10.0)
    added = 0.2 * 10.0
    assert makeup_energy == pytest.approx(added * CP_WATER * 15.0, rel=1e-12)
    # (C T + m cp T_mu) / (C + m cp): the content after mixing is the sum of both
    assert cdu.heat_capacity == pytest.approx(c_before + added * CP_WATER, rel=1e-12)
    assert cdu.heat_capacity * cdu.temp == pytest.approx(c_before * 40.0 + makeup_energy,
                                                         rel=1e-12)


def test_expansion_vessel_pressure_follows_boyles_law() -> None:
    spec = CDU(fill_pressure=2.0e5, vessel_gas_volume=0.05)
    cdu = CDUnit("cdu1", spec, racks=10, initial_temp=40.0)
    assert cdu.pressure == pytest.approx(2.0e5, rel=1e-12)  # full: fill pressure
    for lost_kg in (1.0, 10.0, 40.0):
        cdu.reservoir_mass = spec.reservoir_volume * RHO_WATER * 0.8 - lost_kg
        # p1 V1 = p2 V2 in absolute pressure; the gas takes the volume of the lost water
        v2 = 0.05 + lost_kg / RHO_WATER
        expected = (2.0e5 + P_ATM) * 0.05 / v2 - P_ATM
        assert cdu.pressure == pytest.approx(expected, rel=1e-12)
    cdu.reservoir_mass = 0.0
    cdu.spec.vessel_gas_volume = 0.001  # a tiny vessel: gauge pressure cannot go below 0
    assert cdu.pressure == 0.0


def test_heat_capacity_and_level_of_the_tcs_node() -> None:
    spec = CDU(loop_mass=800.0, reservoir_volume=0.2, reservoir_area=0.25)
    cdu = CDUnit("cdu1", spec, racks=10, initial_temp=40.0)
    water = 0.8 * 0.2 * RHO_WATER
    assert cdu.level == pytest.approx(water / RHO_WATER / 0.25, rel=1e-12)  # 0.64 m
    metal = cdu.heat_capacity - (water + 800.0) * CP_WATER
    assert 0 < metal < 0.2 * cdu.heat_capacity  # plates and casing, a minor share
