"""The MQTT connection supervisor: one paho-mqtt client and the outbound path.

One paho-mqtt 2.x client (``CallbackAPIVersion.VERSION2``, MQTT 3.1.1) with its own network
thread (``loop_start``): retained ``online`` status and ``offline`` last will, reconnect
with exponential backoff capped at ``reconnect_max_s`` (1 s), the commands topic
re-subscribed on every connect, TLS, and credentials read from the environment (never
logged). Every callback is guarded: no exception reaches paho's network loop.

While the broker is unreachable, outbound messages wait in a bounded buffer (the oldest
are dropped and counted) and are sent, oldest first, on the next connect.

``lose_broker`` / ``restore_broker`` carry the ``broker_loss`` fault: the socket is closed
without DISCONNECT (the broker publishes the will) and the network thread is stopped, so
nothing reconnects until the fault is cleared.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from rig.protocols.logsafe import ESCAPING_FILTER, safe_for_log
from rig.protocols.mqtt.config import BrokerAddress, MqttConfig
from rig.protocols.mqtt.counters import Counters
from twin.errors import ConfigError

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
MAX_PAHO_QUEUE = 65_000  # paho message ids are 16-bit: more QoS 1 messages would collide

_F = TypeVar("_F", bound=Callable[..., None])


class _QuietDisconnected(logging.Filter):
    """Drop paho's 'Client is not connected' error: it follows every disconnect, also a
    clean one; the supervisor logs lost connections itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_paho_log = logging.getLogger(__name__ + ".paho")
_paho_log.addFilter(_QuietDisconnected())
_paho_log.addFilter(ESCAPING_FILTER)  # paho logs received topics as they came


class Connection:
    """Connection to the broker: connect, reconnect, will, buffer while disconnected.

    ``on_message(topic, payload, retained)`` is called on the network thread for every
    message on ``command_filter`` (guarded like every callback).
    """

    def __init__(self, config: MqttConfig, address: BrokerAddress, client_id: str,
                 status_topic: str, command_filter: str, counters: Counters,
                 on_message: Callable[[str, bytes, bool], None]) -> None:
        self.config = config
        self.address = address
        self.client_id = client_id
        self.status_topic = status_topic
        self.command_filter = command_filter
        self._counters = counters
        self._count = counters.count
        self._on_message_cb = on_message
        self._out_lock = threading.Lock()
        self._buffer: deque[tuple[str, bytes, bool]] = deque()
        self._connected = False
        self.closing = False
        self._started = False
        self._connected_event = threading.Event()
        self.last_error: str | None = None
        self._lost = False  # broker_loss active (guarded by _out_lock)
        self._loss_stopped = False  # the network thread was stopped for it
        self._client = self._make_client()

    # -- lifecycle ----------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        cfg = self.config
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv311, clean_session=True)
        client.suppress_exceptions = True  # second net under our own wrappers
        client.enable_logger(_paho_log)
        client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_s,  # type: ignore[arg-type]  # floats work
                                    cfg.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(cfg.max_inflight)
        # QoS 1 messages paho holds (in flight or waiting for a window); twice the buffer so
        # that a flush after a reconnect fits.
        client.max_queued_messages_set(min(2 * cfg.queue_bound, MAX_PAHO_QUEUE))
        username = os.environ.get(cfg.username_env)
        if username:
            client.username_pw_set(username, os.environ.get(cfg.password_env))
        if self.address.tls:  # the files were checked by MqttConfig
            try:
                client.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file,
                               keyfile=cfg.key_file)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"mqtt TLS: cannot load the certificate files: "
                                  f"{exc.strerror or exc}") from None
        client.on_connect = self._guard(self._on_connect)
        client.on_subscribe = self._guard(self._on_subscribe)
        client.on_connect_fail = self._guard(self._on_connect_fail)
        client.on_disconnect = self._guard(self._on_disconnect)
        client.on_message = self._guard(self._on_message)
        client.on_publish = self._guard(self._on_publish)
        return client

    def start(self) -> None:
        """Start connecting in the background (paho's network thread)."""
        if self._started:
            raise RuntimeError("mqtt adapter already started")
        self._started = True
        a = self.address
        log.info("mqtt: connecting to %s:%d%s as %s (prefix %s, site %s)", a.host, a.port,
                 " with TLS" if a.tls else "", self.client_id, self.config.prefix,
                 self.config.site)
        self._client.connect_async(a.host, a.port, keepalive=self.config.keepalive_s)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected and subscribed to commands (True) or ``timeout`` s pass."""
        return self._connected_event.wait(timeout)

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the connection."""
        return self._connected

    @property
    def client(self) -> paho.Client:
        """The paho client (its network thread runs every callback)."""
        return self._client

    @property
    def queued(self) -> int:
        """Messages buffered now, waiting for a connection."""
        return len(self._buffer)

    def close(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` (waiting up to ``timeout`` s), disconnect, stop the thread.

        What is still buffered is dropped and counted.
        """
        self.closing = True
        if self._started:
            info = None
            if self._connected:
                info = self._client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
                self._count("sent")
            if info is not None:
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError) as exc:
                    log.warning("mqtt: offline status not confirmed: %s", exc)
            self._client.disconnect()
            self._client.loop_stop()
        with self._out_lock:
            self._connected = False
            if self._buffer:
                self._count("dropped", len(self._buffer))
                self._buffer.clear()
        self._connected_event.clear()

    # -- broker_loss ----------------------------------------------------------------------

    def lose_broker(self) -> None:
        """Drop the connection without DISCONNECT (the broker sends the will); see
        ``_on_disconnect`` for how the network thread is kept from reconnecting."""
        with self._out_lock:
            was = self._connected
            self._connected = False
            self._lost = True
        self._connected_event.clear()
        self._count("broker_losses")
        if was:
            self._count("disconnects")
        self._drop_socket()

    def _drop_socket(self) -> None:
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # paho sees the loss; no DISCONNECT sent

    def restore_broker(self) -> None:
        """End a broker_loss: start the network thread again if it was stopped."""
        with self._out_lock:
            self._lost = False
            restart, self._loss_stopped = self._loss_stopped, False
        if restart and not self.closing:
            self._client.loop_stop()  # joins the old thread if it is still on its way out
            a = self.address
            self._client.connect_async(a.host, a.port, keepalive=self.config.keepalive_s)
            self._client.loop_start()
            log.info("mqtt: reconnecting to %s:%d after broker_loss", a.host, a.port)

    # -- outbound path ------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Hand a message to paho, or buffer it (bounded) while not connected."""
        with self._out_lock:
            if not self._connected or self._buffer:  # buffer non-empty: a flush is running
                self._hold(topic, payload, retain)
                return
        self._send(topic, payload, retain)

    def _hold(self, topic: str, payload: bytes, retain: bool) -> None:
        """Append to the buffer (caller holds ``_out_lock``), dropping the oldest when full."""
        if len(self._buffer) >= self.config.queue_bound:
            self._buffer.popleft()
            self._count("dropped")
        self._buffer.append((topic, payload, retain))

    def _send(self, topic: str, payload: bytes, retain: bool, qos: int | None = None) -> bool:
        """Publish through paho; False when the connection turned out to be gone."""
        qos = self.config.qos if qos is None else qos
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        rc = info.rc
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._count("sent")
        elif rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0:
            self._count("sent")  # paho keeps QoS 1 messages and sends them on reconnect
            return False
        elif rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            with self._out_lock:
                self._hold(topic, payload, retain)
            return False
        else:
            self._count("dropped")
            log.debug("mqtt: dropped message on %s: %s", safe_for_log(topic),
                      paho.error_string(rc))
        return True

    def _flush(self) -> None:
        """Send what was buffered while disconnected, oldest first (network thread)."""
        flushed = 0
        while True:
            with self._out_lock:
                if not self._buffer or not self._connected:
                    break
                topic, payload, retain = self._buffer.popleft()
            flushed += 1
            if not self._send(topic, payload, retain):
                break  # lost again; on_disconnect follows, the next connect flushes
        if flushed:
            log.info("mqtt: sent %d message(s) held while disconnected", flushed)

    # -- paho callbacks (network thread) ------------------------------------------------

    def _guard(self, fn: _F) -> _F:
        """Wrap a callback so that no exception reaches paho's network loop."""
        def guarded(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                self._count("callback_errors")
                log.exception("mqtt: error in %s (the network loop continues)", fn.__name__)
        guarded.__name__ = fn.__name__
        return guarded  # type: ignore[return-value]

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any,
                    reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.last_error = f"connection refused: {reason_code}"
            log.error("mqtt: broker refused the connection: %s", reason_code)
            return
        if self._lost:  # a reconnect that was under way when broker_loss began
            self._drop_socket()
            return
        self._counters.count_connect()
        self.last_error = None
        client.subscribe(self.command_filter, qos=self.config.qos)
        self._send(self.status_topic, ONLINE, retain=True, qos=1)
        with self._out_lock:
            self._connected = True
        log.info("mqtt: connected to %s:%d, subscribed to %s", self.address.host,
                 self.address.port, self.command_filter)
        self._flush()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int,
                      reason_codes: Any, properties: Any) -> None:
        """Commands can arrive from now on: only then is the connection ready."""
        self._connected_event.set()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self.last_error = "cannot connect (refused or unreachable)" + (
            "; did the TLS handshake fail? check ca_file, cert_file and key_file"
            if self.address.tls else "")
        log.debug("mqtt: connect to %s:%d failed, retrying", self.address.host,
                  self.address.port)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                       reason_code: Any, properties: Any) -> None:
        with self._out_lock:
            was = self._connected
            self._connected = False
            lost = self._lost and not self.closing
            if lost:
                self._loss_stopped = True
        self._connected_event.clear()
        if was:
            self._count("disconnects")
        elif not (self.closing or lost) and self.last_error is None:  # closed before CONNACK
            self.last_error = (f"closed by the broker before accepting ({reason_code})"
                               + ("; did the TLS handshake fail? check ca_file, cert_file "
                                  "and key_file" if self.address.tls else ""))
        if lost:
            client.loop_stop()  # on the network thread: it ends instead of reconnecting
            log.warning("mqtt: broker_loss: disconnected, no reconnect until cleared")
        elif self.closing:
            log.debug("mqtt: disconnected")
        elif was:
            log.warning("mqtt: connection lost (%s); reconnecting with backoff", reason_code)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        self._count("published")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._on_message_cb(message.topic, bytes(message.payload), bool(message.retain))
