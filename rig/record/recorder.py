"""The recorder: writes a twin's values, events and external commands into a run store."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np

from rig.record.store import RunStore

log = logging.getLogger(__name__)


class _Event(Protocol):
    t: float
    source: str
    kind: str
    message: str


class _Twin(Protocol):
    @property
    def now(self) -> float: ...
    def every(self, period: float, callback: Any, *, offset: float = 0.0) -> None: ...
    def on_event(self, listener: Any) -> None: ...
    def measured_values(self) -> np.ndarray: ...
    def truth_values(self) -> np.ndarray: ...


class Recorder:
    """Samples every point of ``twin`` each ``period_s`` simulated seconds (first at t = now)
    and logs every plant event into ``store``.

    The live runner calls `record_command` for each accepted external write (the replay
    log). `close` records the final instant (if not yet sampled) and commits; the store
    stays open for KPIs and verdicts.
    """

    def __init__(self, twin: _Twin, store: RunStore, period_s: float) -> None:
        if period_s <= 0:
            raise ValueError(f"recording period must be positive, got {period_s} s")
        self.twin = twin
        self.store = store
        self.period_s = period_s
        self.samples = 0
        self._closed = False
        twin.every(period_s, self._sample)
        twin.on_event(self._event)

    def _sample(self) -> None:
        if self._closed:
            return
        self.store.write_sample(self.twin.now, self.twin.measured_values(),
                                self.twin.truth_values())
        self.samples += 1

    def _event(self, event: _Event) -> None:
        if not self._closed:
            self.store.write_event(event.t, event.source, event.kind, event.message)

    def record_command(self, t: float, point: str, value: float, source: str) -> None:
        """Log an accepted external write: simulated time (s), point id, value, source."""
        if not self._closed:
            self.store.write_command(t, point, value, source)

    def close(self) -> None:
        """Record the final instant unless it was just sampled, then commit."""
        if self._closed:
            return
        last = self.store.last_sample_time()
        if last is None or self.twin.now > last:
            self._sample()
        self._closed = True
        self.store.flush()
