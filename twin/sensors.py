"""Virtual field instruments: sampled, noisy, quantised and clamped measurements.

Every sensor point is sampled at the site's sensor period. Noise is drawn from a stream
keyed by (seed, sample number), so the measured values do not depend on who reads them or
how often. Sensor faults (bias, drift, scaling, noise, stuck, dropout, spike) are arrays
indexed like the sensors; a dropped-out sensor reads NaN.
"""

from __future__ import annotations

import numpy as np

from twin.points import Kind, PointTable


class SensorBank:
    """Measured values of all points; sensors sampled, other kinds read directly."""

    def __init__(self, points: PointTable, seed: int) -> None:
        self.points = points
        self.seed = seed
        self.sensor_index = np.array([p.index for p in points if p.kind is Kind.SENSOR],
                                     dtype=np.int64)
        sensors = [points._points[i] for i in self.sensor_index]
        self._getters = [p.getter for p in sensors]
        n = len(sensors)
        self.noise_sd = np.array([p.noise_sd for p in sensors])
        self.resolution = np.array([p.resolution for p in sensors])
        self.lo = np.array([p.lo for p in sensors])
        self.hi = np.array([p.hi for p in sensors])
        self.position = {p.id: i for i, p in enumerate(sensors)}
        # fault state
        self.bias = np.zeros(n)
        self.scale = np.ones(n)
        self.drift_rate = np.zeros(n)  # unit per second since drift_start
        self.drift_start = np.zeros(n)
        self.extra_noise = np.zeros(n)
        self.stuck = np.zeros(n, dtype=bool)
        self.dropout = np.zeros(n, dtype=bool)
        self.spike = np.zeros(n)  # added for one sample, then cleared
        self.truth = np.zeros(n)
        self.values = np.zeros(n)
        self.sample_number = -1
        self.sample_time = 0.0

    def sample(self, t: float, k: int) -> None:
        """Take sample number k at simulated time t (s)."""
        truth = np.fromiter((g() for g in self._getters), dtype=float,
                            count=len(self._getters))
        self.truth = truth
        rng = np.random.default_rng((self.seed, k))
        noise = rng.standard_normal(truth.size) * (self.noise_sd + self.extra_noise)
        drift = self.drift_rate * np.maximum(0.0, t - self.drift_start)
        value = truth * self.scale + self.bias + drift + noise + self.spike
        self.spike[:] = 0.0
        step = self.resolution
        quantised = np.where(step > 0, np.round(value / np.where(step > 0, step, 1.0)) * step,
                             value)
        value = np.clip(quantised, self.lo, self.hi)
        value = np.where(self.stuck, self.values, value)
        value[self.dropout] = np.nan
        self.values = value
        self.sample_number = k
        self.sample_time = t

    def measured(self, point_id: str) -> float:
        """Last sampled value of a sensor point."""
        return float(self.values[self.position[point_id]])
