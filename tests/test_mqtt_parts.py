"""The MQTT adapter's parts on their own, without a broker: command handling and telemetry
encoding (the broker-backed behaviour is in test_mqtt.py and test_protocol_faults.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from rig.protocols.mqtt import topics
from rig.protocols.mqtt.commands import CommandHandler
from rig.protocols.mqtt.config import MqttConfig, parse_url
from rig.protocols.mqtt.connection import Connection
from rig.protocols.mqtt.counters import Counters
from rig.protocols.mqtt.faults import FaultInjector
from rig.protocols.mqtt.telemetry import TelemetryPublisher
from twin.errors import WriteRefused
from twin.plant import Twin
from twin.site import Site

SITE = "reference-1mw"
PREFIX = "heatrig"


class Outbox:
    """Collects what a part publishes: (topic, decoded JSON payload)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, json.loads(payload)))


@pytest.fixture
def twin() -> Twin:
    return Twin(Site(name=SITE), seed=1)


def command(pid: str, device: str | None = None) -> str:
    return topics.command(PREFIX, SITE, device or pid.split(".", 1)[0], pid)


def test_command_handler_queues_refuses_and_answers_without_a_broker(twin: Twin) -> None:
    config = MqttConfig(site=SITE, prefix=PREFIX, command_queue_bound=2)
    counters = Counters()
    outbox = Outbox()
    handler = CommandHandler(config, twin.points, outbox, counters)
    handler.sim_time = 5.0
    handler.handle(f"{PREFIX}/{SITE}/cdu1/telemetry", b"1", False)  # not a command topic
    handler.handle(command("cdu2.valve_cmd.hand"), b"true", True)  # retained: refused
    handler.handle(command("cdu2.valve_cmd.hand"), b"true", False)
    handler.handle(command("cdu2.valve_cmd"), b'{"value": 0.25, "id": "r1"}', False)
    handler.handle(command("cdu2.valve_cmd"), b"0.5", False)  # the queue holds two
    handler.handle(command("cdu1.supply_temp"), b"40", False)
    reply = topics.reply(PREFIX, SITE, "cdu2")
    assert [(t, body["accepted"], body["code"], body["t"]) for t, body in outbox.sent] == [
        (reply, False, WriteRefused.ILLEGAL_VALUE, 5.0),
        (reply, False, WriteRefused.ILLEGAL_VALUE, 5.0),
        (topics.reply(PREFIX, SITE, "cdu1"), False, WriteRefused.ILLEGAL_ADDRESS, 5.0)]
    assert "retained" in outbox.sent[0][1]["reason"]
    assert "queue full" in outbox.sent[1][1]["reason"] and outbox.sent[1][1]["value"] == 0.5
    assert twin.read("cdu2.valve_cmd.hand") == 0.0  # nothing is applied before apply_pending
    outbox.sent.clear()
    twin.run_until(10)
    results = handler.apply_pending(twin)
    assert [(r.point, r.accepted, r.t, r.request_id) for r in results] == [
        ("cdu2.valve_cmd.hand", True, 10.0, None), ("cdu2.valve_cmd", True, 10.0, "r1")]
    assert twin.read("cdu2.valve_cmd") == 0.25
    assert outbox.sent[1] == (reply, {"point": "cdu2.valve_cmd", "accepted": True,
                                      "reason": None, "code": None, "value": 0.25, "t": 10.0,
                                      "id": "r1"})
    handler.handle(command("cdu2.valve_cmd"), b"0.75", False)
    assert [r.accepted for r in handler.refuse_pending("stopped")] == [False]
    assert outbox.sent[-1][1]["reason"] == "stopped" and outbox.sent[-1][1]["t"] == 10.0
    assert handler.apply_pending(twin) == []
    stats = counters.snapshot()
    assert (stats["commands_accepted"], stats["commands_applied"],
            stats["commands_refused"]) == (3, 2, 5)


def test_telemetry_encoding_seq_and_alarm_changes_without_a_broker(twin: Twin) -> None:
    config = MqttConfig(site=SITE, prefix=PREFIX)
    counters = Counters()
    outbox = Outbox()
    connection = Connection(config, parse_url(config.url), "test", "s", "c/#", counters,
                            lambda *_: None)  # never started: only a fault would use it
    faults = FaultInjector(SITE, connection, counters, lambda: publisher.devices())
    publisher = TelemetryPublisher(config, twin.points, outbox, faults, counters)
    values = {"cdu1": {"cdu1.supply_temp": math.nan, "cdu1.leak": 1.0,
                       "cdu1.isolate": 0.0, "cdu1.pump_speed": 0.5}}
    assert publisher.publish(1.0, "ts1", values) == 2  # telemetry and the raised leak
    values["cdu1"]["cdu1.supply_temp"] = 40.0
    assert publisher.publish(2.0, "ts2", values) == 1  # no change of alarm state
    values["cdu1"]["cdu1.leak"] = 0.0
    assert publisher.publish(3.0, "ts3", values) == 2
    tele, alarm = topics.telemetry(PREFIX, SITE, "cdu1"), topics.alarm(PREFIX, SITE, "cdu1")
    assert [t for t, _ in outbox.sent] == [tele, alarm, tele, tele, alarm]
    first = outbox.sent[0][1]
    assert first == {"t": 1.0, "ts": "ts1", "seq": 0,
                     "values": {"cdu1.supply_temp": None, "cdu1.leak": 1,
                                "cdu1.isolate": 0, "cdu1.pump_speed": 0.5}}
    assert isinstance(first["values"]["cdu1.leak"], int)
    assert [body["seq"] for t, body in outbox.sent if t == tele] == [0, 1, 2]
    assert [body["state"] for t, body in outbox.sent if t == alarm] == ["raised", "cleared"]
    stats = counters.snapshot()
    assert (stats["telemetry"], stats["alarms"]) == (3, 2)
    clear = faults.inject("mqtt_dropout", target="cdu1")
    assert publisher.publish(4.0, "ts4", values) == 1 and len(outbox.sent) == 5
    clear()
    publisher.publish(5.0, "ts5", values)
    assert outbox.sent[-1][1]["seq"] == 4 and counters.snapshot()["suppressed"] == 1
    faults.close()
    connection.close()
