"""Rate-limited logging of expected protocol errors: at most one line per kind every
``LOG_PERIOD_S`` s, the first at once, later ones as the count since (flushed at stop).
Only numbers and the peer's address are logged: no traceback, no frame bytes."""

from __future__ import annotations

import logging
import time
from collections import Counter

LOG_PERIOD_S = 10.0


class LogBudget:
    """At most one log line per kind every ``period`` s: the first one at once, then
    the number of further occurrences, when the period is over."""

    def __init__(self, logger: logging.Logger, period: float = LOG_PERIOD_S) -> None:
        self.logger = logger
        self.period = period
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()
        self._total: Counter[str] = Counter()
        self._level: dict[str, int] = {}

    def note(self, kind: str, level: int, fmt: str, *args: object) -> None:
        """One occurrence of ``kind``; logs ``fmt % args`` unless one was logged lately."""
        now = time.monotonic()
        self._total[kind] += 1
        last = self._last.get(kind)
        if last is not None and now - last < self.period:
            self._held[kind] += 1
            return
        self._last[kind] = now
        self._level[kind] = level
        held = self._held.pop(kind, 0)
        if held:
            self.logger.log(level, fmt + " (and %d more %s in the last %.0f s, %d in all)",
                            *args, held, kind, now - (last or now), self._total[kind])
        else:
            self.logger.log(level, fmt, *args)

    def flush(self, force: bool = False) -> None:
        """Log the counts held back whose period is over (all of them with ``force``)."""
        now = time.monotonic()
        for kind, held in list(self._held.items()):
            last = self._last.get(kind, now)
            if force or now - last >= self.period:
                del self._held[kind]
                self._last[kind] = now
                self.logger.log(self._level.get(kind, logging.WARNING),
                                "modbus: %d more %s in the last %.0f s, %d in all", held, kind,
                                now - last, self._total[kind])
