"""twin.air: the white-space air node, CRAH removal, chiller electricity Q/COP, fan heat.

The model is lumped (no air mass flow): the CRAHs remove a heat flow, the chiller that
serves them draws Q/COP (definition of the coefficient of performance) and rejects Q + W
into the facility water; CRAH fan power ends in the room air.
"""

from __future__ import annotations

import pytest

from twin.air import AirSide
from twin.site import AirCooling


@pytest.mark.parametrize("dt", [1.0, 10.0])
def test_room_energy_balance_and_chiller_power(dt: float) -> None:
    spec = AirCooling()
    air = AirSide(spec)
    air.temp = 26.0
    for _ in range(50):
        before = air.stored_energy()
        to_water = air.step(150e3, dt)
        # chiller: electricity = heat removed / COP; water gets removed + electricity
        assert air.chiller_power == pytest.approx(air.removed / spec.chiller_cop, rel=1e-12)
        assert to_water == pytest.approx(air.removed * (1 + 1 / spec.chiller_cop), rel=1e-12)
        assert air.fan_power == pytest.approx(spec.fan_power_fraction * air.removed,
                                              rel=1e-12)
        # room: heat of the racks plus fan heat minus CRAH removal is stored in the air
        residual = (150e3 + air.fan_power - air.removed) * dt - (air.stored_energy() - before)
        assert abs(residual) <= 1e-12 * 150e3 * dt


def test_room_settles_at_the_setpoint_with_fan_heat_removed_too() -> None:
    spec = AirCooling(supply_setpoint=24.0)
    air = AirSide(spec)
    air.temp = 27.0
    for _ in range(7200):
        air.step(200e3, 1.0)
    assert air.temp == pytest.approx(24.0, abs=1e-6)
    # at steady state the CRAHs remove the rack heat and their own fan heat:
    # Q = Q_racks + f Q, so Q = Q_racks / (1 - f)
    assert air.removed == pytest.approx(200e3 / (1 - spec.fan_power_fraction), rel=1e-6)


def test_crah_capacity_limits_removal_and_the_room_heats_up() -> None:
    spec = AirCooling(capacity=100e3, room_heat_capacity=20e6)
    air = AirSide(spec)
    air.capacity_factor = 0.5  # half the CRAHs failed
    t0 = air.temp
    for _ in range(600):
        air.step(150e3, 1.0)
    assert air.removed == 50e3
    fan = spec.fan_power_fraction * 50e3
    assert air.temp - t0 == pytest.approx((150e3 + fan - 50e3) * 600.0 / 20e6, rel=1e-9)


def test_no_heat_no_cooling() -> None:
    air = AirSide(AirCooling())
    air.temp = air.setpoint.value - 2.0  # cold room: nothing to remove
    assert air.step(0.0, 1.0) == 0.0
    assert air.chiller_power == 0.0 and air.fan_power == 0.0
