"""Where the Modbus server listens and its connection limits: `ModbusConfig`, and
`parse_endpoint` for a ``--modbus HOST:PORT`` argument."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from twin.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5020


def parse_endpoint(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``, ``HOST``, ``:PORT``) of ``--modbus``; ConfigError."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"modbus address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"modbus address {text!r}: expected [HOST]:PORT")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ConfigError(f"modbus address {text!r}: port must be a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"modbus address {text!r}: port must be 0..65535")
    return host or DEFAULT_HOST, port


@dataclass(frozen=True, slots=True)
class ModbusConfig:
    """Where the server listens and its limits (port 0 = any free port; times in s).

    ``max_per_address`` None means half of ``max_connections`` (at least 1). How the
    limits are enforced: `rig.protocols.modbus.connection`.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_connections: int = 16
    max_per_address: int | None = None
    idle_timeout_s: float = 60.0
    frame_timeout_s: float = 2.0
    evict_idle_s: float = 1.0
    queue_bound: int = 256  # accepted point writes waiting for apply_pending

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.queue_bound < 1:
            raise ValueError("modbus max_connections and queue_bound must be >= 1")
        if self.max_per_address is not None and not \
                1 <= self.max_per_address <= self.max_connections:
            raise ValueError(f"modbus max_per_address must be 1..{self.max_connections} "
                             f"(max_connections), not {self.max_per_address}")
        for name in ("idle_timeout_s", "frame_timeout_s", "evict_idle_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"modbus {name} must be a number of seconds > 0, "
                                 f"not {value!r}")

    @property
    def per_address(self) -> int:
        """Connections allowed from one source address."""
        if self.max_per_address is not None:
            return self.max_per_address
        return max(1, self.max_connections // 2)

    @classmethod
    def from_endpoint(cls, text: str, **overrides: Any) -> ModbusConfig:
        """A configuration from a ``--modbus HOST:PORT`` argument."""
        host, port = parse_endpoint(text)
        return cls(host=host, port=port, **overrides)
