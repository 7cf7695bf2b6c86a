"""Every entry point takes its defaults from `rig.config.defaults` (and `twin.defaults`)."""

from __future__ import annotations

import inspect
from pathlib import Path

from rig.cli import build_parser
from rig.config import defaults
from rig.config.scenario import Scenario
from rig.protocols.mqtt.config import MqttConfig
from rig.runtime.live import LiveOptions
from rig.runtime.offline import run_offline
from twin.plant import Twin
from twin.site import Site


def test_the_command_line_uses_the_defaults() -> None:
    sim = build_parser().parse_args(["sim", "reference-1mw"])
    assert (sim.duration, sim.seed, sim.record_period) == (
        defaults.OFFLINE_DURATION_S, defaults.DEFAULT_SEED, defaults.OFFLINE_RECORD_PERIOD_S)
    run = build_parser().parse_args(["run", "reference-1mw"])
    assert (run.modbus, run.mqtt_qos, run.slice) == (
        defaults.MODBUS_ADDRESS, defaults.MQTT_QOS, defaults.SLICE_S)


def test_runners_scenarios_and_the_twin_use_the_defaults() -> None:
    live = LiveOptions(out_dir=Path("x"))
    assert (live.speed, live.slice_s, live.modbus, live.mqtt_qos, live.seed, live.start,
            live.record_period_s, live.watchdog_timeout_s, live.watchdog_fallback) == (
        defaults.LIVE_SPEED, defaults.SLICE_S, defaults.MODBUS_ADDRESS, defaults.MQTT_QOS,
        defaults.DEFAULT_SEED, defaults.DEFAULT_START, defaults.LIVE_RECORD_PERIOD_S,
        defaults.WATCHDOG_TIMEOUT_S, defaults.WATCHDOG_FALLBACK)
    offline = inspect.signature(run_offline).parameters
    assert (offline["seed"].default, offline["start"].default,
            offline["record_period_s"].default) == (
        defaults.DEFAULT_SEED, defaults.DEFAULT_START, defaults.OFFLINE_RECORD_PERIOD_S)
    scenario = Scenario.model_validate({"name": "s", "duration": 60})
    assert (scenario.site, scenario.seed, scenario.start, scenario.speed,
            scenario.record_period, scenario.watchdog.timeout, scenario.watchdog.fallback) == (
        defaults.DEFAULT_SITE, defaults.DEFAULT_SEED, defaults.DEFAULT_START,
        defaults.SCENARIO_SPEED, defaults.LIVE_RECORD_PERIOD_S, defaults.WATCHDOG_TIMEOUT_S,
        defaults.WATCHDOG_FALLBACK)
    site = Site(name="reference-1mw")
    twin = Twin(site)
    assert (twin.seed, twin.calendar.start) == (defaults.DEFAULT_SEED, defaults.DEFAULT_START)
    assert site.protocols.mqtt_prefix == MqttConfig().prefix == defaults.DEFAULT_MQTT_PREFIX
    assert MqttConfig().qos == defaults.MQTT_QOS
