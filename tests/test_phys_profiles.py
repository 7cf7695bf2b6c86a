"""twin.profiles: calendar, outdoor temperature and IT utilisation.

The weather's random part is a first-order autoregressive process
x' = a x + sd sqrt(1 - a^2) e with stationary standard deviation sd (Box & Jenkins, Time
Series Analysis, ch. 3).
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest

from twin.profiles import DAY_S, Calendar, OutdoorTemperature, Utilisation
from twin.site import ITLoad, Weather

JAN1 = datetime(2026, 1, 1)


def test_calendar_maps_seconds_to_day_and_hour() -> None:
    cal = Calendar(datetime(2026, 3, 1, 6, 0))
    assert cal.day_of_year(0.0) == pytest.approx(31 + 28 + 0.25, rel=1e-12)
    assert cal.hour(0.0) == pytest.approx(6.0, abs=1e-9)
    assert cal.hour(9.5 * 3600) == pytest.approx(15.5, abs=1e-9)
    assert cal.day_of_year(365 * DAY_S) == pytest.approx(cal.day_of_year(0.0), abs=1e-9)


def test_deterministic_weather_is_coldest_on_its_day_and_warmest_at_its_hour() -> None:
    w = Weather(random_sd=0.0, annual_mean=9.0, annual_amplitude=9.0, daily_amplitude=4.0,
                coldest_day_of_year=20, warmest_hour=15.0)
    temp = OutdoorTemperature(w, Calendar(JAN1), np.random.default_rng(0))
    # day 20 (0-based fractional day of year) at 15:00: annual minimum plus daily maximum
    t = (20 + 15 / 24) * DAY_S
    assert temp.update(t, 600.0) == pytest.approx(9.0 - 9.0 * math.cos(
        2 * math.pi * (15 / 24) / 365) + 4.0, rel=1e-12)
    # half a year later at 03:00: annual maximum plus daily minimum
    t_summer = (20 + 365 / 2 + 3 / 24 - 0.5) * DAY_S  # 3:00 on the day nearest to mid-year
    hour = Calendar(JAN1).hour(t_summer)
    assert hour == pytest.approx(3.0, abs=1e-6)
    annual = -9.0 * math.cos(2 * math.pi * (Calendar(JAN1).day_of_year(t_summer) - 20) / 365)
    assert temp.update(t_summer, 600.0) == pytest.approx(9.0 + annual - 4.0, rel=1e-12)
    assert annual > 8.99  # essentially the annual maximum
    temp.extra_offset = 6.0  # a heat wave adds to the curve
    assert temp.update(t_summer, 600.0) == pytest.approx(9.0 + annual - 4.0 + 6.0, rel=1e-12)


def test_random_weather_has_the_stated_standard_deviation() -> None:
    w = Weather(random_sd=1.5, annual_amplitude=0.0, daily_amplitude=0.0, annual_mean=10.0)
    temp = OutdoorTemperature(w, Calendar(JAN1), np.random.default_rng(5))
    dt, n = 1800.0, 60_000
    x = np.array([temp.update(k * dt, dt) for k in range(n)]) - 10.0
    a = math.exp(-dt / (3 * 3600.0))
    # effective number of independent samples of an AR(1) series: n (1 - a) / (1 + a)
    n_eff = n * (1 - a) / (1 + a)
    assert abs(x.mean()) < 5 * 1.5 / math.sqrt(n_eff)
    assert x.std() == pytest.approx(1.5, rel=5 / math.sqrt(2 * n_eff))
    lag1 = np.corrcoef(x[:-1], x[1:])[0, 1]
    assert lag1 == pytest.approx(a, abs=0.02)  # weather systems of about 3 h


def test_utilisation_daily_cycle_noise_and_limits() -> None:
    load = ITLoad(mean=0.6, daily_amplitude=0.2, peak_hour=15.0, random_sd=0.03)
    u = Utilisation(load, Calendar(JAN1), 2000, np.random.default_rng(1))
    peak = u.update(15 * 3600.0).copy()
    assert peak.mean() == pytest.approx(0.8, abs=5 * 0.03 / math.sqrt(2000))
    assert peak.std() == pytest.approx(0.03, rel=0.1)
    trough = u.update(3 * 3600.0)
    assert trough.mean() == pytest.approx(0.4, abs=5 * 0.03 / math.sqrt(2000))
    u.step_fraction = 0.9  # a load step beyond full load is clipped to 1
    assert (u.update(15 * 3600.0) == 1.0).all()
