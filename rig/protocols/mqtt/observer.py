"""Watches what the systems under test publish over MQTT, for the expectations.

A paho client subscribes to the SUT topics and queues every message (thread-safe,
bounded); the live runner drains the queue at each slice boundary and records each
message with the simulated time it was seen (`rig.assess.expect.record_mqtt`).
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from rig.protocols.mqtt.adapter import parse_url

log = logging.getLogger(__name__)


class Observer:
    """Subscribes to ``filters`` on the broker at ``url``; ``drain()`` returns new messages."""

    def __init__(self, url: str, filters: list[str], bound: int = 10_000) -> None:
        self.address = parse_url(url)
        self.filters = filters
        self.dropped = 0
        # called on the network thread before queueing; True = consumed (not queued)
        self.listener: Callable[[str, bytes], bool] | None = None
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(bound)
        self._client = paho.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"heatrig-observer-{os.getpid()}")
        self._client.suppress_exceptions = True
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        username = os.environ.get("HEATRIG_MQTT_USERNAME")
        if username:
            self._client.username_pw_set(username, os.environ.get("HEATRIG_MQTT_PASSWORD"))
        if self.address.tls:
            self._client.tls_set()

    def start(self) -> Observer:
        """Connect in the background (reconnects on its own)."""
        self._client.connect_async(self.address.host, self.address.port, keepalive=30)
        self._client.loop_start()
        return self

    def _on_connect(self, client: paho.Client, userdata: object, flags: object,
                    reason_code: object, properties: object = None) -> None:
        for f in self.filters:
            client.subscribe(f, qos=1)

    def _on_message(self, client: paho.Client, userdata: object,
                    message: paho.MQTTMessage) -> None:
        payload = bytes(message.payload)
        if self.listener is not None and self.listener(message.topic, payload):
            return
        try:
            self._queue.put_nowait((message.topic, payload))
        except queue.Full:
            self.dropped += 1

    def drain(self) -> list[tuple[str, bytes]]:
        """Messages received since the last call, in arrival order."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
