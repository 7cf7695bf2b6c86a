"""Boundary conditions: outdoor temperature, IT utilisation and district demand.

All profiles are deterministic functions of simulated time and a seeded random stream.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from twin.site import District, ITLoad, Weather

DAY_S = 86_400.0
YEAR_DAYS = 365.0


class Calendar:
    """Maps simulated seconds to day of year and hour of day from a start date."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self._start_doy = start.timetuple().tm_yday - 1 + (
            start.hour * 3600 + start.minute * 60 + start.second) / DAY_S

    def day_of_year(self, t_s: float) -> float:
        """Fractional day of year (0 = 1 January 00:00)."""
        return (self._start_doy + t_s / DAY_S) % YEAR_DAYS

    def hour(self, t_s: float) -> float:
        """Hour of day (0-24)."""
        return (self.day_of_year(t_s) % 1.0) * 24.0


class OutdoorTemperature:
    """Annual and daily sinusoids plus a first-order random walk (degC)."""

    def __init__(self, weather: Weather, calendar: Calendar, rng: np.random.Generator) -> None:
        self.weather = weather
        self.calendar = calendar
        self._rng = rng
        self._random = 0.0
        self.extra_offset = 0.0  # heat-wave fault, K
        self.value = self._deterministic(0.0)

    def _deterministic(self, t_s: float) -> float:
        w = self.weather
        doy = self.calendar.day_of_year(t_s)
        annual = -w.annual_amplitude * math.cos(2 * math.pi * (doy - w.coldest_day_of_year)
                                               / YEAR_DAYS)
        daily = w.daily_amplitude * math.cos(2 * math.pi * (self.calendar.hour(t_s)
                                                            - w.warmest_hour) / 24.0)
        return w.annual_mean + annual + daily + w.offset + self.extra_offset

    def update(self, t_s: float, dt_s: float) -> float:
        """Advance the random part by dt_s and return the outdoor temperature (degC)."""
        if dt_s > 0:
            a = math.exp(-dt_s / (3 * 3600.0))  # weather systems last hours
            sd = self.weather.random_sd
            self._random = (a * self._random
                            + sd * math.sqrt(1 - a * a) * self._rng.standard_normal())
        self.value = self._deterministic(t_s) + self._random
        return self.value


class Utilisation:
    """Per-rack IT utilisation (0-1): a daily cycle plus per-rack noise."""

    def __init__(self, load: ITLoad, calendar: Calendar, racks: int,
                 rng: np.random.Generator) -> None:
        self.load = load
        self.calendar = calendar
        self._rng = rng
        self.values = np.zeros(racks)
        self.step_fraction = 0.0  # IT load step fault, added to every rack
        self.update(0.0)

    def update(self, t_s: float) -> np.ndarray:
        """Draw new utilisation values for time t_s; returns the per-rack array."""
        lo = self.load
        daily = lo.daily_amplitude * math.cos(2 * math.pi * (self.calendar.hour(t_s)
                                                             - lo.peak_hour) / 24.0)
        noise = lo.random_sd * self._rng.standard_normal(self.values.size)
        np.clip(lo.mean + daily + noise + self.step_fraction, 0.0, 1.0, out=self.values)
        return self.values


def supply_setpoint(district: District, t_out: float) -> float:
    """District supply temperature from the outdoor-reset curve (degC), clamped to the curve."""
    d = district
    x = (t_out - d.design_outdoor) / (d.heating_limit - d.design_outdoor)
    x = min(1.0, max(0.0, x))
    return d.supply_at_design + x * (d.supply_at_mild - d.supply_at_design)


def heat_demand(district: District, t_out: float, hour: float) -> float:
    """District heat demand (W): space heating below the heating limit plus hot water.

    Hot water follows a morning and an evening peak around its base.
    """
    d = district
    span = d.heating_limit - d.design_outdoor
    space = d.design_demand * max(0.0, (d.heating_limit - t_out) / span)
    peaks = 0.35 * (math.exp(-((hour - 7.5) / 1.5) ** 2) + math.exp(-((hour - 19.0) / 2.0) ** 2))
    hot_water = d.hot_water_base * (0.8 + peaks)
    return (space + hot_water) * d.demand_scale
