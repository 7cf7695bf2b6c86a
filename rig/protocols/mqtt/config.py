"""How the MQTT adapter connects: `MqttConfig` and the broker URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rig.record.credentials import redact_url, refuse_url_credentials
from twin.defaults import DEFAULT_MQTT_PREFIX
from twin.errors import ConfigError

if TYPE_CHECKING:
    from twin.site import Site

DEFAULT_QOS = 1  # of telemetry and replies
USERNAME_ENV = "HEATRIG_MQTT_USERNAME"
PASSWORD_ENV = "HEATRIG_MQTT_PASSWORD"


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """How the adapter connects and what it publishes.

    ``url`` is ``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` (TLS, server certificate
    checked against ``ca_file`` or the system store; ``cert_file`` and ``key_file``, PEM,
    give a client certificate for brokers that require one). Username and password are
    read from the environment variables named here when connecting; they are never stored
    or logged.
    """

    url: str = "mqtt://127.0.0.1:1883"
    site: str = "site"
    prefix: str = DEFAULT_MQTT_PREFIX
    qos: int = DEFAULT_QOS
    client_id: str | None = None  # default heatrig-<site>-<pid>
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None  # default: the key is in cert_file
    keepalive_s: int = 30
    queue_bound: int = 1000  # outbound messages held while disconnected
    command_queue_bound: int = 256  # accepted commands waiting for apply_pending
    max_payload_bytes: int = 64 * 1024  # bigger command payloads are refused unparsed
    max_inflight: int = 100  # QoS 1 messages awaiting PUBACK
    # paho's backoff after a lost connection: min, doubling up to max (s). The cap keeps a
    # broker that is back reconnected within about max + one handshake (2 s bound, measured
    # by bench/soak_broker.py); a larger cap makes that wait open-ended (1, 2, 4, 8 s...).
    reconnect_min_s: float = 0.25
    reconnect_max_s: float = 1.0
    username_env: str = USERNAME_ENV
    password_env: str = PASSWORD_ENV

    def __post_init__(self) -> None:
        if self.qos not in (0, 1):
            raise ValueError(f"mqtt qos must be 0 or 1, not {self.qos!r}")
        for name in ("queue_bound", "command_queue_bound", "max_payload_bytes", "keepalive_s",
                     "max_inflight"):
            if getattr(self, name) < 1:
                raise ValueError(f"mqtt {name} must be >= 1")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("mqtt reconnect delays need 0 < min <= max")
        address = parse_url(self.url)
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file,
                 "key_file": self.key_file}
        given = [name for name, path in files.items() if path is not None]
        if given and not address.tls:
            raise ConfigError(f"mqtt {', '.join(given)}: TLS files need an mqtts:// url")
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError("mqtt key_file needs a cert_file")
        for name in given:
            if not os.path.isfile(str(files[name])):
                raise ConfigError(f"mqtt {name} {files[name]!r} is not a file")

    @classmethod
    def for_site(cls, site: Site, url: str, **overrides: Any) -> MqttConfig:
        """Configuration for ``site``: its name and ``protocols.mqtt_prefix``."""
        return cls(url=url, site=site.name, prefix=site.protocols.mqtt_prefix, **overrides)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Parsed broker URL."""

    host: str
    port: int
    tls: bool


def parse_url(url: str) -> BrokerAddress:
    """Parse ``mqtt://host[:port]`` or ``mqtts://host[:port]``; raise ConfigError.

    Credentials in the URL are refused: they belong in the environment.
    """
    refuse_url_credentials(url, "mqtt url", f"set {USERNAME_ENV} and {PASSWORD_ENV} in the "
                                            "environment")
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"mqtt url {shown!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"mqtt url {shown!r}: scheme must be mqtt:// or mqtts://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"mqtt url {shown!r}: only scheme, host and port are allowed")
    if not parts.hostname:
        raise ConfigError(f"mqtt url {shown!r}: no host")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, port or (8883 if tls else 1883), tls)
