"""twin.sensors: the documented instrument model (sampling, noise, quantisation, range, faults).

Statistical bounds: the sample mean of N normal draws has standard error sigma/sqrt(N);
the sample standard deviation has standard error about sigma/sqrt(2(N-1)) (e.g. Montgomery
& Runger, Applied Statistics and Probability for Engineers, ch. 7). Bounds are 5 standard
errors, so a correct model fails about once in 10^6 runs (and the seeds are fixed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from twin import faults
from twin.plant import Twin
from twin.points import PointTable
from twin.sensors import SensorBank
from twin.site import Site


class Field:
    """Ground truth of three instruments that a test can set."""

    def __init__(self) -> None:
        self.truth = {"tt.a": 45.0, "pt.b": 2.0e5, "ft.c": 3.0}

    def table(self, sd: float = 0.0, step: float = 0.0) -> PointTable:
        points = PointTable()
        points.sensor("tt.a", "degC", 0.0, 100.0, "temperature", lambda: self.truth["tt.a"],
                      noise_sd=sd, resolution=step)
        points.status("tt.status", "1", 0, 1, "not a sensor", lambda: 1.0)
        points.sensor("pt.b", "Pa", 0.0, 1.0e6, "pressure", lambda: self.truth["pt.b"],
                      noise_sd=100.0 * sd)
        points.sensor("ft.c", "kg/s", 0.0, 10.0, "flow", lambda: self.truth["ft.c"])
        return points


def test_only_sensor_points_are_sampled() -> None:
    bank = SensorBank(Field().table(), seed=1)
    assert sorted(bank.position) == ["ft.c", "pt.b", "tt.a"]


def test_noise_has_the_stated_mean_and_standard_deviation() -> None:
    sd, n = 0.2, 5000
    bank = SensorBank(Field().table(sd=sd), seed=11)
    readings = np.empty((n, 2))
    for k in range(n):
        bank.sample(float(k), k)
        readings[k] = bank.measured("tt.a"), bank.measured("pt.b")
    for column, truth, sigma in ((0, 45.0, sd), (1, 2.0e5, 100.0 * sd)):
        x = readings[:, column]
        assert abs(x.mean() - truth) < 5 * sigma / math.sqrt(n)
        assert abs(x.std(ddof=1) - sigma) < 5 * sigma / math.sqrt(2 * (n - 1))
    # the noise of different instruments is independent
    r = np.corrcoef(readings[:, 0], readings[:, 1])[0, 1]
    assert abs(r) < 5 / math.sqrt(n)
    # the noise-free instrument reads the truth exactly
    assert bank.measured("ft.c") == 3.0


def test_noise_is_keyed_by_seed_and_sample_number_not_by_reads() -> None:
    field = Field()
    a = SensorBank(field.table(sd=0.5), seed=3)
    b = SensorBank(field.table(sd=0.5), seed=3)
    c = SensorBank(field.table(sd=0.5), seed=4)
    a.sample(10.0, 10)
    first = a.measured("tt.a")
    assert a.measured("tt.a") == first  # reading twice changes nothing
    for k in range(5):  # other samples taken in between
        a.sample(float(k), k)
    a.sample(10.0, 10)
    assert a.measured("tt.a") == first  # the same sample number is the same draw
    b.sample(10.0, 10)
    c.sample(10.0, 10)
    assert b.measured("tt.a") == first
    assert c.measured("tt.a") != first
    a.sample(11.0, 11)
    assert a.measured("tt.a") != first


def test_quantisation_to_the_resolution_step() -> None:
    field = Field()
    step = 0.05
    bank = SensorBank(field.table(step=step), seed=1)
    for truth in np.linspace(10.0, 11.0, 137):
        field.truth["tt.a"] = float(truth)
        bank.sample(0.0, 0)
        value = bank.measured("tt.a")
        assert abs(value - truth) <= step / 2 + 1e-12
        assert value / step == pytest.approx(round(value / step), abs=1e-9)


def test_readings_are_clamped_to_the_instrument_range() -> None:
    field = Field()
    bank = SensorBank(field.table(), seed=1)
    field.truth.update({"tt.a": 140.0, "ft.c": -2.0})
    bank.sample(0.0, 0)
    assert bank.measured("tt.a") == 100.0 and bank.measured("ft.c") == 0.0
    assert bank.truth[bank.position["tt.a"]] == 140.0  # the truth itself is not clamped


def test_bias_scaling_drift_spike_stuck_and_dropout() -> None:
    field = Field()
    bank = SensorBank(field.table(), seed=1)
    i = bank.position["tt.a"]
    bank.bias[i] = 1.5
    bank.sample(0.0, 0)
    assert bank.measured("tt.a") == pytest.approx(46.5)
    bank.bias[i] = 0.0
    bank.scale[i] = 1.1
    bank.sample(1.0, 1)
    assert bank.measured("tt.a") == pytest.approx(49.5)
    bank.scale[i] = 1.0
    bank.drift_rate[i], bank.drift_start[i] = 0.002, 100.0  # degC per second from t = 100 s
    bank.sample(50.0, 2)
    assert bank.measured("tt.a") == pytest.approx(45.0)  # not started yet
    bank.sample(1600.0, 3)
    assert bank.measured("tt.a") == pytest.approx(45.0 + 0.002 * 1500.0)
    bank.drift_rate[i] = 0.0
    bank.spike[i] = 20.0
    bank.sample(1601.0, 4)
    assert bank.measured("tt.a") == pytest.approx(65.0)
    bank.sample(1602.0, 5)
    assert bank.measured("tt.a") == pytest.approx(45.0)  # a spike lasts one sample
    bank.stuck[i] = True
    field.truth["tt.a"] = 60.0
    for k in range(6, 9):
        bank.sample(float(k), k)
        assert bank.measured("tt.a") == pytest.approx(45.0)  # holds the last reading
    assert bank.measured("ft.c") == 3.0
    bank.stuck[i] = False
    bank.dropout[i] = True
    bank.sample(10.0, 10)
    assert math.isnan(bank.measured("tt.a"))
    assert bank.measured("pt.b") == 2.0e5  # only the faulty instrument is affected
    bank.dropout[i] = False
    bank.sample(11.0, 11)
    assert bank.measured("tt.a") == pytest.approx(60.0)


def test_twin_samples_at_the_sensor_period_and_faults_act_as_documented() -> None:
    site = Site(name="sensors")
    site.sensors.period = 5.0
    tw = Twin(site, seed=2)
    pid = "cdu1.supply_temp"
    assert pid in tw.sensors.position
    tw.run_until(12.0)
    assert (tw.sensors.sample_number, tw.sensors.sample_time) == (2, 10.0)
    held = tw.read(pid)
    tw.run_until(14.9)
    assert tw.read(pid) == held  # no new sample between sampling instants
    tw.run_until(15.0)
    assert tw.sensors.sample_time == 10.0  # run_until(t) stops before the events at t
    tw.run_until(15.5)
    assert tw.sensors.sample_time == 15.0
    faults.sensor_drift(tw, pid, 0.01)  # K per second from now (t = 15.5 s)
    clear = faults.sensor_bias(tw, pid, 2.0)
    tw.run_until(115.5)
    i = tw.sensors.position[pid]
    truth = tw.sensors.truth[i]
    # noise 0.05 K at 0.01 K resolution (the site's defaults): 6 sigma plus a step
    tolerance = 6 * site.sensors.temperature_noise + site.sensors.temperature_resolution
    assert tw.read(pid) - truth == pytest.approx(2.0 + 0.01 * 99.5, abs=tolerance)
    clear()
    tw.run_until(120.5)
    assert tw.read(pid) - tw.sensors.truth[i] == pytest.approx(0.01 * 104.5, abs=tolerance)
    faults.sensor_dropout(tw, pid)
    tw.run_until(125.5)
    assert math.isnan(tw.read(pid))
