"""Defaults of a run, in one place: the command line, the runners and scenario files use
these. Times in seconds (simulated unless stated), speeds in simulated s per wall s.

The twin's own defaults (random seed, start date, MQTT topic prefix) live in
`twin.defaults` and the MQTT QoS beside the MQTT configuration; they are imported here so
that the rig reads every default from this module.
"""

from __future__ import annotations

from typing import Final, Literal

from rig.protocols.mqtt.config import DEFAULT_QOS as MQTT_QOS
from twin.defaults import DEFAULT_MQTT_PREFIX, DEFAULT_SEED, DEFAULT_START

DEFAULT_SITE: Final = "reference-1mw"
"""The site of a scenario that names none, and of the dashboards."""

OFFLINE_DURATION_S: Final = 86_400.0
"""Simulated time of ``heatrig sim`` (24 h)."""
OFFLINE_RECORD_PERIOD_S: Final = 10.0
"""Recording period of an offline run."""

LIVE_SPEED: Final = 1.0
"""Speed of a live run of a site (real time)."""
SCENARIO_SPEED: Final = 60.0
"""Speed of a scenario run (a scenario file may set its own)."""
LIVE_RECORD_PERIOD_S: Final = 1.0
"""Recording period of a live run and of a scenario."""
SLICE_S: Final = 0.1
"""Wall time of one slice of a live run (wall s)."""
MODBUS_ADDRESS: Final = "127.0.0.1:5020"
"""Where a live run serves Modbus TCP."""
WATCHDOG_TIMEOUT_S: Final = 60.0
"""Communication-loss watchdog timeout of every controlled device."""
WATCHDOG_FALLBACK: Final[Literal["hold", "safe"]] = "safe"
"""What a device does when its controller falls silent."""

__all__ = [
    "DEFAULT_MQTT_PREFIX", "DEFAULT_SEED", "DEFAULT_SITE", "DEFAULT_START",
    "LIVE_RECORD_PERIOD_S", "LIVE_SPEED", "MODBUS_ADDRESS", "MQTT_QOS", "OFFLINE_DURATION_S",
    "OFFLINE_RECORD_PERIOD_S", "SCENARIO_SPEED", "SLICE_S", "WATCHDOG_FALLBACK",
    "WATCHDOG_TIMEOUT_S",
]
