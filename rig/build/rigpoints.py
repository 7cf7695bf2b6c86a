"""The rig's own points (``rig.*``) and the devices a controller may drive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from twin.plant import Twin
from twin.points import Command, DType, Kind, Point

RIG_DEVICE = "rig"


@dataclass
class RigState:
    """The live values behind the ``rig.*`` points.

    ``speed``: achieved speed (simulated seconds per wall second); ``comm_lost``: devices
    whose controller heartbeat is lost now; ``watchdog_trips``: trips so far; ``step``:
    the stepped-mode request (s of simulated time, in its ``hand_value``).
    """

    speed: float = 0.0
    comm_lost: int = 0
    watchdog_trips: int = 0
    step: Command = field(default_factory=lambda: Command(0.0, 0.0, hand=True))


def add_rig_points(twin: Twin, speed: Callable[[], float], step: Command,
                   comm_lost: Callable[[], float] = lambda: 0.0,
                   watchdog_trips: Callable[[], float] = lambda: 0.0) -> None:
    """Append the rig's own points: simulated time, achieved speed, watchdog state and the
    stepped-mode request.

    ``speed``, ``comm_lost`` and ``watchdog_trips`` are zero-argument callables returning
    the achieved speed (-), the devices in communication loss now and the trips so far.
    """
    pts = twin.points
    pts.add(Point("rig.sim_time", RIG_DEVICE, Kind.STATUS, DType.FLOAT, "s", 0, 1e9,
                  "simulated time since the start of the run", lambda: twin.now))
    pts.add(Point("rig.speed", RIG_DEVICE, Kind.STATUS, DType.FLOAT, "1", 0, 1e5,
                  "achieved speed (simulated seconds per wall second)", speed))
    pts.add(Point("rig.comm_lost", RIG_DEVICE, Kind.STATUS, DType.INT, "1", 0, 1000,
                  "devices whose controller heartbeat is lost now", comm_lost))
    pts.add(Point("rig.watchdog_trips", RIG_DEVICE, Kind.STATUS, DType.INT, "1", 0, 1e6,
                  "communication-loss watchdog trips so far", watchdog_trips))

    def request_step(value: float) -> None:
        step.hand_value += value

    pts.add(Point("rig.step", RIG_DEVICE, Kind.COMMAND, DType.FLOAT, "s", 0, 86_400,
                  "stepped mode: advance simulated time by this much (s)",
                  lambda: step.hand_value, request_step))


def add_state_points(twin: Twin, state: RigState) -> None:
    """`add_rig_points` reading their values from ``state``."""
    add_rig_points(twin, lambda: state.speed, state.step, lambda: float(state.comm_lost),
                   lambda: float(state.watchdog_trips))


def controlled_devices(twin: Twin) -> list[str]:
    """Devices with writable points (those that get a heartbeat and a watchdog)."""
    return [d for d in twin.points.devices() if d != RIG_DEVICE and any(
        p.writable for p in twin.points.of_device(d))]
