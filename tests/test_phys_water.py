"""twin.water: the constant fluid properties against CoolProp (IAPWS-95 for water,
Lemmon et al. 2000 for air) over the loops' temperatures.
"""

from __future__ import annotations

import pytest
from CoolProp.CoolProp import PropsSI

from twin.water import CP_AIR, CP_WATER, P_ATM, RHO_WATER


@pytest.mark.parametrize("t_c", [30.0, 45.0, 60.0, 70.0])
def test_water_heat_capacity_within_half_a_percent_at_loop_temperatures(t_c: float) -> None:
    cp = PropsSI("C", "T", t_c + 273.15, "P", 3e5, "Water")
    assert abs(CP_WATER - cp) <= 0.005 * cp


def test_water_density_air_heat_capacity_and_atmosphere() -> None:
    rho = PropsSI("D", "T", 318.15, "P", P_ATM, "Water")
    assert abs(RHO_WATER - rho) <= 1e-3 * rho
    cp_air = PropsSI("C", "T", 298.15, "P", P_ATM, "Air")
    assert abs(CP_AIR - cp_air) <= 2e-3 * cp_air
    assert P_ATM == 101_325.0  # ISO 2533 standard atmosphere
