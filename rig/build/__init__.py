"""Building a rig: the twin of a site with its full point table, Modbus map and point list.

Every entry point (live, offline, replay, scenario check, ``heatrig points``, the Grafana
generator) gets its twin from `build_plan`, so what is listed is what is served.
"""

from rig.build.heartbeats import (
    HEARTBEAT,
    HEARTBEAT_MAX,
    Heartbeat,
    add_heartbeats,
    heartbeat_id,
    heartbeat_options,
)
from rig.build.plan import RigPlan, add_live_points, build_plan, modbus_map_for
from rig.build.rigpoints import (
    RIG_DEVICE,
    RigState,
    add_rig_points,
    add_state_points,
    controlled_devices,
)
from rig.build.rows import point_rows

__all__ = [
    "HEARTBEAT", "HEARTBEAT_MAX", "RIG_DEVICE", "Heartbeat", "RigPlan", "RigState",
    "add_heartbeats", "add_live_points", "add_rig_points", "add_state_points", "build_plan",
    "controlled_devices", "heartbeat_id", "heartbeat_options", "modbus_map_for", "point_rows",
]
