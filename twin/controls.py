"""Building blocks of the built-in reference controls and of actuators."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class PI:
    """Proportional-integral controller with output limits and anti-windup.

    ``direct`` = True: output rises when the measurement is above the setpoint (cooling).
    kp in output units per measurement unit, ti in seconds.
    """

    kp: float
    ti: float
    lo: float = 0.0
    hi: float = 1.0
    direct: bool = True
    integral: float = 0.0

    def update(self, setpoint: float, measurement: float, dt: float) -> float:
        """Return the new output for one step of dt seconds."""
        error = measurement - setpoint if self.direct else setpoint - measurement
        p = self.kp * error
        candidate = self.integral + self.kp * error * dt / self.ti
        out = p + candidate
        if self.lo < out < self.hi or (out >= self.hi and error < 0) or (
                out <= self.lo and error > 0):
            self.integral = candidate
        elif out >= self.hi:  # integrate up to the limit, not past it
            self.integral = max(self.integral, min(candidate, self.hi - p))
        else:
            self.integral = min(self.integral, max(candidate, self.lo - p))
        return min(self.hi, max(self.lo, p + self.integral))

    def preset(self, output: float) -> None:
        """Bumpless start at a given output."""
        self.integral = min(self.hi, max(self.lo, output))


@dataclass(slots=True)
class Ramp:
    """An actuator that follows its command at a limited rate (fraction per second)."""

    position: float
    rate: float  # full scale per second

    def update(self, command: float, dt: float) -> float:
        """Move toward ``command`` for dt seconds; return the new position."""
        step = self.rate * dt
        delta = command - self.position
        if delta > step:
            self.position += step
        elif delta < -step:
            self.position -= step
        else:
            self.position = command
        return self.position
