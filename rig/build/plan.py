"""`build_plan`: the one place a rig's twin, point table, Modbus map and point list are made.

A live run's table is the twin's plant points, then the rig's own points (``rig.*``),
then one heartbeat per controlled device, in that order, so that neither moves a plant
point's Modbus address. An offline run has the plant points only. The Modbus map carries
the site's unit ids and scaled 16-bit encodings and the heartbeats' ``uint16`` encoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from rig.build.heartbeats import Heartbeat, add_heartbeats, heartbeat_id, heartbeat_options
from rig.build.rigpoints import RigState, add_state_points, controlled_devices
from rig.build.rows import point_rows
from rig.protocols.modbus.registers import ModbusMap
from twin.defaults import DEFAULT_SEED, DEFAULT_START
from twin.errors import ConfigError
from twin.plant import Twin
from twin.site import Site


@dataclass(eq=False)
class RigPlan:
    """A site's twin with its full point table, built once per run (see `build_plan`).

    ``state`` holds the values behind the ``rig.*`` points and ``heartbeats`` the state of
    each controlled device's heartbeat (both empty of meaning for an offline plan).
    """

    site: Site
    twin: Twin
    live: bool
    state: RigState = field(default_factory=RigState)
    heartbeats: dict[str, Heartbeat] = field(default_factory=dict)

    @property
    def site_name(self) -> str:
        """The site's name (in every MQTT topic)."""
        return self.site.name

    @property
    def topics_prefix(self) -> str:
        """The MQTT topic prefix of the site."""
        return self.site.protocols.mqtt_prefix

    @property
    def heartbeat_ids(self) -> list[str]:
        """Point ids of the heartbeats (written without a plant event)."""
        return [heartbeat_id(dev) for dev in self.heartbeats]

    @cached_property
    def modbus_map(self) -> ModbusMap:
        """The register map with the site's unit ids and scaled encodings.

        Raises ConfigError naming every scaled point or unit-id device the table lacks.
        """
        return modbus_map_for(self.site, self.twin, self.heartbeats)

    def point_list(self) -> list[dict[str, Any]]:
        """One row per point with its Modbus address and MQTT topics (`point_rows`)."""
        return point_rows(self.twin.points, self.modbus_map, self.topics_prefix,
                          self.site_name)


def add_live_points(twin: Twin, state: RigState | None = None
                    ) -> tuple[RigState, dict[str, Heartbeat]]:
    """Append the points a live run adds to a plant's: ``rig.*``, then a heartbeat per
    controlled device (changes stamped with the twin's time). Returns the rig state and
    the heartbeats by device."""
    state = state if state is not None else RigState()
    add_state_points(twin, state)
    beats = add_heartbeats(twin.points, controlled_devices(twin), twin)
    return state, beats


def modbus_map_for(site: Site, twin: Twin, heartbeats: dict[str, Heartbeat]) -> ModbusMap:
    """The Modbus map of ``twin`` with ``site``'s unit ids and scaled encodings."""
    proto = site.protocols
    problems = [f"protocols.scaled: no point {pid!r}" for pid in proto.scaled
                if pid not in twin.points]
    problems += [f"protocols.unit_ids: no device {dev!r}" for dev in proto.unit_ids
                 if dev not in twin.points.devices()]
    if problems:
        raise ConfigError([f"site {site.name}: {p}" for p in problems])
    options: dict[str, tuple[str, float]] = {pid: (enc.type, enc.scale)
                                             for pid, enc in proto.scaled.items()}
    options.update(heartbeat_options(heartbeats))
    return ModbusMap.for_twin(twin, options=options, unit_ids=proto.unit_ids or None)


def build_plan(site: Site, *, seed: int = DEFAULT_SEED, start: datetime = DEFAULT_START,
               live: bool = True) -> RigPlan:
    """The twin of ``site`` (``seed``, ``start``) with its point table: for a live run
    (``live``) with the rig's points and heartbeats, and its Modbus map checked against
    the site (ConfigError); for an offline run the plant points only."""
    twin = Twin(site, seed=seed, start=start)
    if not live:
        return RigPlan(site, twin, live=False)
    state, beats = add_live_points(twin)
    plan = RigPlan(site, twin, live=True, state=state, heartbeats=beats)
    _ = plan.modbus_map  # validate now: a bad site fails before anything is opened
    return plan
