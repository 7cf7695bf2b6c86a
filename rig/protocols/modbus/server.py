"""Modbus TCP server of the live rig, serving a `rig.protocols.modbus.registers.ModbusMap`.

`ModbusServer` is a facade over its parts, one job each:

* `config` -- `ModbusConfig` (where it listens, connection limits) and `parse_endpoint`;
* `connection` -- MBAP framing, frame deadline, backpressure, batches, and the admission
  and eviction of clients (`ConnectionPool`);
* `pdu` -- the function codes served, to the letter of the specification: a request PDU
  in, the response PDU out, answered from the register image;
* `image` -- the snapshot of every unit's registers and bits with the queued writes laid
  over it;
* `exceptions` -- exception codes and the protocol error kinds counted;
* `faults` -- the protocol faults and the set of active ones;
* `logbudget` -- rate-limited logging of expected protocol errors.

Everything runs on the live runner's asyncio loop thread, so there are no locks:

* ``refresh(values, sim_time)`` -- once per slice: encodes every point (table order,
  measured values) into a snapshot; each request is answered from one snapshot, so all
  values of one read come from the same slice.
* Writes are decoded and validated at once (`ModbusMap.writes`, i.e. `Point.coerce`):
  exception 02 (ILLEGAL DATA ADDRESS) for an undeclared or read-only address or a range
  that cuts a point in two, 03 (ILLEGAL DATA VALUE) for a value the point refuses, 06
  (SERVER DEVICE BUSY) when the write queue is full. A refused request changes nothing.
  Accepted values are queued and read back as written until the next refresh.
* ``apply_pending(twin)`` -- at the next slice boundary: applies the queued writes with
  ``twin.write(point, value, source="modbus")`` (points in ``quiet_points``, e.g.
  heartbeats, are applied without an event) and returns what was applied.

The map and the datastore rules are those of `registers`; the pymodbus *client* still
talks to this server in the tests (why the server side is not pymodbus': `connection`
and `pdu`).

Expected protocol errors are counted per kind (``stats()["protocol_errors"]``, see
`PROTOCOL_ERRORS`) and logged as summaries: at most one line per kind every
``LOG_PERIOD_S``, the first at once, later ones with the count since (flushed at
``stop``). No traceback and no frame bytes are logged; only numbers and the peer's
address.

Protocol faults (`rig.assess.faults`; kinds and effects: `faults`) go through
``ModbusServer.inject(kind, target=..., **params)``, which applies the fault at once and
returns the function that clears it. Each effect is counted in ``stats()`` (``fault_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rig.protocols.modbus import pdu as pdus
from rig.protocols.modbus.config import DEFAULT_HOST, DEFAULT_PORT, ModbusConfig, parse_endpoint
from rig.protocols.modbus.connection import BATCH_FRAMES, MBAP, Connection, ConnectionPool
from rig.protocols.modbus.exceptions import (
    DEVICE_BUSY,
    DEVICE_FAILURE,
    GATEWAY_NO_RESPONSE,
    ILLEGAL_ADDRESS,
    ILLEGAL_FUNCTION,
    ILLEGAL_VALUE,
    PROTOCOL_ERRORS,
    Refused,
)
from rig.protocols.modbus.faults import ALL_UNITS, FAULT_KINDS, Faults
from rig.protocols.modbus.image import Image
from rig.protocols.modbus.logbudget import LOG_PERIOD_S, LogBudget
from rig.protocols.modbus.registers import ModbusMap
from twin.errors import PointError, WriteRefused

if TYPE_CHECKING:
    from twin.plant import Twin

__all__ = [
    "ALL_UNITS", "BATCH_FRAMES", "DEFAULT_HOST", "DEFAULT_PORT", "DEVICE_BUSY",
    "DEVICE_FAILURE", "FAULT_KINDS", "GATEWAY_NO_RESPONSE", "ILLEGAL_ADDRESS",
    "ILLEGAL_FUNCTION", "ILLEGAL_VALUE", "LOG_PERIOD_S", "MBAP", "PROTOCOL_ERRORS",
    "AppliedWrite", "ModbusConfig", "ModbusServer", "parse_endpoint",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AppliedWrite:
    """One queued write after ``apply_pending``: the value in the point's unit."""

    point: str
    value: float
    unit_id: int
    accepted: bool
    reason: str | None
    t: float  # simulated time it was applied (s)


class ModbusServer:
    """The rig's Modbus TCP server (see the module docstring)."""

    def __init__(self, modbus_map: ModbusMap, config: ModbusConfig | None = None, *,
                 quiet_points: Collection[str] = ()) -> None:
        self.map = modbus_map
        self.config = config or ModbusConfig()
        self.quiet_points = frozenset(quiet_points)
        self.image = Image(modbus_map, self.config.queue_bound)
        self.counters: Counter[str] = Counter()
        self.exceptions: Counter[int] = Counter()
        self.protocol_errors: Counter[str] = Counter()
        self.requests = 0
        self._log = LogBudget(log)
        self._faults = Faults(modbus_map.unit_ids)
        self._pool = ConnectionPool(self.config, self._log, self.counters,
                                    serve=self._handle, error=self._protocol_error,
                                    refuse=self._refuse)
        self._conns = self._pool.conns  # in order of acceptance
        self._listener: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (on the running loop); raises OSError if the address cannot be bound."""
        if self._listener is not None:
            raise RuntimeError("modbus server already started")
        loop = asyncio.get_running_loop()
        host, port = self.config.host, self.config.port
        try:
            self._listener = await loop.create_server(self._pool.connection, host, port,
                                                      reuse_address=True)
        except OSError as exc:
            raise OSError(f"modbus: cannot listen on {host}:{port} "
                          f"({exc.strerror or exc})") from exc
        self._port = self._listener.sockets[0].getsockname()[1]
        self._reaper = asyncio.create_task(self._pool.reap_idle(), name="modbus idle reaper")
        log.info("modbus: listening on %s:%d, %d units", host, self._port,
                 len(self.map.devices))

    async def stop(self) -> None:
        """Close every connection and the listener."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        if self._listener is not None:
            self._listener.close()
            self._pool.abort_all()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._listener.wait_closed(), 5.0)
            self._listener = None
            self._log.flush(force=True)
            log.info("modbus: stopped")

    @property
    def port(self) -> int:
        """The bound TCP port (after start)."""
        if self._port is None:
            raise RuntimeError("modbus server not started")
        return self._port

    @property
    def connections(self) -> int:
        """Open client connections."""
        return len(self._pool)

    # -- requests ------------------------------------------------------------------------

    def _refuse(self, conn: Connection) -> bool:
        """True if a new connection is to be closed at once (modbus_disconnect)."""
        if not self._faults.covering("modbus_disconnect"):
            return False
        self.counters["fault_connections_refused"] += 1
        self._log.note("fault_refused", logging.INFO,
                       "modbus: connection from %s refused (modbus_disconnect fault)",
                       conn.peer)
        return True

    def _protocol_error(self, kind: str, conn: Connection, fmt: str, *args: object) -> None:
        self.protocol_errors[kind] += 1
        self._log.note(kind, logging.WARNING, "modbus: %s: " + fmt, conn.peer, *args)

    def _handle(self, conn: Connection, tid: int, unit: int, pdu: bytes) -> None:
        """One request frame: delayed by a latency fault, else answered now."""
        self.requests += 1
        if self._faults:
            delay = self._faults.delay(unit)
            if delay > 0:
                self.counters["fault_delayed"] += 1
                conn.later(delay, lambda: self._answer(conn, tid, unit, pdu))
                return
        self._answer(conn, tid, unit, pdu)

    def _answer(self, conn: Connection, tid: int, unit: int, pdu: bytes) -> None:
        code = self._faults.exception(unit) if self._faults else None
        if code is not None:
            self.counters["fault_exceptions"] += 1
            response = bytes((pdu[0] | 0x80, code))
        else:
            response = self._respond(conn, unit, pdu)
        if response[0] & 0x80:
            self.exceptions[response[1]] += 1
        conn.send(tid, unit, response)

    def _respond(self, conn: Connection, unit: int, pdu: bytes) -> bytes:
        """The response PDU to a request PDU (an exception response when refused)."""
        fc = pdu[0]
        try:
            return pdus.respond(self.image, unit, pdu)
        except Refused as refused:
            if refused.kind is not None:
                self.protocol_errors[refused.kind] += 1
                self._log.note(refused.kind, logging.WARNING,
                               "modbus: %s: %s, answered exception %02X", conn.peer,
                               refused.detail or refused.kind.replace("_", " "),
                               refused.code)
            elif refused.detail:
                self._log.note("write_refused", logging.INFO,
                               "modbus: %s: unit %d function %d refused with exception "
                               "%02X: %s", conn.peer, unit, fc, refused.code, refused.detail)
            return bytes((fc | 0x80, refused.code))
        except Exception as exc:  # a defect here must not take the connection down
            self.counters["internal_errors"] += 1
            self._log.note("internal_error", logging.ERROR,
                           "modbus: unit %d function %d failed (%s: %s); answered "
                           "exception 04", unit, fc, type(exc).__name__, exc)
            return bytes((fc | 0x80, DEVICE_FAILURE))

    # -- protocol faults -------------------------------------------------------------------

    def inject(self, kind: str, *, target: str = ALL_UNITS,
               **params: Any) -> Callable[[], None]:
        """Apply a protocol fault now (see `rig.protocols.modbus.faults`); returns its clear
        function.

        Raises FaultTargetError for an unknown kind or target, ValueError for parameters.
        Clearing twice does nothing.
        """
        fault = self._faults.add(kind, target, params)
        self._faults_changed()
        log.warning("modbus: fault %s injected", fault)
        if kind == "modbus_disconnect":
            self.counters["fault_connections_closed"] += self._pool.abort_all()

        def clear() -> None:
            if self._faults.remove(fault):
                self._faults_changed()
                log.warning("modbus: fault %s cleared", fault)

        return clear

    def fault_active(self, kind: str, unit_id: int | None = None) -> bool:
        """True while a fault of ``kind`` covers ``unit_id`` (None: any unit)."""
        return self._faults.covering(kind, unit_id)

    def fault_delay(self, unit_id: int) -> float:
        """Injected latency of a unit's responses (s; 0 without a modbus_latency fault)."""
        return self._faults.delay(unit_id)

    def fault_exception(self, unit_id: int) -> int | None:
        """Exception code every request to a unit answers now, or None."""
        return self._faults.exception(unit_id)

    def _faults_changed(self) -> None:
        self.image.frozen = self._faults.frozen(frozenset(self.map.devices))

    # -- the runner's calls ----------------------------------------------------------------

    def refresh(self, values: np.ndarray, sim_time: float) -> None:
        """New snapshot of every point (table order, measured values) at ``sim_time`` (s)."""
        self.image.refresh(values, sim_time)

    def apply_pending(self, twin: Twin) -> list[AppliedWrite]:
        """Apply the writes queued since the last call, in arrival order."""
        pending = self.image.pending
        applied: list[AppliedWrite] = []
        while pending:
            write = pending.popleft()
            try:
                if write.point in self.quiet_points:
                    point = twin.points[write.point]
                    value = point.coerce(write.value)
                    assert point.setter is not None
                    point.setter(value)
                else:
                    value = twin.write(write.point, write.value, source="modbus")
                applied.append(AppliedWrite(write.point, value, write.unit_id, True, None,
                                            twin.now))
                self.counters["writes_applied"] += 1
            except (WriteRefused, PointError) as exc:  # the table changed under us
                reason = exc.reason if isinstance(exc, WriteRefused) else str(exc)
                log.warning("modbus: queued write %s = %g refused: %s", write.point,
                            write.value, reason)
                applied.append(AppliedWrite(write.point, write.value, write.unit_id, False,
                                            reason, twin.now))
                self.counters["writes_refused"] += 1
        return applied

    def stats(self) -> dict[str, Any]:
        """Counters for the status view and summary.json.

        ``requests`` (frames served), ``exceptions`` (exception responses by code),
        ``protocol_errors`` (every kind of `PROTOCOL_ERRORS`, 0 included), ``connections``
        (open now), ``connections_accepted`` / ``_refused`` (at a cap, all busy) /
        ``_evicted`` (made room for a new client) / ``_idle_closed``, ``pending_writes``,
        ``queue_full``, ``unknown_unit``, ``writes_applied`` / ``_refused``,
        ``internal_errors``, and fault effects: ``fault_exceptions`` (answers replaced by
        an injected exception), ``fault_delayed`` (requests held),
        ``fault_connections_closed`` / ``fault_connections_refused`` (by
        modbus_disconnect), ``fault_frozen_reads`` (reads served from a frozen snapshot);
        ``faults`` lists the active ones (kind@target)."""
        counters = {name: 0 for name in (
            "connections_accepted", "connections_refused", "connections_evicted",
            "connections_idle_closed", "writes_applied", "writes_refused", "internal_errors",
            "fault_exceptions", "fault_delayed", "fault_connections_closed",
            "fault_connections_refused")}
        counters.update(self.counters)
        return {"requests": self.requests, "exceptions": dict(self.exceptions),
                "protocol_errors": {k: self.protocol_errors[k] for k in PROTOCOL_ERRORS},
                "connections": self.connections, "pending_writes": len(self.image.pending),
                "queue_full": self.image.refused_full,
                "unknown_unit": self.protocol_errors["unknown_unit"],
                **counters,
                "fault_frozen_reads": self.image.frozen_reads,
                "faults": [str(f) for f in self._faults]}
