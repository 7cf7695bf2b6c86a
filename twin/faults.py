"""Physical and sensor faults applied to a running twin.

Each ``inject_*`` function changes the twin at once and returns a function that clears
the fault (restores what it changed). Targets are device names or point ids. Parameters
are SI (temperatures in degC / K, flows kg/s, fractions 0-1). Scheduling in simulated
time and the fault catalog with its parameter schema live in the rig.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from twin.errors import HeatrigError

if TYPE_CHECKING:
    from twin.cdu import CDUnit
    from twin.plant import Twin

Clear = Callable[[], None]


class _Named(Protocol):
    """A plant component found by its device name."""

    name: str


_N = TypeVar("_N", bound=_Named)
PIPING = -2  # a leak in the TCS piping, away from every spot sensor


class FaultTargetError(HeatrigError, ValueError):
    """A fault names a target that the site does not have."""


def _cdu(tw: Twin, target: str) -> tuple[int, CDUnit, int]:
    """Resolve ``cduN`` or ``cduN.rackMM`` to (cdu index, CDU, rack index in it or -1)."""
    name, _, rack = target.partition(".")
    for i, cdu in enumerate(tw.cdus):
        if cdu.name == name:
            if not rack:
                return i, cdu, -1
            if rack == "piping":
                return i, cdu, PIPING
            per = tw.site.racks.per_cdu
            if rack.startswith("rack") and rack[4:].isdigit() and 1 <= int(rack[4:]) <= per:
                return i, cdu, int(rack[4:]) - 1
            raise FaultTargetError(f"{target}: {name} has racks rack01..rack{per:02d} "
                                   "and piping")
    names = ", ".join(c.name for c in tw.cdus)
    raise FaultTargetError(f"{target}: no such CDU (known: {names})")


def _by_name(items: Sequence[_N], target: str, what: str) -> _N:
    for item in items:
        if item.name == target:
            return item
    names = ", ".join(i.name for i in items)
    raise FaultTargetError(f"{target}: no such {what} (known: {names})")


def leak(tw: Twin, target: str, rate: float) -> Clear:
    """Coolant leak of ``rate`` kg/s at a CDU, a rack (``cdu1.rack03``), a CDU's piping away
    from any spot sensor (``cdu1.piping``) or the ``facility`` loop."""
    if target == "facility":
        hyd = tw.hydraulics
        hyd.leak_rate += rate
        return lambda: setattr(hyd, "leak_rate", max(0.0, hyd.leak_rate - rate))
    _, cdu, rack = _cdu(tw, target)
    cdu.leak_rate = rate
    cdu.leak_at = rack

    def clear() -> None:
        cdu.leak_rate = 0.0

    return clear


def pump_trip(tw: Twin, target: str) -> Clear:
    """Trip a facility pump (``facility.pump1``) or a CDU's secondary pump (``cdu1``)."""
    if target.startswith("facility."):
        pump = _by_name(tw.hydraulics.pumps, target.split(".", 1)[1], "facility pump")
        pump.tripped = True
        return lambda: setattr(pump, "tripped", False)
    _, cdu, _ = _cdu(tw, target)
    cdu.pump_failed = True
    return lambda: setattr(cdu, "pump_failed", False)


def pump_degraded(tw: Twin, target: str, head_fraction: float) -> Clear:
    """A facility pump delivers only ``head_fraction`` of its head (worn impeller)."""
    pump = _by_name(tw.hydraulics.pumps, target.removeprefix("facility."), "facility pump")
    pump.head_factor = head_fraction
    return lambda: setattr(pump, "head_factor", 1.0)


def valve_stuck(tw: Twin, target: str, position: float | None = None) -> Clear:
    """A CDU's primary valve stops moving (at ``position`` 0-1, or where it is)."""
    _, cdu, _ = _cdu(tw, target)
    if position is not None:
        cdu.valve.position = position
    rate = cdu.valve.rate
    cdu.valve.rate = 0.0
    return lambda: setattr(cdu.valve, "rate", rate)


def hx_fouling(tw: Twin, target: str, ua_loss: float) -> Clear:
    """A CDU's exchanger loses ``ua_loss`` (0-1) of its conductance."""
    _, cdu, _ = _cdu(tw, target)
    cdu.hx_fouling = ua_loss
    return lambda: setattr(cdu, "hx_fouling", 0.0)


def compressor_trip(tw: Twin, target: str) -> Clear:
    """A heat pump's compressor trips on motor protection (latched until reset)."""
    hp = _by_name(tw.heat_pumps, target, "heat pump")
    hp.forced_trip = True
    return lambda: setattr(hp, "forced_trip", False)


def refrigerant_undercharge(tw: Twin, target: str, capacity_loss: float) -> Clear:
    """A heat pump loses ``capacity_loss`` (0-1) of its refrigerant mass flow."""
    hp = _by_name(tw.heat_pumps, target, "heat pump")
    hp.capacity_factor = 1.0 - capacity_loss
    return lambda: setattr(hp, "capacity_factor", 1.0)


def fan_failure(tw: Twin, target: str) -> Clear:
    """A dry cooler's fans stop."""
    dc = _by_name(tw.dry_coolers, target, "dry cooler")
    dc.fan_failed = True
    return lambda: setattr(dc, "fan_failed", False)


def power_loss(tw: Twin, target: str) -> Clear:
    """A CDU and the racks behind it lose power (pump stops, IT off)."""
    i, cdu, _ = _cdu(tw, target)
    per = tw.site.racks.per_cdu
    cdu.pump_failed = True
    tw.racks.powered[i * per:(i + 1) * per] = False

    def clear() -> None:
        cdu.pump_failed = False
        tw.racks.powered[i * per:(i + 1) * per] = True

    return clear


def it_load_step(tw: Twin, target: str, delta: float) -> Clear:
    """All racks' utilisation changes by ``delta`` (fraction, -1..1)."""
    util = tw.utilisation
    util.step_fraction += delta
    util.update(tw.now)
    return lambda: setattr(util, "step_fraction", util.step_fraction - delta)


def heat_wave(tw: Twin, target: str, offset: float) -> Clear:
    """Outdoor temperature rises by ``offset`` K."""
    w = tw.weather
    w.extra_offset += offset
    w.update(tw.now, 0.0)
    tw.outdoor = w.value
    return lambda: setattr(w, "extra_offset", w.extra_offset - offset)


def demand_drop(tw: Twin, target: str, remaining: float) -> Clear:
    """District demand falls to ``remaining`` (0-1) of the profile; 0 = network loss."""
    d = tw.district
    d.demand_factor = remaining
    return lambda: setattr(d, "demand_factor", 1.0)


def return_hot(tw: Twin, target: str, offset: float) -> Clear:
    """The district network returns ``offset`` K hotter than designed."""
    d = tw.district
    d.return_offset += offset
    return lambda: setattr(d, "return_offset", d.return_offset - offset)


def crah_failure(tw: Twin, target: str, remaining: float) -> Clear:
    """Air-side cooling keeps only ``remaining`` (0-1) of its capacity."""
    air = tw.air
    air.capacity_factor = remaining
    return lambda: setattr(air, "capacity_factor", 1.0)


# -- sensor faults ------------------------------------------------------------------------

def _sensor(tw: Twin, point_id: str) -> int:
    bank = tw.sensors
    if point_id not in bank.position:
        if point_id in tw.points:
            raise FaultTargetError(f"{point_id}: not a sensor point (sensor faults need one)")
        raise FaultTargetError(f"{point_id}: no such point")
    return bank.position[point_id]


def sensor_bias(tw: Twin, target: str, offset: float) -> Clear:
    """Measured value offset by ``offset`` (point unit)."""
    i = _sensor(tw, target)
    tw.sensors.bias[i] += offset
    return lambda: tw.sensors.bias.__setitem__(i, tw.sensors.bias[i] - offset)


def sensor_drift(tw: Twin, target: str, rate: float) -> Clear:
    """Measured value drifts by ``rate`` (point unit per second) from now."""
    i = _sensor(tw, target)
    bank = tw.sensors
    bank.drift_rate[i] = rate
    bank.drift_start[i] = tw.now
    return lambda: bank.drift_rate.__setitem__(i, 0.0)


def sensor_noise(tw: Twin, target: str, sd: float) -> Clear:
    """Extra measurement noise with standard deviation ``sd`` (point unit)."""
    i = _sensor(tw, target)
    tw.sensors.extra_noise[i] = sd
    return lambda: tw.sensors.extra_noise.__setitem__(i, 0.0)


def sensor_stuck(tw: Twin, target: str) -> Clear:
    """Measured value freezes at its present reading."""
    i = _sensor(tw, target)
    tw.sensors.stuck[i] = True
    return lambda: tw.sensors.stuck.__setitem__(i, False)


def sensor_dropout(tw: Twin, target: str) -> Clear:
    """The sensor stops answering: its value reads NaN."""
    i = _sensor(tw, target)
    tw.sensors.dropout[i] = True
    return lambda: tw.sensors.dropout.__setitem__(i, False)


def sensor_spike(tw: Twin, target: str, magnitude: float) -> Clear:
    """One sample jumps by ``magnitude`` (point unit)."""
    i = _sensor(tw, target)
    tw.sensors.spike[i] = magnitude
    return lambda: None


def sensor_scaling(tw: Twin, target: str, factor: float) -> Clear:
    """Measured value multiplied by ``factor`` (wrong span)."""
    i = _sensor(tw, target)
    tw.sensors.scale[i] = factor
    return lambda: tw.sensors.scale.__setitem__(i, 1.0)
