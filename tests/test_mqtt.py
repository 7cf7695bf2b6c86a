"""MQTT adapter and embedded broker against a real Mosquitto (and the embedded amqtt).

The twin is driven here as the live runner would: ``run_until`` a sample instant, then
``publish_twin``; commands are applied with ``apply_pending`` at a "slice boundary".
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from servers import Mosquitto, free_port, unique_name

from rig.protocols.mqtt import topics
from rig.protocols.mqtt.adapter import (
    CommandResult,
    MqttAdapter,
    MqttConfig,
    parse_url,
    validate_command,
)
from rig.protocols.mqtt.broker import EmbeddedBroker
from twin.errors import ServiceError, WriteRefused
from twin.plant import Twin
from twin.points import Kind
from twin.site import Site

SITE = "reference-1mw"
WAIT_S = 5.0


# --------------------------------------------------------------------------- helpers


class Subscriber:
    """A stock paho client that records every message of ``pattern`` (re-subscribes)."""

    def __init__(self, port: int, pattern: str) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self._cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique_name("sub"))
        self.client.reconnect_delay_set(0.1, 0.5)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(pattern, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_disconnect = lambda c, u, f, rc, p: self.subscribed.clear()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(WAIT_S), "subscriber did not subscribe"

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[paho.MQTTMessage]], bool],
                 timeout: float = WAIT_S) -> bool:
        """Wait until ``predicate(messages)`` holds."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout)

    def on(self, topic: str) -> list[paho.MQTTMessage]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def twin() -> Twin:
    return Twin(Site(name=SITE), seed=1)


@pytest.fixture
def prefix() -> str:
    return unique_name("heatrig")  # the shared Mosquitto keeps retained messages


@pytest.fixture
def subs() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for sub in made:
        sub.close()


def make_adapter(url: str, twin: Twin, prefix: str, **kw: Any) -> MqttAdapter:
    config = MqttConfig(url=url, site=SITE, prefix=prefix, qos=1, **kw)
    return MqttAdapter(config, twin.points)


@pytest.fixture
def adapter(mosquitto: Mosquitto, twin: Twin, prefix: str) -> Iterator[MqttAdapter]:
    ad = make_adapter(mosquitto.url, twin, prefix).start(wait_s=WAIT_S)
    yield ad
    ad.close()


def replies(sub: Subscriber) -> list[dict[str, Any]]:
    with sub._cond:
        return [json.loads(m.payload) for m in sub.messages if m.topic.endswith("/reply")]


def cmd_topic(prefix: str, pid: str, device: str | None = None) -> str:
    return topics.command(prefix, SITE, device or pid.split(".", 1)[0], pid)


# --------------------------------------------------------------------------- telemetry


def test_every_sensor_point_arrives_within_two_sample_periods(
        mosquitto: Mosquitto, twin: Twin, adapter: MqttAdapter, prefix: str,
        subs: list[Subscriber]) -> None:
    sub = Subscriber(mosquitto.port, f"{topics.base(prefix, SITE)}/+/telemetry")
    subs.append(sub)
    period = twin.site.sensors.period
    sensors = {p.id for p in twin.points.of_kind(Kind.SENSOR)}
    assert len(sensors) > 100
    dropped = "cdu1.supply_temp"  # a dropped-out sensor reads NaN, which travels as null
    twin.sensors.dropout[twin.sensors.position[dropped]] = True
    sent: list[tuple[float, list[float]]] = []
    began = time.monotonic()
    for k in (1, 2):  # two sample periods, paced as the live runner would at x1
        twin.run_until(k * period)
        sent.append((twin.now, twin.measured_values().tolist()))
        assert adapter.publish_twin(twin) >= len(twin.points.devices())
        if k == 1:
            time.sleep(max(0.0, began + period - time.monotonic()))

    def all_seen(msgs: list[paho.MQTTMessage]) -> bool:
        seen: set[str] = set()
        for m in msgs:
            seen.update(json.loads(m.payload)["values"])
        return sensors <= seen

    assert sub.wait_for(all_seen, timeout=2 * period), "sensor points missing"
    assert time.monotonic() - began <= 2 * period + 0.5
    devices = twin.points.devices()
    assert sub.wait_for(lambda ms: len(ms) == 2 * len(devices))
    index = {p.id: p.index for p in twin.points}
    bools = {p.id for p in twin.points if p.dtype.value == "bool"}
    nulls: list[str] = []
    for m in sub.messages:
        body = json.loads(m.payload)
        assert set(body) == {"t", "ts", "seq", "values"}
        device = m.topic.split("/")[-2]
        assert device in devices
        k = body["seq"]
        t, values = sent[k]
        assert body["t"] == t
        assert body["ts"].startswith("2026-") and body["ts"].endswith("+00:00")
        for pid, value in body["values"].items():
            assert pid.split(".", 1)[0] == device
            expected = values[index[pid]]
            if math.isfinite(expected):
                assert value == pytest.approx(expected, abs=1e-12)
            else:
                assert value is None
                nulls.append(pid)
            if pid in bools and value is not None:
                assert type(value) is int and value in (0, 1)
    assert nulls and set(nulls) == {dropped}  # the dropped-out sensor, and nothing else
    for device in devices:  # seq per device increases 0, 1
        seqs = [json.loads(m.payload)["seq"] for m in sub.on(
            topics.telemetry(prefix, SITE, device))]
        assert sorted(seqs) == [0, 1]


def test_alarms_published_when_raised_and_cleared(
        mosquitto: Mosquitto, adapter: MqttAdapter, prefix: str,
        subs: list[Subscriber]) -> None:
    sub = Subscriber(mosquitto.port, f"{topics.base(prefix, SITE)}/+/alarm")
    subs.append(sub)
    ts = "2026-01-15T00:00:00+00:00"
    for t, leak in ((1.0, 0.0), (2.0, 1.0), (3.0, 1.0), (4.0, 0.0), (5.0, float("nan"))):
        adapter.publish_telemetry(t, ts, {"cdu1": {"cdu1.leak": leak, "cdu1.low_level": 0.0}})
    assert sub.wait_for(lambda ms: len(ms) >= 2)
    time.sleep(0.2)
    bodies = [json.loads(m.payload) for m in sub.messages]
    assert [(b["point"], b["state"], b["t"]) for b in bodies] == [
        ("cdu1.leak", "raised", 2.0), ("cdu1.leak", "cleared", 4.0)]
    assert all(m.topic == topics.alarm(prefix, SITE, "cdu1") for m in sub.messages)


# --------------------------------------------------------------------------- commands


def test_commands_change_the_twin_after_apply_pending(
        mosquitto: Mosquitto, twin: Twin, adapter: MqttAdapter, prefix: str,
        subs: list[Subscriber]) -> None:
    sub = Subscriber(mosquitto.port, f"{topics.base(prefix, SITE)}/#")
    subs.append(sub)
    twin.run_until(10)
    sub.publish(cmd_topic(prefix, "cdu2.valve_cmd.hand"), "true")
    sub.publish(cmd_topic(prefix, "cdu2.valve_cmd"), json.dumps({"value": 0.25, "id": "r1"}))
    sub.publish(cmd_topic(prefix, "air.supply_temp_sp.hand"), "1")
    sub.publish(cmd_topic(prefix, "air.supply_temp_sp"), "26.5")
    deadline = time.monotonic() + WAIT_S
    while adapter.stats()["commands_accepted"] < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert twin.read("cdu2.valve_cmd.hand") == 0.0  # nothing applied before the slice boundary
    results = adapter.apply_pending(twin)
    assert [r.point for r in results] == ["cdu2.valve_cmd.hand", "cdu2.valve_cmd",
                                          "air.supply_temp_sp.hand", "air.supply_temp_sp"]
    assert all(r.accepted and r.t == 10.0 for r in results)
    assert twin.read("cdu2.valve_cmd") == 0.25
    assert twin.read("air.supply_temp_sp") == 26.5
    assert [e.message for e in twin.events if e.source == "mqtt"][-1] == "air.supply_temp_sp = 26.5"
    assert sub.wait_for(lambda ms: len(replies(sub)) >= 4)
    got = replies(sub)
    assert got[1] == {"point": "cdu2.valve_cmd", "accepted": True, "reason": None,
                      "code": None, "value": 0.25, "t": 10.0, "id": "r1"}
    assert sub.on(topics.reply(prefix, SITE, "air"))  # answered on the device's reply topic
    twin.run_until(20)  # the plant obeys the external value
    assert twin.truth("cdu2.valve_cmd") == 0.25
    assert adapter.apply_pending(twin) == []


def _bad_commands(twin: Twin) -> list[tuple[str, str, bytes, str, int]]:
    """(topic device, point, payload, expected reason fragment, code)."""
    hi = twin.points["cdu1.supply_temp_sp"].hi
    nested = b"[" * 30000 + b"]" * 30000
    return [
        ("cdu1", "cdu1.supply_temp_sp", b"not json", "not JSON", 3),
        ("cdu1", "cdu1.supply_temp_sp", b"\x80\x81", "not JSON", 3),
        ("cdu1", "cdu1.supply_temp_sp", b"", "not JSON", 3),
        ("cdu1", "cdu1.supply_temp_sp", b'"41"', "expected a number, got str", 3),
        ("cdu1", "cdu1.supply_temp_sp", b'{"value": {"a": 1}}', "expected a number", 3),
        ("cdu1", "cdu1.supply_temp_sp", b"[41]", "expected a number, got list", 3),
        ("cdu1", "cdu1.supply_temp_sp", b"null", "expected a number", 3),
        ("cdu1", "cdu1.supply_temp_sp", b'{"v": 41}', "unknown key", 3),
        ("cdu1", "cdu1.supply_temp_sp", b'{"id": "x"}', "no \"value\"", 3),
        ("cdu1", "cdu1.supply_temp_sp", b"NaN", "finite", 3),
        ("cdu1", "cdu1.supply_temp_sp", b'{"value": Infinity}', "finite", 3),
        ("cdu1", "cdu1.supply_temp_sp", b"-Infinity", "finite", 3),
        ("cdu1", "cdu1.supply_temp_sp", b"1e999", "finite", 3),
        ("cdu1", "cdu1.supply_temp_sp", b"1" + b"0" * 400, "out of range", 3),
        ("cdu1", "cdu1.supply_temp_sp", str(hi + 1).encode(), "outside", 3),
        ("cdu1", "cdu1.supply_temp_sp", b"-1", "outside", 3),
        ("cdu1", "cdu1.isolate", b"2", "expected 0/1", 3),
        ("cdu1", "cdu1.isolate", b"0.5", "expected 0/1", 3),
        ("cdu1", "cdu1.supply_temp_sp", nested, "not JSON", 3),
        ("cdu1", "cdu1.supply_temp_sp", b"4" * (1 << 20), "exceeds the limit", 3),
        ("cdu1", "cdu1.no_such_point", b"1", "unknown point", 2),
        ("cdu1", "cdu1.supply_temp", b"40", "not writable", 2),
        ("cdu1", "cdu1.leak", b"0", "not writable", 2),
        ("cdu1", "air.supply_temp_sp", b"25", "belongs to device 'air'", 2),
        ("nodev", "nodev.x", b"1", "unknown point", 2),
    ]


def test_malformed_commands_are_refused_and_change_nothing(
        mosquitto: Mosquitto, twin: Twin, adapter: MqttAdapter, prefix: str,
        subs: list[Subscriber], monkeypatch: pytest.MonkeyPatch) -> None:
    sub = Subscriber(mosquitto.port, f"{topics.base(prefix, SITE)}/+/reply")
    subs.append(sub)
    twin.run_until(5)
    assert adapter.apply_pending(twin) == []  # slice boundary: the adapter learns t = 5 s
    calls: list[tuple[str, float]] = []
    for point in twin.points:  # any write reaching a point would show up here
        if point.setter is not None:
            original = point.setter
            monkeypatch.setattr(point, "setter",
                                lambda v, pid=point.id, f=original: (calls.append((pid, v)), f(v)))
    truth_before = twin.truth_values().tolist()
    events_before = len(twin.events)
    bad = _bad_commands(twin)
    for device, pid, payload, _, _ in bad:
        sub.publish(cmd_topic(prefix, pid, device), payload)
    assert sub.wait_for(lambda ms: len(ms) >= len(bad), timeout=10), [
        (r["point"], r["reason"]) for r in replies(sub)]
    got = replies(sub)
    assert len(got) == len(bad)
    for (_, pid, _, fragment, code), reply in zip(bad, got, strict=False):
        assert reply["point"] == pid
        assert reply["accepted"] is False
        assert fragment in reply["reason"], (pid, reply)
        assert reply["code"] == code
        assert reply["t"] == 5.0
    assert adapter.apply_pending(twin) == []
    assert calls == []
    assert twin.truth_values().tolist() == truth_before
    assert len(twin.events) == events_before
    stats = adapter.stats()
    assert stats["commands_refused"] == len(bad)
    assert stats["commands_accepted"] == 0
    assert stats["callback_errors"] == 0


def test_retained_command_is_not_replayed_on_connect(
        mosquitto: Mosquitto, twin: Twin, prefix: str, subs: list[Subscriber]) -> None:
    sub = Subscriber(mosquitto.port, f"{topics.base(prefix, SITE)}/+/reply")
    subs.append(sub)
    topic = cmd_topic(prefix, "cdu1.valve_cmd")
    sub.publish(topic, b"0.3", retain=True)  # stale by the time a rig connects
    try:
        ad = make_adapter(mosquitto.url, twin, prefix).start(wait_s=WAIT_S)
        try:
            assert sub.wait_for(lambda ms: len(ms) == 1)
            assert "retained" in replies(sub)[0]["reason"]
            assert ad.apply_pending(twin) == []
        finally:
            ad.close()
    finally:
        sub.publish(topic, b"", retain=True)  # clear it


def test_validate_command_without_broker(twin: Twin) -> None:
    pts = twin.points
    assert validate_command(pts, "cdu1", "cdu1.isolate", b"true") == (1.0, None)
    assert validate_command(pts, "hp1", "hp1.speed_cmd", b'{"value": 1, "id": 7}') == (1.0, 7)
    with pytest.raises(WriteRefused) as err:
        validate_command(pts, "hp1", "hp1.speed_cmd", b"0.5" + b" " * 100, max_bytes=100)
    assert err.value.code == WriteRefused.ILLEGAL_VALUE
    with pytest.raises(WriteRefused, match="id must be"):
        validate_command(pts, "hp1", "hp1.speed_cmd", b'{"value": 1, "id": [1]}')


def test_exception_in_a_callback_does_not_stop_the_network_loop(
        mosquitto: Mosquitto, twin: Twin, adapter: MqttAdapter, prefix: str,
        subs: list[Subscriber], monkeypatch: pytest.MonkeyPatch) -> None:
    sub = Subscriber(mosquitto.port, f"{topics.base(prefix, SITE)}/+/reply")
    subs.append(sub)
    handle = adapter._handle_command

    def explode_once(*args: Any) -> None:
        monkeypatch.setattr(adapter, "_handle_command", handle)
        raise RuntimeError("boom")

    monkeypatch.setattr(adapter, "_handle_command", explode_once)
    sub.publish(cmd_topic(prefix, "hp1.speed_cmd"), b"0.5")
    sub.publish(cmd_topic(prefix, "hp1.speed_cmd"), b"0.6")
    deadline = time.monotonic() + WAIT_S
    while adapter.stats()["commands_accepted"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert adapter.stats()["callback_errors"] == 1
    assert [r.value for r in adapter.apply_pending(twin)] == [0.6]
    assert adapter.connected


# --------------------------------------------------------------------------- status and will


def test_status_is_retained_and_last_will_is_offline(
        mosquitto: Mosquitto, twin: Twin, prefix: str, subs: list[Subscriber]) -> None:
    status = topics.status(prefix, SITE)
    ad = make_adapter(mosquitto.url, twin, prefix, reconnect_min_s=2.0,
                      reconnect_max_s=4.0).start(wait_s=WAIT_S)
    try:
        late = Subscriber(mosquitto.port, status)  # joins after the fact: retained online
        subs.append(late)
        assert late.wait_for(lambda ms: [m.payload for m in ms] == [b"online"])
        assert late.messages[0].retain
        # Crash the connection (no DISCONNECT): the broker publishes the will.
        sock = ad._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        assert late.wait_for(lambda ms: [m.payload for m in ms][-1:] == [b"offline"])
        witness = Subscriber(mosquitto.port, status)  # before the adapter's 2 s backoff ends
        subs.append(witness)
        assert witness.wait_for(lambda ms: len(ms) >= 1)
        assert witness.messages[0].payload == b"offline" and witness.messages[0].retain
        # It reconnects by itself and says online again.
        assert late.wait_for(lambda ms: [m.payload for m in ms][-1:] == [b"online"],
                             timeout=8.0)
        assert ad.wait_connected(WAIT_S) and ad.stats()["reconnects"] == 1
    finally:
        ad.close()
    after = Subscriber(mosquitto.port, status)  # clean close: retained offline
    subs.append(after)
    assert after.wait_for(lambda ms: len(ms) >= 1)
    assert after.messages[0].payload == b"offline" and after.messages[0].retain


def test_start_fails_cleanly_when_no_broker(twin: Twin, prefix: str) -> None:
    ad = make_adapter(f"mqtt://127.0.0.1:{free_port()}", twin, prefix,
                      reconnect_min_s=0.1, reconnect_max_s=0.2)
    with pytest.raises(ServiceError, match="not reachable"):
        ad.start(wait_s=0.5)
    assert ad._client._thread is None  # the network thread stopped


def test_url_parsing_and_config() -> None:
    assert parse_url("mqtt://127.0.0.1").port == 1883
    assert parse_url("mqtts://broker.example:9999").tls
    assert parse_url("mqtts://broker.example").port == 8883
    for bad in ("http://x", "mqtt://user:pw@host:1883", "mqtt://host/path", "mqtt://:1883",
                "mqtt://host:99999"):
        with pytest.raises(ValueError):
            parse_url(bad)
    with pytest.raises(ValueError):
        MqttConfig(qos=2)
    cfg = MqttConfig.for_site(Site(name=SITE), "mqtt://127.0.0.1:1")
    assert (cfg.prefix, cfg.site) == ("heatrig", SITE)


def test_credentials_come_from_the_environment(
        mosquitto: Mosquitto, twin: Twin, prefix: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HEATRIG_MQTT_USERNAME", "rig-user")
    monkeypatch.setenv("HEATRIG_MQTT_PASSWORD", "s3cret-pw")
    caplog.set_level("DEBUG")
    ad = make_adapter(mosquitto.url, twin, prefix)
    assert ad._client.username == "rig-user"  # anonymous broker accepts it anyway
    ad.start(wait_s=WAIT_S)
    ad.close()
    assert "s3cret-pw" not in caplog.text and "s3cret-pw" not in repr(ad.config)


# --------------------------------------------------------------------------- broker loss


def test_broker_loss_queues_then_reconnects_and_flows_again(
        fresh_mosquitto: Mosquitto, twin: Twin, prefix: str, subs: list[Subscriber]) -> None:
    ad = make_adapter(fresh_mosquitto.url, twin, prefix, queue_bound=20, reconnect_min_s=0.2,
                      reconnect_max_s=0.5).start(wait_s=WAIT_S)
    try:
        sub = Subscriber(fresh_mosquitto.port, f"{topics.base(prefix, SITE)}/#")
        subs.append(sub)
        twin.run_until(1)
        ad.publish_twin(twin)
        n_dev = len(twin.points.devices())
        assert sub.wait_for(lambda ms: sum(m.topic.endswith("/telemetry") for m in ms) == n_dev)

        fresh_mosquitto.kill()
        deadline = time.monotonic() + WAIT_S
        while ad.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not ad.connected
        for t in (2, 3, 4):  # 33 messages into a buffer of 20
            twin.run_until(t)
            ad.publish_twin(twin)
        stats = ad.stats()
        assert stats["queued"] == 20 and stats["dropped"] == 3 * n_dev - 20
        assert stats["connected"] is False

        fresh_mosquitto.start()  # same port
        assert ad.wait_connected(10.0), ad.stats()
        assert sub.subscribed.wait(10.0)
        deadline = time.monotonic() + WAIT_S
        while ad.stats()["queued"] and time.monotonic() < deadline:
            time.sleep(0.01)
        twin.run_until(5)
        ad.publish_twin(twin)
        fifth = topics.telemetry(prefix, SITE, "district")
        assert sub.wait_for(lambda ms: any(m.topic == fifth and json.loads(m.payload)["t"] == 5.0
                                           for m in ms))
        stats = ad.stats()
        assert stats["reconnects"] == 1 and stats["queued"] == 0
        # The commands topic was subscribed again on the new connection.
        sub.publish(cmd_topic(prefix, "hp2.speed_cmd"), b"0.7")
        deadline = time.monotonic() + WAIT_S
        while ad.stats()["commands_accepted"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r.accepted for r in ad.apply_pending(twin)] == [True]
    finally:
        ad.close()


def test_pending_commands_are_answered_on_close(
        mosquitto: Mosquitto, twin: Twin, prefix: str, subs: list[Subscriber]) -> None:
    sub = Subscriber(mosquitto.port, f"{topics.base(prefix, SITE)}/+/reply")
    subs.append(sub)
    ad = make_adapter(mosquitto.url, twin, prefix).start(wait_s=WAIT_S)
    sub.publish(cmd_topic(prefix, "hp2.speed_cmd"), b"0.7")
    deadline = time.monotonic() + WAIT_S
    while ad.stats()["commands_accepted"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    ad.close()
    assert sub.wait_for(lambda ms: len(ms) == 1)
    assert "stopped before" in replies(sub)[0]["reason"]


# --------------------------------------------------------------------------- embedded broker


def test_embedded_broker_end_to_end(twin: Twin, prefix: str, subs: list[Subscriber]) -> None:
    broker = EmbeddedBroker()
    url = broker.start()
    try:
        assert url == f"mqtt://127.0.0.1:{broker.port}" and broker.port > 0
        sub = Subscriber(broker.port, f"{topics.base(prefix, SITE)}/#")
        subs.append(sub)
        ad = make_adapter(url, twin, prefix).start(wait_s=WAIT_S)
        try:
            twin.run_until(1)
            ad.publish_twin(twin)
            sub.publish(cmd_topic(prefix, "drycooler1.fan_speed_cmd"), b'{"value": 0.4}')
            n_dev = len(twin.points.devices())
            assert sub.wait_for(
                lambda ms: sum(m.topic.endswith("/telemetry") for m in ms) == n_dev)
            deadline = time.monotonic() + WAIT_S
            while ad.stats()["commands_accepted"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            result: list[CommandResult] = ad.apply_pending(twin)
            assert [(r.point, r.accepted, r.value) for r in result] == [
                ("drycooler1.fan_speed_cmd", True, 0.4)]
            assert sub.wait_for(lambda ms: any(m.topic.endswith("/reply") for m in ms))
            seen = set()
            for m in sub.messages:
                if m.topic.endswith("/telemetry"):
                    seen.update(json.loads(m.payload)["values"])
            assert seen == set(twin.points.ids())
        finally:
            ad.close()
        sub.close()
        subs.clear()
    finally:
        broker.stop()
    assert not broker.running


def test_embedded_broker_port_in_use_is_a_clear_error() -> None:
    with EmbeddedBroker() as first, pytest.raises(ServiceError, match="cannot start"):
        EmbeddedBroker(first.port).start()
