"""Defaults of the twin that the rig shares: random seed, start date, MQTT topic prefix.

A light module (no imports beyond the standard library), so a command line can show them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

DEFAULT_SEED: Final = 0
"""Seed of the twin's random numbers (sensor noise, profiles)."""
DEFAULT_START: Final = datetime(2026, 1, 15, tzinfo=UTC)
"""Calendar date and time of simulated t = 0 (a winter day: heat demand is high)."""
DEFAULT_MQTT_PREFIX: Final = "heatrig"
"""First level of every MQTT topic of a site."""
