"""Protocol fault injection on the MQTT adapter's telemetry, and its delay scheduler.

``inject(kind, target=..., **params)`` applies a fault at once and returns the function
that clears it. ``target`` is ``mqtt`` (every device) or a device name (that device's
telemetry). The telemetry faults act on telemetry messages only (alarms, replies and status
are not touched), in this order:

* ``mqtt_dropout`` -- the message is not published (counted ``suppressed``); ``seq`` still
  advances, so subscribers see the gap;
* ``mqtt_reorder`` -- a device's messages are swapped in pairs (seq 1, 0, 3, 2, ...); an
  unpaired message waits for the next one or for the clear;
* ``mqtt_duplicate`` -- the message is published twice (same payload, same seq);
* ``mqtt_delay(delay)`` -- the message is held and published ``delay`` wall seconds later by
  a small scheduler thread (the caller never sleeps); when the fault clears, that thread
  publishes the backlog at once, in order, and a device's new messages queue behind its
  backlog until it is gone.

``broker_loss`` (target ``mqtt`` only) is carried out by the connection
(`rig.protocols.mqtt.connection.Connection.lose_broker`). Messages still held by a fault
when the injector closes count as dropped.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from rig.protocols.faulttargets import TargetedFault, fault_delay, fault_target
from rig.protocols.logsafe import safe_for_log
from rig.protocols.mqtt.connection import Connection
from rig.protocols.mqtt.counters import Counters
from twin.faults import FaultTargetError

log = logging.getLogger(__name__)

FAULT_KINDS = ("mqtt_dropout", "mqtt_delay", "mqtt_duplicate", "mqtt_reorder", "broker_loss")
ALL_DEVICES = "mqtt"  # the fault target meaning every device


@dataclass(frozen=True, eq=False, slots=True)
class _Fault(TargetedFault[str]):
    """One active protocol fault; ``covered`` (devices) None covers every device."""

    delay: float = 0.0


def _fault_delay(kind: str, params: Mapping[str, Any]) -> float:
    """Check a fault's parameters; only mqtt_delay takes one, ``delay`` (s, > 0)."""
    extra = sorted(set(params) - ({"delay"} if kind == "mqtt_delay" else set()))
    if extra:
        raise ValueError(f"{kind}: unexpected parameter(s) {', '.join(extra)}")
    if kind != "mqtt_delay":
        return 0.0
    return fault_delay(kind, params)


class FaultInjector:
    """The active protocol faults and the telemetry messages they hold.

    ``devices()`` gives the devices a fault may target. Telemetry goes through
    ``publish`` only while ``engaged``; what passes goes to ``connection.publish``.
    """

    def __init__(self, site: str, connection: Connection, counters: Counters,
                 devices: Callable[[], Collection[str]]) -> None:
        self._site = site
        self._connection = connection
        self._count = counters.count
        self._devices = devices
        # the active faults (replaced, never mutated), messages they hold
        self._faults: tuple[_Fault, ...] = ()
        self._reorder_held: dict[str, tuple[str, bytes]] = {}  # device -> (topic, payload)
        self._delayed: list[tuple[float, int, str, str, bytes]] = []  # heap: due, n, dev, ...
        self._delayed_n = 0
        self._delayed_by_device: dict[str, int] = {}  # messages in the heap per device
        self._delay_cond = threading.Condition()
        self._scheduler: threading.Thread | None = None
        self._stopped = False

    @property
    def engaged(self) -> bool:
        """True while a fault is active or delayed messages are still waiting."""
        return bool(self._faults or self._delayed_by_device)

    def active_names(self) -> list[str]:
        """The active faults as ``kind@target``."""
        return [str(f) for f in self._faults]

    def held(self) -> int:
        """Messages a fault holds now."""
        with self._delay_cond:
            return len(self._delayed) + len(self._reorder_held)

    def inject(self, kind: str, *, target: str = ALL_DEVICES,
               **params: Any) -> Callable[[], None]:
        """Apply a protocol fault now (see the module docstring); returns its clear function.

        Call from the runner's thread (the one publishing telemetry). Raises
        FaultTargetError for an unknown kind or target, ValueError for parameters.
        Clearing twice does nothing.
        """
        if kind not in FAULT_KINDS:
            raise FaultTargetError(f"mqtt: unknown fault kind {kind!r}; the MQTT adapter "
                                   f"takes {', '.join(FAULT_KINDS)}")
        fault = _Fault(kind, target, self._fault_devices(kind, target),
                       _fault_delay(kind, params))
        self._faults = (*self._faults, fault)
        log.warning("mqtt: fault %s injected", fault)
        if kind == "mqtt_delay":
            self._start_scheduler()
        elif kind == "broker_loss":
            self._connection.lose_broker()

        def clear() -> None:
            if fault not in self._faults:
                return
            self._faults = tuple(f for f in self._faults if f is not fault)
            log.warning("mqtt: fault %s cleared", fault)
            if kind == "mqtt_reorder":
                self._release_reordered()
            elif kind == "mqtt_delay":
                self._release_delayed()
            elif kind == "broker_loss" and not self._active("broker_loss"):
                self._connection.restore_broker()

        return clear

    def _fault_devices(self, kind: str, target: str) -> frozenset[str] | None:
        whole_only = "the connection is shared by every device" if kind == "broker_loss" \
            else None
        device = fault_target(kind, target, everything=ALL_DEVICES, devices=self._devices(),
                              whole_only=whole_only)
        return None if device is None else frozenset({device})

    def _active(self, kind: str, device: str | None = None) -> _Fault | None:
        """The most recent active fault of ``kind`` covering ``device`` (None: any)."""
        for fault in reversed(self._faults):
            if fault.kind == kind and (device is None or fault.covers(device)):
                return fault
        return None

    def publish(self, device: str, topic: str, payload: bytes) -> None:
        """Publish one telemetry message through the active faults (caller's thread)."""
        if self._active("mqtt_dropout", device):
            self._count("suppressed")
            return
        if self._active("mqtt_reorder", device):
            with self._delay_cond:
                held = self._reorder_held.pop(device, None)
                if held is None:
                    self._reorder_held[device] = (topic, payload)
                    return
            self._count("reordered")
            self._after_reorder(device, topic, payload)
            self._after_reorder(device, *held)
            return
        self._after_reorder(device, topic, payload)

    def _after_reorder(self, device: str, topic: str, payload: bytes) -> None:
        """Duplicate and delay one message, then publish it (or leave it to the scheduler)."""
        copies = 1
        if self._active("mqtt_duplicate", device):
            copies = 2
            self._count("duplicated")
        delays = [f.delay for f in self._faults if f.kind == "mqtt_delay" and f.covers(device)]
        due = time.monotonic() + max(delays, default=0.0)
        with self._delay_cond:
            queued = bool(delays) or self._delayed_by_device.get(device, 0) > 0
            if queued:  # delayed, or behind the device's backlog
                for _ in range(copies):
                    self._delayed_n += 1
                    heapq.heappush(self._delayed, (due, self._delayed_n, device, topic, payload))
                self._delayed_by_device[device] = self._delayed_by_device.get(device, 0) + copies
                self._delay_cond.notify()
        if delays:
            self._count("delayed", copies)
        if not queued:
            for _ in range(copies):
                self._connection.publish(topic, payload)

    def _release_reordered(self) -> None:
        """Publish the unpaired messages of devices no longer reordered."""
        with self._delay_cond:
            free = [d for d in self._reorder_held if not self._active("mqtt_reorder", d)]
            released = [(d, *self._reorder_held.pop(d)) for d in free]
        for device, topic, payload in released:
            self._after_reorder(device, topic, payload)

    def _release_delayed(self) -> None:
        """Make what is held for devices no longer delayed due now (the scheduler sends it)."""
        now = time.monotonic()
        with self._delay_cond:
            self._delayed = [
                (min(due, now), n, device, topic, payload) if not self._active(
                    "mqtt_delay", device) else (due, n, device, topic, payload)
                for due, n, device, topic, payload in self._delayed]
            heapq.heapify(self._delayed)
            self._delay_cond.notify()

    # -- the mqtt_delay scheduler ---------------------------------------------------------

    def _closing(self) -> bool:
        return self._stopped or self._connection.closing

    def _start_scheduler(self) -> None:
        if self._scheduler is not None:
            return
        self._scheduler = threading.Thread(target=self._run_scheduler, daemon=True,
                                           name=f"heatrig-mqtt-delay-{self._site}")
        self._scheduler.start()

    def close(self) -> None:
        """Stop the scheduler; what a fault still holds is dropped and counted."""
        with self._delay_cond:
            self._stopped = True
            held = len(self._delayed) + len(self._reorder_held)
            self._delayed.clear()
            self._delayed_by_device.clear()
            self._reorder_held.clear()
            self._delay_cond.notify()
        if held:
            self._count("dropped", held)
        thread, self._scheduler = self._scheduler, None
        if thread is not None:
            thread.join(5.0)

    def _run_scheduler(self) -> None:
        """Publish delayed messages when due (the mqtt_delay thread).

        A due batch is published outside the lock; its messages count as the device's
        backlog until sent, so that a new message cannot overtake them.
        """
        batch: list[tuple[str, str, bytes]] = []
        while True:
            with self._delay_cond:
                for device, _, _ in batch:
                    left = self._delayed_by_device.get(device, 0) - 1
                    if left > 0:
                        self._delayed_by_device[device] = left
                    else:
                        self._delayed_by_device.pop(device, None)
                batch = []
                while not self._closing():
                    now = time.monotonic()
                    if self._delayed and self._delayed[0][0] <= now:
                        break
                    self._delay_cond.wait(self._delayed[0][0] - now if self._delayed else None)
                if self._closing():
                    return
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, device, topic, payload = heapq.heappop(self._delayed)
                    batch.append((device, topic, payload))
            for _, topic, payload in batch:
                try:
                    self._connection.publish(topic, payload)
                except Exception:
                    log.exception("mqtt: delayed message on %s not published",
                                  safe_for_log(topic))
