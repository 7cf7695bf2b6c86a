"""The MQTT side under hostile clients and broker crashes.

Retained messages of the embedded broker go only to matching filters, once; topics and
payloads from clients cannot forge a line of the rig's log; the adapter is back within 2 s
of a restarted broker (the full 20-restart version is ``bench/soak_broker.py``); mqtts://
works against a Mosquitto that requires a client certificate.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from servers import Mosquitto, _mqtt_connect_packet, _recv_exactly, unique_name

from rig.protocols.logsafe import safe_for_log
from rig.protocols.mqtt import topics
from rig.protocols.mqtt.adapter import MqttAdapter, MqttConfig
from rig.protocols.mqtt.broker import EmbeddedBroker
from twin.errors import ConfigError, ServiceError
from twin.plant import Twin
from twin.site import Site

SITE = "reference-1mw"
WAIT_S = 5.0
RECONNECT_BOUND_S = 2.5  # the functional bound is 2 s; margin for a loaded machine


class Listener:
    """A stock paho client subscribing to ``pattern`` once; records every message."""

    def __init__(self, port: int, pattern: str, reconnect: bool = False) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.first_at: dict[str, float] = {}
        self._cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique_name("listen"))
        self.client.reconnect_delay_set(0.05, 0.1)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(pattern, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_disconnect = lambda c, u, f, rc, p: self.subscribed.clear()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(WAIT_S), "listener did not subscribe"

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(self, predicate: Any, timeout: float = WAIT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    made: list[Listener] = []
    yield made
    for listener in made:
        listener.close()


def _adapter(url: str, twin: Twin, prefix: str, **kw: Any) -> MqttAdapter:
    config = MqttConfig(url=url, site=SITE, prefix=prefix, qos=1, **kw)
    return MqttAdapter(config, twin.points)


# --------------------------------------------------------------------------- retained


def test_embedded_broker_sends_retained_status_only_to_matching_filters_once(
        listeners: list[Listener]) -> None:
    prefix = unique_name("heatrig")
    twin = Twin(Site(name=SITE), seed=1)
    status = topics.base(prefix, SITE) + "/status"
    with EmbeddedBroker() as broker:
        wide = Listener(broker.port, f"{topics.base(prefix, SITE)}/#")  # a matching filter
        listeners.append(wide)
        ad = _adapter(broker.url, twin, prefix).start(wait_s=WAIT_S)
        try:
            assert wide.wait_for(lambda ms: any(m.topic == status for m in ms))
            unrelated = Listener(broker.port, "foo/bar")
            matching = Listener(broker.port, status)
            listeners += [unrelated, matching]
            assert matching.wait_for(lambda ms: len(ms) >= 1)
            time.sleep(0.5)  # a duplicate or a stray delivery would arrive by now
            assert [(m.topic, m.payload, m.retain) for m in matching.messages] == [
                (status, b"online", True)]
            assert unrelated.messages == []
        finally:
            ad.close()
            for listener in listeners:  # before the broker stops
                listener.close()
            listeners.clear()


# --------------------------------------------------------------------------- log forging


def test_safe_for_log_escapes_control_characters_only() -> None:
    assert safe_for_log("heatrig/site/cdu1/cmd/cdu1.valve_cmd") == (
        "heatrig/site/cdu1/cmd/cdu1.valve_cmd")
    assert safe_for_log("a\nb\r\tc\x1b[31m\x00\u2028") == "a\\nb\\r\\tc\\x1b[31m\\x00\\u2028"
    assert safe_for_log(b"x\ny\xff") == "x\\ny\\xff"
    assert safe_for_log("é/ü") == "é/ü"
    long = safe_for_log("x" * 1000, limit=50)
    assert len(long) <= 60 and long.endswith("...")


def test_topic_with_newline_cannot_forge_a_log_line(
        caplog: pytest.LogCaptureFixture, listeners: list[Listener]) -> None:
    """Mosquitto refuses control characters in topics; the embedded broker passes them."""
    prefix = unique_name("heatrig")
    twin = Twin(Site(name=SITE), seed=1)
    caplog.set_level(logging.DEBUG)
    broker = EmbeddedBroker()
    broker.start()
    ad = _adapter(broker.url, twin, prefix).start(wait_s=WAIT_S)
    try:
        base = topics.base(prefix, SITE)
        replies = Listener(broker.port, f"{base}/+/reply")
        listeners.append(replies)
        forged = [
            f"{base}/cdu1/cmd/x\nFAKE LOG LINE",  # a command topic with a bad point id
            f"{base}/cdu1/cmd/cdu1.valve_cmd\r\nFAKE LOG LINE 2",
            f"{base}/cdu\nFAKE device/cmd/cdu1.valve_cmd",
        ]
        for topic in forged:
            replies.client.publish(topic, b"0.5", qos=1).wait_for_publish(WAIT_S)
        replies.client.publish(f"{base}/cdu1/cmd/cdu1.valve_cmd",
                               b'{"value": "\\nFAKE from payload"}', qos=1)
        replies.client.publish(f"{base}/cdu1/cmd/cdu1.valve_cmd", b"\nFAKE raw payload\n",
                               qos=1).wait_for_publish(WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while ad.stats()["commands_refused"] < len(forged) + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ad.stats()["commands_refused"] == len(forged) + 2
    finally:
        ad.close()
        for listener in listeners:
            listener.close()
        listeners.clear()
        broker.stop()
    text = caplog.text
    assert "FAKE" in text  # the messages were logged, escaped
    lines = [r.getMessage() for r in caplog.records]
    assert not [line for line in lines if "\n" in line or "\r" in line]
    assert not [line for line in text.splitlines() if line.lstrip().startswith("FAKE")]


# --------------------------------------------------------------------------- reconnect


def reconnect_times(broker: Mosquitto, downtimes: list[float], **config: Any) -> tuple[
        list[float], dict[str, Any]]:
    """Kill ``broker`` and restart it after each of ``downtimes`` (s) while an adapter
    publishes telemetry. (Outages of a few seconds are the ones an open-ended backoff
    turns into long waits.)

    Returns the times (s) from each restart's readiness to the first telemetry message a
    subscriber receives afterwards, and the adapter's final stats. ``config``: more
    `MqttConfig` fields (e.g. the reconnect delays).
    """
    prefix = unique_name("heatrig")
    twin = Twin(Site(name=SITE), seed=1)
    telemetry = topics.telemetry(prefix, SITE, "district")
    ad = _adapter(broker.url, twin, prefix, **config).start(wait_s=WAIT_S)
    stop = threading.Event()
    got = threading.Event()
    arrivals: list[float] = []

    def publish_loop() -> None:
        t = 0.0
        while not stop.is_set():
            t += 1.0
            twin.run_until(t)
            ad.publish_twin(twin)
            stop.wait(0.2)

    def on_message(client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic == telemetry:
            arrivals.append(time.monotonic())
            got.set()

    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique_name("soak"))
    sub.reconnect_delay_set(0.05, 0.1)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(telemetry, qos=1)
    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    publisher = threading.Thread(target=publish_loop, daemon=True)
    publisher.start()
    times = []
    try:
        assert got.wait(WAIT_S), "no telemetry before the first restart"
        for down_s in downtimes:
            broker.kill()
            time.sleep(down_s)
            got.clear()
            broker.start()
            back = time.monotonic()
            assert got.wait(10.0), f"no telemetry 10 s after a restart: {ad.stats()}"
            times.append(next(a for a in arrivals if a >= back) - back)
    finally:
        stop.set()
        publisher.join(WAIT_S)
        deadline = time.monotonic() + 10.0  # the last flush is confirmed (PUBACK) by then
        while ad.stats()["published"] < ad.stats()["sent"] and time.monotonic() < deadline:
            time.sleep(0.05)
        sub.disconnect()
        sub.loop_stop()
        stats = ad.stats()
        ad.close()
    return times, stats


@pytest.mark.slow
def test_reconnect_after_broker_restarts_is_bounded(fresh_mosquitto: Mosquitto) -> None:
    times, stats = reconnect_times(fresh_mosquitto, [0.2, 1.2, 2.2, 3.2, 4.5])
    print(f"reconnect s: min {min(times):.2f} median {statistics.median(times):.2f} "
          f"max {max(times):.2f}")
    assert max(times) <= RECONNECT_BOUND_S, times
    assert stats["reconnects"] == 5
    # Nothing handed over was lost: the outages fit the outbound buffer, and every message
    # was confirmed by the broker (PUBACK), those in flight at a kill sent again by paho.
    assert stats["dropped"] == 0 and stats["queued"] == 0, stats
    assert stats["published"] == stats["sent"] == stats["telemetry"] + 6, stats
    assert json.dumps(stats)  # stats stay JSON for summary.json


# --------------------------------------------------------------------------- TLS


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=heatrig test CA", "-keyout", "ca.key", "-out", "ca.pem")
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"),
                        ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=heatrig {name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (directory / f"{name}.ext").write_text(extra + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem")
    other = directory / "other"
    other.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=another CA", "-keyout", "ca.key", "-out", "ca.pem"],
                   cwd=other, check=True, capture_output=True)
    return {n: directory / f"{n}" for n in ("ca.pem", "server.pem", "server.key",
                                           "client.pem", "client.key")} | {
        "other_ca.pem": other / "ca.pem"}


TLS_USER, TLS_PASSWORD = "rig-user", "tls-pw-8Jd"


class MosquittoTLS(Mosquitto):
    """Mosquitto with one TLS listener that requires a client certificate from the CA and
    the user ``TLS_USER`` with ``TLS_PASSWORD`` (no anonymous clients)."""

    name = "mosquitto-tls"

    def __init__(self, certs: dict[str, Path]) -> None:
        super().__init__()
        self.certs = certs
        self.url = f"mqtts://{self.host}:{self.port}"

    def _prepare(self) -> None:
        super()._prepare()
        text = self.config_path.read_text()
        c = self.certs
        passwords = self.workdir / "passwords"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), TLS_USER, TLS_PASSWORD],
                       check=True, capture_output=True)
        self.config_path.write_text(
            text.replace("allow_anonymous true", "allow_anonymous false")
            + f"password_file {passwords}\ncafile {c['ca.pem']}\ncertfile {c['server.pem']}\n"
            f"keyfile {c['server.key']}\nrequire_certificate true\n")

    def _ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.certs["ca.pem"]))
        context.load_cert_chain(self.certs["client.pem"], self.certs["client.key"])
        with socket.create_connection((self.host, self.port), timeout=1.0) as raw, \
                context.wrap_socket(raw, server_hostname=self.host) as sock:
            sock.sendall(_mqtt_connect_packet(f"heatrig-probe-{os.getpid()}"))
            ack = _recv_exactly(sock, 4)
        return ack[:3] == b"\x20\x02\x00"  # a CONNACK (anonymous: not authorised)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoTLS]:
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    broker = MosquittoTLS(certs)
    broker.start()
    yield broker
    broker.close()


def test_mqtts_with_a_client_certificate_and_a_password(
        tls_broker: MosquittoTLS, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    certs = tls_broker.certs
    monkeypatch.setenv("HEATRIG_MQTT_USERNAME", TLS_USER)
    monkeypatch.setenv("HEATRIG_MQTT_PASSWORD", "wrong-" + TLS_PASSWORD)
    files = {"ca_file": str(certs["ca.pem"]), "cert_file": str(certs["client.pem"]),
             "key_file": str(certs["client.key"])}
    twin = Twin(Site(name=SITE), seed=1)
    with pytest.raises(ServiceError, match=r"refused.*[Nn]ot authori") as err:
        _adapter(tls_broker.url, twin, unique_name("heatrig"), **files).start(wait_s=1.5)
    assert TLS_PASSWORD not in str(err.value)
    monkeypatch.setenv("HEATRIG_MQTT_PASSWORD", TLS_PASSWORD)
    ad = _adapter(tls_broker.url, twin, unique_name("heatrig"), **files).start(wait_s=WAIT_S)
    try:
        twin.run_until(1)
        ad.publish_twin(twin)
        deadline = time.monotonic() + WAIT_S
        n_dev = len(twin.points.devices())
        while ad.stats()["published"] < n_dev + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ad.stats()["published"] == n_dev + 1  # status and telemetry, confirmed
    finally:
        ad.close()
    assert TLS_PASSWORD not in caplog.text


def test_mqtts_refuses_a_wrong_ca_or_a_missing_client_certificate(
        tls_broker: MosquittoTLS) -> None:
    certs = tls_broker.certs
    twin = Twin(Site(name=SITE), seed=1)
    for files in ({"ca_file": str(certs["other_ca.pem"]), "cert_file": str(certs["client.pem"]),
                   "key_file": str(certs["client.key"])},
                  {"ca_file": str(certs["ca.pem"])}):
        ad = _adapter(tls_broker.url, twin, unique_name("heatrig"), reconnect_min_s=0.1,
                      reconnect_max_s=0.2, **files)
        with pytest.raises(ServiceError, match=r"not reachable.*did the TLS handshake fail"):
            ad.start(wait_s=1.0)
    with pytest.raises(ConfigError, match="need an mqtts:// url"):
        MqttConfig(url="mqtt://127.0.0.1:1883", ca_file=str(certs["ca.pem"]))
    with pytest.raises(ConfigError, match="is not a file"):
        MqttConfig(url=tls_broker.url, ca_file=str(certs["ca.pem"]) + ".missing")
    with pytest.raises(ConfigError, match="cannot load"):
        _adapter(tls_broker.url, twin, "p", ca_file=str(certs["ca.pem"]),
                 cert_file=str(certs["ca.pem"]), key_file=str(certs["server.pem"]))
