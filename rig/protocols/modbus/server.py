"""Modbus TCP server of the live rig (pymodbus 3.16), serving a
`rig.protocols.modbus.registers.ModbusMap`.

Everything runs on the live runner's asyncio loop thread, so there are no locks:

* ``refresh(values, sim_time)`` -- once per slice: encodes every point (table order,
  measured values) into a snapshot; each request is answered from one snapshot, so all
  values of one read come from the same slice.
* Writes are decoded and validated at once (`ModbusMap.writes`, i.e. `Point.coerce`):
  exception 02 (ILLEGAL DATA ADDRESS) for an undeclared or read-only address or a range
  that cuts a point in two, 03 (ILLEGAL DATA VALUE) for a value the point refuses, 06
  (SERVER DEVICE BUSY) when the write queue is full. A refused request changes nothing;
  a request writing several points is accepted or refused as a whole. Accepted values
  are queued and read back as written until the next refresh.
* ``apply_pending(twin)`` -- at the next slice boundary: applies the queued writes with
  ``twin.write(point, value, source="modbus")`` (points in ``quiet_points``, e.g.
  heartbeats, are applied without an event) and returns what was applied.
* An unknown unit id answers exception 0B (gateway target failed to respond).

Connections beyond ``max_connections`` are closed as soon as they are accepted; a
connection without a request for ``idle_timeout_s`` is closed. Requests and exception
responses (by code) are counted for the status view (`ModbusServer.stats`).

Protocol faults (`rig.assess.faults`) go through
``ModbusServer.inject(kind, target=..., **params)``,
which applies the fault at once and returns the function that clears it. ``target`` is
``modbus`` (every unit id, also unknown ones) or a device name (its unit id):

* ``modbus_exception(code)`` -- every request answers exception ``code``; the datastore is
  not reached, so nothing is written;
* ``modbus_latency(delay)`` -- each request waits ``delay`` wall seconds
  (``asyncio.sleep``: the loop, and the simulation on it, keep running) before it is
  served; the answer is computed after the wait. A request whose connection closed while
  it waited gets no answer;
* ``modbus_disconnect`` (target ``modbus`` only) -- every open connection is closed and new
  ones are closed as soon as they are accepted;
* ``modbus_frozen`` -- ``refresh`` leaves the unit's registers and bits as they were (the
  last snapshot, written values included); writes are still accepted and applied.

Faults of one kind may overlap: the largest delay and the most recent exception code of
the faults covering a unit apply. Each effect is counted in ``stats()`` (``fault_*``).

The datastore is a `pymodbus.datastore.ModbusServerContext` subclass: with 3.16 a context
flagged ``old_simulator`` is served directly through its ``async_getValues`` and
``async_setValues``, which may return a `pymodbus.constants.ExcCodes` member; pymodbus
turns that into the exception response. (The minor version is pinned in pyproject.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from rig.protocols.modbus.registers import FUNCTION_TABLES, ModbusMap, Table
from twin.errors import PointError, WriteRefused
from twin.faults import FaultTargetError

if TYPE_CHECKING:
    from twin.plant import Twin

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5020
FAULT_KINDS = ("modbus_exception", "modbus_latency", "modbus_disconnect", "modbus_frozen")
ALL_UNITS = "modbus"  # the fault target meaning every unit id


def parse_endpoint(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``, ``HOST``, ``:PORT``) of ``--modbus``; ValueError."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"modbus address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"modbus address {text!r}: expected [HOST]:PORT")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"modbus address {text!r}: port must be a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"modbus address {text!r}: port must be 0..65535")
    return host or DEFAULT_HOST, port


@dataclass(frozen=True, slots=True)
class ModbusConfig:
    """Where the server listens and its limits (port 0 = any free port)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_connections: int = 16
    idle_timeout_s: float = 60.0
    queue_bound: int = 256  # accepted point writes waiting for apply_pending

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.queue_bound < 1:
            raise ValueError("modbus max_connections and queue_bound must be >= 1")
        if not self.idle_timeout_s > 0:
            raise ValueError("modbus idle_timeout_s must be > 0")

    @classmethod
    def from_endpoint(cls, text: str, **overrides: Any) -> ModbusConfig:
        """A configuration from a ``--modbus HOST:PORT`` argument."""
        host, port = parse_endpoint(text)
        return cls(host=host, port=port, **overrides)


@dataclass(frozen=True, slots=True)
class AppliedWrite:
    """One queued write after ``apply_pending``: the value in the point's unit."""

    point: str
    value: float
    unit_id: int
    accepted: bool
    reason: str | None
    t: float  # simulated time it was applied (s)


@dataclass(frozen=True, slots=True)
class _Pending:
    point: str
    value: float
    unit_id: int
    position: int  # in the flat register or bit image
    raw: tuple[int, ...] | tuple[bool, ...]
    bits: bool


class RigContext(ModbusServerContext):
    """Datastore serving a map from a snapshot; only declared command points are writable."""

    def __init__(self, modbus_map: ModbusMap, queue_bound: int) -> None:
        # ModbusServerContext.__init__ would convert device contexts into pymodbus'
        # simulator; this context answers requests itself (see the module docstring).
        self.old_simulator = True
        self.simdevices = []
        self._devices = {}
        self.map = modbus_map
        self.queue_bound = queue_bound
        self.pending: deque[_Pending] = deque()
        self.refused_full = 0
        self.unknown_units = 0
        self.sim_time = math.nan
        self.frozen: frozenset[int] = frozenset()  # units whose snapshot refresh keeps
        self.frozen_reads = 0
        self._blocks = {(u, t): (off, size) for u, t, off, size in modbus_map.blocks()}
        self._regs: list[int] = [0] * modbus_map.register_count
        self._bits: list[bool] = [False] * modbus_map.bit_count

    def refresh(self, values: np.ndarray, sim_time: float) -> None:
        """Encode a new snapshot from table-ordered values; pending writes stay visible.

        The blocks of ``frozen`` units keep what they held (modbus_frozen).
        """
        if len(values) < len(self.map):
            raise ValueError(f"refresh: {len(values)} values for {len(self.map)} points")
        regs, bits = self.map.encode(values)
        new_regs: list[int] = regs.tolist()
        new_bits: list[bool] = bits.tolist()
        if self.frozen:
            for (unit, table), (off, size) in self._blocks.items():
                if unit in self.frozen:
                    old: list[Any] = self._bits if table.bits else self._regs
                    new: list[Any] = new_bits if table.bits else new_regs
                    new[off:off + size] = old[off:off + size]
        self._regs = new_regs
        self._bits = new_bits
        self.sim_time = float(sim_time)
        for write in self.pending:
            self._overlay(write)

    def _overlay(self, write: _Pending) -> None:
        image: list[Any] = self._bits if write.bits else self._regs
        image[write.position:write.position + len(write.raw)] = write.raw

    def device_ids(self) -> list[int]:
        """Unit ids served."""
        return sorted(self.map.devices)

    def _block(self, device_id: int, func_code: int) -> tuple[Table, int, int] | ExcCodes:
        if device_id not in self.map.devices:
            self.unknown_units += 1
            log.debug("modbus: request for unit id %d, which is not served", device_id)
            return ExcCodes.GATEWAY_NO_RESPONSE
        table = FUNCTION_TABLES.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        offset, size = self._blocks.get((device_id, table), (0, 0))
        return table, offset, size

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        """Registers or bits of one request, from the present snapshot."""
        found = self._block(device_id, func_code)
        if isinstance(found, ExcCodes):
            return found
        table, offset, size = found
        if count < 1 or address < 0 or address + count > size:
            return ExcCodes.ILLEGAL_ADDRESS
        if device_id in self.frozen:
            self.frozen_reads += 1
        image: list[Any] = self._bits if table.bits else self._regs
        return image[offset + address:offset + address + count]

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: Sequence[int] | Sequence[bool]) -> ExcCodes | None:
        """Validate and queue a write; an exception code refuses all of it."""
        found = self._block(device_id, func_code)
        if isinstance(found, ExcCodes):
            return found
        table, offset, _ = found
        try:
            writes = self.map.writes(device_id, table, address, list(values))
        except WriteRefused as exc:
            log.debug("modbus: unit %d %s write at %d refused: %s", device_id, table.value,
                      address, exc)
            return ExcCodes(exc.code)
        if len(self.pending) + len(writes) > self.queue_bound:
            self.refused_full += 1
            log.warning("modbus: write queue full (%d), write to unit %d refused",
                        self.queue_bound, device_id)
            return ExcCodes.DEVICE_BUSY
        for entry, value in writes:
            start = entry.address - address
            raw = tuple(values[start:start + entry.count])
            write = _Pending(entry.point.id, value, device_id, offset + entry.address, raw,
                             table.bits)
            self.pending.append(write)
            self._overlay(write)
        return None


class _Handler(ServerRequestHandler):
    """One client connection: enforces the connection cap and tracks activity.

    Each decoded request is queued with its address as it arrives and served by its own
    task (pymodbus keeps only the last one in ``last_pdu``, which a request arriving while
    another waits, e.g. under modbus_latency, would overwrite). Injected exceptions and
    delays are applied here, before the datastore.
    """

    def __init__(self, owner: _TcpServer) -> None:
        super().__init__(owner, None, owner.trace_pdu, None)
        self.rig = owner.rig
        self.last_active = time.monotonic()
        self._requests: deque[tuple[ModbusPDU, tuple | None]] = deque()

    def callback_connected(self) -> None:
        super().callback_connected()
        self.last_active = time.monotonic()
        if self.rig.fault_active("modbus_disconnect"):
            self.rig.counters["fault_connections_refused"] += 1
            log.info("modbus: connection refused (modbus_disconnect fault)")
            self.close()
        elif len(self.server.active_connections) > self.rig.config.max_connections:
            self.rig.counters["connections_refused"] += 1
            log.warning("modbus: connection refused, already %d connections",
                        self.rig.config.max_connections)
            self.close()
        else:
            self.rig.counters["connections_accepted"] += 1

    def callback_data(self, data: bytes, addr: tuple | None = None) -> int:
        self.last_active = time.monotonic()
        used = super().callback_data(data, addr)  # schedules handle_request for a request
        if self.last_pdu is not None:
            self._requests.append((self.last_pdu, self.last_addr))
        return used

    async def handle_request(self) -> None:
        """Serve the oldest queued request (one task per request, in arrival order)."""
        if not self._requests:
            return
        pdu, addr = self._requests.popleft()
        rig = self.rig
        delay = rig.fault_delay(pdu.dev_id)
        if delay > 0:
            rig.counters["fault_delayed"] += 1
            await asyncio.sleep(delay)
            if not self.is_active():
                return  # closed while waiting: nobody to answer
        code = rig.fault_exception(pdu.dev_id)
        if code is not None:
            rig.counters["fault_exceptions"] += 1
            response: ModbusPDU = ExceptionResponse(pdu.function_code, code)
        else:
            try:
                response = await pdu.datastore_update(self.server.context, pdu.dev_id)
            except Exception:
                log.exception("modbus: datastore failed on %s", pdu)
                response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        self.server_send(response, addr)


class _TcpServer(ModbusTcpServer):
    def __init__(self, rig: ModbusServer, context: RigContext) -> None:
        self.rig = rig
        super().__init__(context, address=(rig.config.host, rig.config.port),
                         trace_pdu=rig._trace_pdu)

    def callback_new_connection(self) -> _Handler:
        return _Handler(self)


class ModbusServer:
    """The rig's Modbus TCP server (see the module docstring)."""

    def __init__(self, modbus_map: ModbusMap, config: ModbusConfig | None = None, *,
                 quiet_points: Collection[str] = ()) -> None:
        self.map = modbus_map
        self.config = config or ModbusConfig()
        self.quiet_points = frozenset(quiet_points)
        self.context = RigContext(modbus_map, self.config.queue_bound)
        self.counters: Counter[str] = Counter()
        self.exceptions: Counter[int] = Counter()
        self.requests = 0
        self._faults: tuple[_Fault, ...] = ()
        self._server: _TcpServer | None = None
        self._listener: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (on the running loop); raises OSError if the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("modbus server already started")
        server = _TcpServer(self, self.context)
        if not await server.listen():
            raise OSError(f"modbus: cannot listen on {self.config.host}:{self.config.port}")
        self._server = server
        self._listener = server.transport  # type: ignore[assignment]
        assert self._listener is not None
        self._port = self._listener.sockets[0].getsockname()[1]
        self._reaper = asyncio.create_task(self._reap_idle(), name="modbus idle reaper")
        log.info("modbus: listening on %s:%d, %d units", self.config.host, self._port,
                 len(self.map.devices))

    async def stop(self) -> None:
        """Close every connection and the listener."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        if self._listener is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._listener.wait_closed(), 5.0)
            self._listener = None
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
        return len(self._server.active_connections) if self._server is not None else 0

    async def _reap_idle(self) -> None:
        idle = self.config.idle_timeout_s
        period = min(1.0, idle / 4)
        while True:
            await asyncio.sleep(period)
            if self._server is None:
                return
            now = time.monotonic()
            for handler in list(self._server.active_connections.values()):
                if isinstance(handler, _Handler) and now - handler.last_active > idle:
                    self.counters["connections_idle_closed"] += 1
                    log.info("modbus: closing a connection idle for %.0f s", idle)
                    handler.close()

    # -- protocol faults -------------------------------------------------------------------

    def inject(self, kind: str, *, target: str = ALL_UNITS,
               **params: Any) -> Callable[[], None]:
        """Apply a protocol fault now (see the module docstring); returns its clear function.

        Raises FaultTargetError for an unknown kind or target, ValueError for parameters.
        Clearing twice does nothing.
        """
        if kind not in FAULT_KINDS:
            raise FaultTargetError(f"modbus: unknown fault kind {kind!r}; the Modbus server "
                                   f"takes {', '.join(FAULT_KINDS)}")
        fault = _Fault(kind, target, self._fault_units(kind, target),
                       **_fault_params(kind, params))
        self._faults = (*self._faults, fault)
        self._faults_changed()
        log.warning("modbus: fault %s injected", fault)
        if kind == "modbus_disconnect" and self._server is not None:
            for handler in list(self._server.active_connections.values()):
                self.counters["fault_connections_closed"] += 1
                handler.close()

        def clear() -> None:
            if fault in self._faults:
                self._faults = tuple(f for f in self._faults if f is not fault)
                self._faults_changed()
                log.warning("modbus: fault %s cleared", fault)

        return clear

    def fault_active(self, kind: str, unit_id: int | None = None) -> bool:
        """True while a fault of ``kind`` covers ``unit_id`` (None: any unit)."""
        return any(f.kind == kind and (unit_id is None or f.covers(unit_id))
                   for f in self._faults)

    def fault_delay(self, unit_id: int) -> float:
        """Injected latency of a unit's responses (s; 0 without a modbus_latency fault)."""
        return max((f.delay for f in self._faults
                    if f.kind == "modbus_latency" and f.covers(unit_id)), default=0.0)

    def fault_exception(self, unit_id: int) -> int | None:
        """Exception code every request to a unit answers now, or None."""
        for fault in reversed(self._faults):
            if fault.kind == "modbus_exception" and fault.covers(unit_id):
                return fault.code
        return None

    def _fault_units(self, kind: str, target: str) -> frozenset[int] | None:
        if target == ALL_UNITS:
            return None
        if kind == "modbus_disconnect":
            raise FaultTargetError(f"{kind}: target must be {ALL_UNITS!r} (connections are "
                                   f"not per unit), not {target!r}")
        if target not in self.map.unit_ids:
            raise FaultTargetError(
                f"{kind}: unknown target {target!r}; expected {ALL_UNITS!r} or a device "
                f"served over Modbus ({', '.join(sorted(self.map.unit_ids))})")
        return frozenset({self.map.unit_ids[target]})

    def _faults_changed(self) -> None:
        frozen: set[int] = set()
        for fault in self._faults:
            if fault.kind == "modbus_frozen":
                frozen |= fault.units if fault.units is not None else set(self.map.devices)
        self.context.frozen = frozenset(frozen)

    # -- the runner's calls ----------------------------------------------------------------

    def refresh(self, values: np.ndarray, sim_time: float) -> None:
        """New snapshot of every point (table order, measured values) at ``sim_time`` (s)."""
        self.context.refresh(values, sim_time)

    def apply_pending(self, twin: Twin) -> list[AppliedWrite]:
        """Apply the writes queued since the last call, in arrival order."""
        pending = self.context.pending
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
        """Counters for the status view: requests, exceptions by code, connections, writes,
        and fault effects: ``fault_exceptions`` (answers replaced by an injected exception),
        ``fault_delayed`` (requests held), ``fault_connections_closed`` /
        ``fault_connections_refused`` (by modbus_disconnect), ``fault_frozen_reads`` (reads
        served from a frozen snapshot); ``faults`` lists the active ones (kind@target)."""
        return {"requests": self.requests, "exceptions": dict(self.exceptions),
                "connections": self.connections, "pending_writes": len(self.context.pending),
                "queue_full": self.context.refused_full,
                "unknown_unit": self.context.unknown_units,
                "fault_exceptions": 0, "fault_delayed": 0, "fault_connections_closed": 0,
                "fault_connections_refused": 0, **self.counters,
                "fault_frozen_reads": self.context.frozen_reads,
                "faults": [str(f) for f in self._faults]}

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests += 1
        elif isinstance(pdu, ExceptionResponse):
            self.exceptions[pdu.exception_code] += 1
        return pdu


@dataclass(frozen=True, eq=False, slots=True)
class _Fault:
    """One active protocol fault; ``units`` None covers every unit id."""

    kind: str
    target: str
    units: frozenset[int] | None
    code: int = 0
    delay: float = 0.0

    def covers(self, unit_id: int) -> bool:
        return self.units is None or unit_id in self.units

    def __str__(self) -> str:
        return f"{self.kind}@{self.target}"


def _fault_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check a fault's parameters: ``code`` (1..255, default 6) or ``delay`` (s, > 0)."""
    allowed = {"modbus_exception": {"code"}, "modbus_latency": {"delay"}}.get(kind, set())
    extra = sorted(set(params) - allowed)
    if extra:
        raise ValueError(f"{kind}: unexpected parameter(s) {', '.join(extra)}")
    if kind == "modbus_exception":
        code = params.get("code", ExcCodes.DEVICE_BUSY)
        if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 255:
            raise ValueError(f"{kind}: code must be an integer 1..255, not {code!r}")
        return {"code": int(code)}
    if kind == "modbus_latency":
        if "delay" not in params:
            raise ValueError(f"{kind}: needs delay (s)")
        delay = params["delay"]
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not (
                math.isfinite(delay) and delay > 0):
            raise ValueError(f"{kind}: delay must be a number of seconds > 0, not {delay!r}")
        return {"delay": float(delay)}
    return {}
