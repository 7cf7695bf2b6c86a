"""The MQTT adapter's counters, shared by its parts (thread-safe)."""

from __future__ import annotations

import threading

NAMES = ("sent", "published", "dropped", "telemetry", "alarms", "commands_accepted",
         "commands_refused", "commands_applied", "connects", "reconnects", "disconnects",
         "callback_errors", "suppressed", "delayed", "duplicated", "reordered",
         "broker_losses")


class Counters:
    """Named message counts (see `MqttAdapter.stats` for what each counts)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(NAMES, 0)

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to ``key``."""
        with self._lock:
            self._values[key] += n

    def count_connect(self) -> None:
        """One more connect; every connect after the first is also a reconnect."""
        with self._lock:
            self._values["connects"] += 1
            if self._values["connects"] > 1:
                self._values["reconnects"] += 1

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._values)
