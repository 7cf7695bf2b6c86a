"""twin.controls: PI step response, anti-windup and actuator stroke time.

The PI law is the textbook parallel form u = Kp (e + 1/Ti * integral of e dt)
(Astrom & Hagglund, Advanced PID Control, 2006, ch. 3); anti-windup by conditional
integration (ibid., sec. 3.5).
"""

from __future__ import annotations

import itertools
import math

import pytest

from twin.cdu import CDUnit
from twin.controls import PI, Ramp
from twin.site import CDU


@pytest.mark.parametrize("direct", [True, False])
def test_pi_step_response_is_a_kick_then_a_ramp(direct: bool) -> None:
    kp, ti, dt, error = 0.4, 120.0, 0.5, 1.5
    pi = PI(kp=kp, ti=ti, lo=-100.0, hi=100.0, direct=direct)
    measurement = 20.0 + error if direct else 20.0 - error
    outputs = [pi.update(20.0, measurement, dt) for _ in range(400)]
    # proportional kick Kp * e, then the integral ramps at Kp / Ti * e per second
    for n, out in enumerate(outputs, start=1):
        assert out == pytest.approx(kp * error + kp / ti * error * n * dt, rel=1e-12)
    slope = (outputs[-1] - outputs[0]) / ((len(outputs) - 1) * dt)
    assert slope == pytest.approx(kp / ti * error, rel=1e-9)


def test_pi_with_zero_error_holds_its_preset_output() -> None:
    pi = PI(kp=2.0, ti=10.0)
    pi.preset(0.37)
    assert [pi.update(5.0, 5.0, 1.0) for _ in range(50)] == [pytest.approx(0.37)] * 50
    pi.preset(7.0)  # a preset outside the limits is clamped
    assert pi.update(5.0, 5.0, 1.0) == 1.0


def test_pi_output_stays_within_its_limits() -> None:
    pi = PI(kp=5.0, ti=1.0, lo=0.2, hi=0.8)
    assert all(pi.update(0.0, 3.0, 1.0) == 0.8 for _ in range(20))
    assert all(pi.update(0.0, -3.0, 1.0) == 0.2 for _ in range(20))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_pi_anti_windup_leaves_the_limit_as_soon_as_the_error_reverses(sign: float) -> None:
    kp, ti, dt, e = 0.1, 10.0, 1.0, 1.0
    pi = PI(kp=kp, ti=ti, lo=0.0, hi=1.0)
    if sign < 0:
        pi.preset(1.0)
    limit, other = (1.0, 0.0) if sign > 0 else (0.0, 1.0)
    # the integral alone would reach the limit after about (1 - Kp e) Ti / (Kp e) = 90 s;
    # hold the error for 2000 s, twenty times longer
    for _ in range(2000):
        out = pi.update(0.0, sign * e, dt)
    assert out == limit  # integral action drives the output onto the limit
    # conditional integration stopped the integral where P + I meets the limit
    assert pi.integral == pytest.approx(limit - sign * kp * e, rel=1e-12)
    back = pi.update(0.0, -sign * e, dt)
    # one step after the error reverses: the P term flips and one increment is integrated
    expected = limit - sign * (2 * kp * e + kp / ti * e * dt)
    assert back == pytest.approx(expected, rel=1e-12)
    assert back != other
    # without anti-windup the integral would be 2000 s * Kp e / Ti = 20 and hold the
    # limit for about 200 s; here the output keeps falling at Kp / Ti * e per second
    nxt = pi.update(0.0, -sign * e, dt)
    assert nxt - back == pytest.approx(-sign * kp / ti * e * dt, rel=1e-9)


def test_ramp_reaches_full_stroke_after_the_stroke_time_and_not_before() -> None:
    stroke = 60.0
    ramp = Ramp(0.0, 1.0 / stroke)
    positions = [ramp.update(1.0, 1.0) for _ in range(70)]
    assert positions[58] < 1.0  # after 59 s
    assert positions[59] == pytest.approx(1.0, abs=1e-12)  # after 60 s
    assert all(p == 1.0 for p in positions[61:])  # never overshoots, then stays
    steps = [b - a for a, b in itertools.pairwise(positions[:60])]
    assert steps == [pytest.approx(1.0 / stroke, rel=1e-9)] * 59


@pytest.mark.parametrize("dt", [0.7, 1.0, 7.0])
def test_cdu_valve_strokes_in_its_configured_time(dt: float) -> None:
    spec = CDU(valve_stroke_time=45.0)
    cdu = CDUnit("cdu1", spec, racks=10, initial_temp=35.0)
    cdu.valve.position = 0.0
    steps = math.ceil(45.0 / dt - 1e-9)
    for _ in range(steps - 1):
        cdu.valve.update(1.0, dt)
    assert cdu.valve.position < 1.0 - 1e-9
    assert cdu.valve.position == pytest.approx((steps - 1) * dt / 45.0, rel=1e-12)
    cdu.valve.update(1.0, dt)
    assert cdu.valve.position == pytest.approx(1.0, abs=1e-12)
    # and closing takes the same time
    for _ in range(steps - 1):
        cdu.valve.update(0.0, dt)
    assert cdu.valve.position > 1e-9
    cdu.valve.update(0.0, dt)
    assert cdu.valve.position == pytest.approx(0.0, abs=1e-12)


def test_ramp_reaches_a_near_command_in_one_step_exactly() -> None:
    ramp = Ramp(0.5, 0.01)
    assert ramp.update(0.505, 1.0) == 0.505
    assert ramp.update(0.3, 1.0) == pytest.approx(0.495, rel=1e-12)
