"""Lockstep: the twin advances one slice, then waits until every system under test has
answered that slice, then advances again, with no wall clock in between.

A slice covers the same simulated time as at real time (``slice x speed``), so a
deterministic controller sees the same snapshots and gives the same verdicts, only
faster. A system under test answers a served slice in one of two ways:

- **heartbeat** (Modbus): it writes a *new* value to a point matching its ``heartbeat``
  pattern (``*.heartbeat`` for the reference controller: a counter, the last write of a
  cycle). A write repeating the value that answered the previous slice is the tail of
  that cycle, not an answer. A Modbus client learns of a new slice from ``rig.sim_time``.
- **mqtt**: it answers ``{"step": n}`` on ``<prefix>/<site>/sut/<name>/ack`` after the
  rig's ``{"step": n, "t": s}`` on ``<prefix>/<site>/rig/step`` (sent after the slice's
  telemetry on the same connection, so the telemetry came first). The announcement is
  repeated every ``REANNOUNCE_S`` while waiting, for a subscriber that came late.

A system that has not answered within ``timeout_s`` (``first_timeout_s`` for the first
slice, while the processes start) is *silent*: it is not waited for until it answers
again, and meanwhile each slice lasts at least ``slice_s`` of wall time, so a system
that lost its link (a communication fault, a dead broker) reconnects after as much
simulated time as it would at real time. A process that has exited is not waited for.
Silence on the first slice is a start-up failure.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from twin.errors import RunError

log = logging.getLogger(__name__)

FIRST_TIMEOUT_S = 30.0  # wall: the systems under test are starting
TIMEOUT_S = 2.0  # wall: a system slower than this on one slice is treated as silent
REANNOUNCE_S = 0.5  # wall


class LockstepStartError(RunError):
    """A system under test never answered the first slice."""


@dataclass(frozen=True)
class Answer:
    """How one system under test answers a served slice (see the module docstring)."""

    name: str
    heartbeat: str | None = None  # fnmatch pattern of Modbus point ids
    mqtt: bool = False

    def __post_init__(self) -> None:
        if (self.heartbeat is None) == (not self.mqtt):
            raise ValueError(f"system under test {self.name!r}: answers by heartbeat or "
                             "by mqtt, exactly one")


@dataclass
class LockstepStats:
    """What lockstep waited for: slices, wall time spent waiting (s), lapses."""

    slices: int = 0
    wait_s: float = 0.0
    lapses: list[tuple[int, str]] = field(default_factory=list)  # (slice, system) silent
    paced_slices: int = 0  # slices held to real time because a system was silent

    def as_dict(self) -> dict[str, object]:
        """Plain values for the run summary."""
        return {"slices": self.slices, "wait_s": round(self.wait_s, 3),
                "paced_slices": self.paced_slices,
                "lapses": [{"slice": s, "sut": n} for s, n in self.lapses]}


class Lockstep:
    """Tracks the answers to the slice being served; `wait` returns when all are in.

    ``alive(name)`` tells whether a system's process still runs (None: no process known);
    ``announce(step, t)`` publishes the MQTT step announcement. Everything but
    `on_mqtt` runs on the rig's event loop; `on_mqtt` may be called from any thread.
    """

    def __init__(self, answers: Iterable[Answer], *, slice_s: float,
                 announce: Callable[[int, float], None],
                 alive: Callable[[str], bool | None] = lambda name: None,
                 ack_topic: Callable[[str], str] = lambda name: f"sut/{name}/ack",
                 first_timeout_s: float = FIRST_TIMEOUT_S,
                 timeout_s: float = TIMEOUT_S) -> None:
        self.answers = {a.name: a for a in answers}
        self.slice_s = slice_s
        self.first_timeout_s = first_timeout_s
        self.timeout_s = timeout_s
        self.stats = LockstepStats()
        self.step = -1
        self.sim_time = 0.0
        self._announce = announce
        self._alive = alive
        self._ack_topics = {ack_topic(a.name): a.name for a in self.answers.values() if a.mqtt}
        self._beats = {a.name: a.heartbeat for a in self.answers.values() if a.heartbeat}
        self._last_beat: dict[str, float] = {}
        self._waiting: set[str] = set()
        self._silent: set[str] = set()
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def silent(self) -> frozenset[str]:
        """Systems not waited for now (they missed a slice and have not answered since)."""
        return frozenset(self._silent)

    # -- answers ------------------------------------------------------------------------
    def on_modbus_write(self, point_id: str, value: float) -> None:
        """A Modbus write was queued (event loop)."""
        for name, pattern in self._beats.items():
            if fnmatch.fnmatchcase(point_id, pattern) and self._last_beat.get(name) != value:
                self._last_beat[name] = value
                self._answered(name)

    def on_mqtt(self, topic: str, payload: bytes) -> bool:
        """An MQTT message from a system under test (any thread); True if it was an ack."""
        name = self._ack_topics.get(topic)
        if name is None:
            return False
        try:
            step = int(json.loads(payload)["step"])
        except (ValueError, KeyError, TypeError):
            log.warning("lockstep: %s sent a malformed ack (want {\"step\": n})", name)
            return True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._mqtt_answer, name, step)
        return True

    def _mqtt_answer(self, name: str, step: int) -> None:
        if step == self.step:
            self._answered(name)

    def _answered(self, name: str) -> None:
        if name in self._silent:
            log.info("lockstep: %s answers again (slice %d)", name, self.step)
            self._silent.discard(name)
        self._waiting.discard(name)
        if not self._waiting:
            self._event.set()

    # -- the rig's side -----------------------------------------------------------------
    def serve(self, sim_time: float) -> None:
        """The next slice (ending at ``sim_time``, s) is served: announce it."""
        self._loop = asyncio.get_running_loop()
        self.step += 1
        self.sim_time = sim_time
        self.stats.slices += 1
        self._waiting = {n for n in self.answers
                         if n not in self._silent and self._alive(n) is not False}
        self._event.clear()
        if not self._waiting:
            self._event.set()
        self._announce(self.step, sim_time)

    async def wait(self) -> None:
        """Until every awaited system has answered the served slice (or lapsed)."""
        start = time.perf_counter()
        timeout = self.first_timeout_s if self.step == 0 else self.timeout_s
        paced = bool(self._silent)
        while not self._event.is_set():
            left = start + timeout - time.perf_counter()
            if left <= 0:
                self._lapse()
                break
            try:
                await asyncio.wait_for(self._event.wait(), min(left, REANNOUNCE_S))
            except TimeoutError:
                self._waiting = {n for n in self._waiting if self._alive(n) is not False}
                if not self._waiting:
                    break
                self._announce(self.step, self.sim_time)  # for a subscriber that came late
        if paced or self._silent:  # hold the slice to real time for a silent system
            self.stats.paced_slices += 1
            rest = start + self.slice_s - time.perf_counter()
            if rest > 0:
                await asyncio.sleep(rest)
        self.stats.wait_s += time.perf_counter() - start

    def _lapse(self) -> None:
        late = sorted(self._waiting)
        if self.step == 0:
            raise LockstepStartError(
                f"lockstep: {', '.join(late)} did not answer the first slice within "
                f"{self.first_timeout_s:g} s")
        for name in late:
            log.warning("lockstep: %s did not answer slice %d within %g s; not waiting for "
                        "it until it answers again", name, self.step, self.timeout_s)
            self.stats.lapses.append((self.step, name))
            self._silent.add(name)
        self._waiting.clear()
