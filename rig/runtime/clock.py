"""Wall-clock pacing of the simulation: absolute slice deadlines, measured lateness.

One asyncio task advances the twin slice by slice and awaits `Pacer.wait()` between
slices. Deadlines are absolute (start + k * slice), so there is no drift. Every slice's
lateness (wake-up time minus its deadline) is recorded. Falling behind by more than one
slice is handled by the declared policy, never silently:

- ``warn``: log (at most every 10 s) and catch up by running late slices at once;
- ``skip``: drop the missed deadlines and re-anchor, so simulated time falls behind
  the requested speed instead of bunching slices (the skipped slices are counted);
- ``halt``: stop the run with `FellBehind`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from twin.errors import HeatrigError

log = logging.getLogger(__name__)

Policy = Literal["warn", "skip", "halt"]
POLICIES: tuple[Policy, ...] = ("warn", "skip", "halt")
WARN_INTERVAL_S = 10.0


class FellBehind(HeatrigError):
    """The run fell behind real time and the policy is ``halt``."""


@dataclass
class PacerStats:
    """Lateness of every slice (s) and what the policy did."""

    lateness: list[float] = field(default_factory=list)
    behind_slices: int = 0  # slices that woke more than one slice late
    skipped_slices: int = 0

    def percentile_ms(self, q: float) -> float:
        """Lateness percentile in milliseconds (0 when no slice ran)."""
        if not self.lateness:
            return 0.0
        return float(np.percentile(np.asarray(self.lateness), q) * 1000.0)

    def max_ms(self) -> float:
        """Largest lateness in milliseconds."""
        return max(self.lateness, default=0.0) * 1000.0


class Pacer:
    """Sleeps until each slice's absolute deadline on the running event loop."""

    def __init__(self, slice_s: float = 0.1, policy: Policy = "warn") -> None:
        if slice_s <= 0:
            raise ValueError("slice must be positive")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.slice_s = slice_s
        self.policy = policy
        self.stats = PacerStats()
        self._anchor: float | None = None
        self._k = 0
        self._last_warn = -1e9

    def start(self) -> None:
        """Anchor the deadlines at the present loop time."""
        self._anchor = asyncio.get_running_loop().time()
        self._k = 0

    async def wait(self) -> float:
        """Wait for the next slice's deadline; return its lateness (s)."""
        loop = asyncio.get_running_loop()
        if self._anchor is None:
            self.start()
        assert self._anchor is not None
        self._k += 1
        deadline = self._anchor + self._k * self.slice_s
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)  # let the protocol tasks run even when late
        now = loop.time()
        lateness = max(0.0, now - deadline)
        self.stats.lateness.append(lateness)
        if lateness > self.slice_s:
            self._behind(now, lateness)
        return lateness

    def _behind(self, now: float, lateness: float) -> None:
        self.stats.behind_slices += 1
        if self.policy == "halt":
            raise FellBehind(f"fell behind real time by {lateness * 1000:.0f} ms "
                             f"(slice {self.slice_s * 1000:.0f} ms, policy halt)")
        if self.policy == "skip":
            missed = int(lateness // self.slice_s)
            self.stats.skipped_slices += missed
            self._anchor = now - self._k * self.slice_s  # re-anchor: next deadline = now + slice
        if now - self._last_warn >= WARN_INTERVAL_S:
            self._last_warn = now
            log.warning("fell behind real time by %.0f ms (policy %s; %d slices late so far)",
                        lateness * 1000, self.policy, self.stats.behind_slices)
