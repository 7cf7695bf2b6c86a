"""twin.heatpump: first law of the hermetic cycle, Carnot bound, approaches, volumetric
efficiency, water-side balance and the safety trips stated in the module docstring.

Clearance-volume volumetric efficiency eta_v = 1 - c ((p_cond / p_evap)^(1/n) - 1)
(Stoecker & Jones, Refrigeration and Air Conditioning, 2nd ed., sec. 11-4); Carnot heating
COP = T_cond / (T_cond - T_evap) in kelvin (DOMAIN.md, Heat pumps).
"""

from __future__ import annotations

import pytest

from twin.heatpump import POLYTROPIC_EXPONENT, HeatPumpUnit
from twin.site import HeatPump
from twin.water import CP_WATER


def running_unit(evap: float = 35.0, cond: float = 65.0, speed: float = 0.8) -> HeatPumpUnit:
    hp = HeatPumpUnit("hp1", HeatPump(), evap, cond)
    hp.evap_flow = hp.cond_flow = 10.0
    hp.evap_in, hp.cond_in = evap + 3.0, cond - 10.0
    hp.enable.auto = 1.0
    hp.supervise(1000.0)
    assert hp.running
    hp.speed.position = speed
    hp.evaluate_cycle()
    assert hp.state is not None and hp.power > 0
    return hp


def test_condenser_heat_is_evaporator_heat_plus_compressor_work() -> None:
    hp = running_unit()
    assert hp.q_cond == hp.q_evap + hp.power  # exactly: all work ends in the refrigerant
    assert hp.cop == pytest.approx(hp.q_cond / hp.power, rel=1e-15)


@pytest.mark.parametrize(("evap", "cond"), [(30.0, 60.0), (35.0, 65.0), (40.0, 75.0)])
def test_cycle_runs_at_the_approaches_and_below_carnot(evap: float, cond: float) -> None:
    hp = running_unit(evap, cond)
    s = hp.spec
    st = hp.state
    assert st is not None
    assert st.t_evap_C == pytest.approx(evap - s.evaporator_approach, abs=1e-9)
    assert st.t_cond_C == pytest.approx(cond + s.condenser_approach, abs=1e-9)
    t_c, t_e = st.t_cond_C + 273.15, st.t_evap_C + 273.15
    carnot = t_c / (t_c - t_e)
    assert hp.carnot_cop == pytest.approx(carnot, rel=1e-6)
    # DOMAIN.md: real single-stage cycles reach 0.37-0.51 of the water-side Carnot COP,
    # more of the refrigerant-side one; always below it
    assert 0.3 * carnot < hp.cop < carnot


def test_refrigerant_flow_follows_the_clearance_volume_law() -> None:
    hp = running_unit(speed=0.6)
    s = hp.spec
    st = hp.state
    assert st is not None
    ratio = st.p_cond_Pa / st.p_evap_Pa
    eta_v = 1.0 - s.clearance_ratio * (ratio ** (1.0 / POLYTROPIC_EXPONENT) - 1.0)
    swept = s.displacement * s.max_speed * 0.6  # m3/s
    m_ref = swept * eta_v * st.rho_suction_kg_m3
    assert hp.q_evap == pytest.approx(m_ref * st.q_evap_J_kg, rel=1e-12)
    assert 0.7 < eta_v < 1.0
    # capacity is proportional to speed at fixed temperatures
    q06 = hp.q_evap
    hp.speed.position = 0.9
    hp.evaluate_cycle()
    assert hp.q_evap == pytest.approx(q06 * 0.9 / 0.6, rel=1e-12)


@pytest.mark.parametrize("dt", [1.0, 5.0])
def test_water_nodes_close_their_energy_balance(dt: float) -> None:
    hp = running_unit()
    before_e, before_c = hp.evap_temp, hp.cond_temp
    hp.step_water(dt)
    c = hp.spec.water_mass * CP_WATER
    evap = (hp.evap_flow * CP_WATER * (hp.evap_in - hp.evap_out) - hp.q_evap) * dt
    cond = (hp.cond_flow * CP_WATER * (hp.cond_in - hp.cond_out) + hp.q_cond) * dt
    assert abs(evap - c * (hp.evap_temp - before_e)) <= 1e-12 * hp.q_evap * dt
    assert abs(cond - c * (hp.cond_temp - before_c)) <= 1e-12 * hp.q_cond * dt


def test_condenser_flow_for_the_leaving_water_setpoint() -> None:
    hp = running_unit()
    hp.condenser_flow_control()
    lift = hp.setpoint.value - hp.cond_in
    expected = min(hp.spec.condenser_flow_max, max(hp.spec.min_flow,
                                                   hp.q_cond / (CP_WATER * lift)))
    assert hp.cond_flow == pytest.approx(expected, rel=1e-12)
    # at that flow the steady condenser outlet is the setpoint: Q = m cp (T_sp - T_in)
    assert hp.spec.min_flow < expected < hp.spec.condenser_flow_max  # not at a limit
    assert hp.cond_in + hp.q_cond / (hp.cond_flow * CP_WATER) == pytest.approx(
        hp.setpoint.value, rel=1e-12)


def test_min_flow_and_antifreeze_trips_latch_until_reset() -> None:
    hp = running_unit()
    hp.evap_flow = 0.5 * hp.spec.min_flow
    hp.supervise(2000.0)
    assert hp.trips["min_flow"] and not hp.running and hp.trip_count == 1
    hp.evap_flow = 10.0
    hp.supervise(3000.0)
    assert hp.trips["min_flow"] and not hp.running  # latched: the cause went, the trip stays
    hp.reset.hand_value = 1.0  # what a write of the reset point does
    hp.supervise(3001.0)
    assert not hp.tripped and hp.running and hp.reset.value == 0.0  # a pulse
    hp.evap_out = hp.spec.antifreeze - 0.5
    hp.supervise(3400.0)
    assert hp.trips["antifreeze"] and not hp.running and hp.trip_count == 2
    assert [kind for kind, _ in hp.events].count("trip") == 2


def test_pressure_trips_at_the_envelope_limits() -> None:
    hp = running_unit(cond=85.0)  # condensing 90 degC, above the 88 degC trip
    assert hp.trips["high_pressure"]
    low = running_unit(evap=5.0)  # evaporating 0 degC, below the 2 degC trip
    assert low.trips["low_pressure"]
