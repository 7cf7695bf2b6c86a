"""Modbus TCP server of the live rig, serving a `rig.protocols.modbus.registers.ModbusMap`.

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

The protocol follows the Modbus Application Protocol Specification V1.1b3 and the
Modbus Messaging on TCP/IP Implementation Guide V1.0b for the function codes served:
1, 2 (read coils / discrete inputs, 1-2000), 3, 4 (read holding / input registers,
1-125), 5 (write single coil: 0xFF00 or 0x0000), 6 (write single register), 15 (write
multiple coils, 1-1968), 16 (write multiple registers, 1-123), 22 (mask write
register), 23 (read/write multiple registers, read 1-125 / write 1-121; the write is
done before the read, both parts are validated first and an exception applies
nothing). Checks in the specification's order: function code served (else 01), PDU
length, quantity and byte count (else 03), address range (else 02), value (else 03).
Other function codes answer 01. Several requests may be in flight on one connection
(pipelined, even in one TCP segment): each is answered, in order. A frame with a
protocol id other than 0 is not Modbus and is dropped unanswered; an MBAP length
outside 2..254 loses the framing, so the connection is closed.

Why the framing and the PDUs are this module's own rather than pymodbus 3.16's server:
its transport empties the receive buffer whenever it sends an answer and its framer
decodes one frame per received segment, so pipelined requests are lost; a frame with a
bad protocol id is neither consumed nor skipped (the stream stalls until 264 bytes have
piled up and are thrown away, valid frames with them), and is logged, with hex dumps
at debug level, each time more bytes arrive; its decoders take any FC5 value but 0 as
ON, answer FC15 quantity 0 with 01, and FC23 writes before it checks the read address. None
of these is reachable through its public hooks. The map and the datastore rules are
unchanged; the pymodbus *client* still talks to this server in the tests.

Connections (`ModbusConfig`), so that no client can starve the others:

* at most ``max_connections`` in all and ``max_per_address`` (default half of it) from
  one source address. A new client arriving at a cap takes the place of one connection
  in that scope: the oldest sending a partial frame without ever having completed one;
  else the one without a request for longest (since it connected, if it never asked),
  if that is ``evict_idle_s`` or more; else the youngest that has not asked yet. When
  every connection has asked within ``evict_idle_s`` (all busy) the new client is
  closed at once. A client trickling bytes never holds a slot a newcomer needs, and a
  burst of newcomers replaces its own members, not a client that connected before it;
* a frame must be complete ``frame_timeout_s`` after its first byte, else the connection
  is closed (a client trickling bytes holds no slot for long);
* a connection without a complete request for ``idle_timeout_s`` is closed;
* a client that does not read its answers is not read from either (backpressure), and
  a long burst of pipelined requests is served in batches so the loop keeps running.

Expected protocol errors are counted per kind (``stats()["protocol_errors"]``, see
`PROTOCOL_ERRORS`) and logged as summaries: at most one line per kind every
``LOG_PERIOD_S``, the first at once, later ones with the count since (flushed at
``stop``). No traceback and no frame bytes are logged; only numbers and the peer's
address.

Protocol faults (`rig.assess.faults`) go through
``ModbusServer.inject(kind, target=..., **params)``,
which applies the fault at once and returns the function that clears it. ``target`` is
``modbus`` (every unit id, also unknown ones) or a device name (its unit id):

* ``modbus_exception(code)`` -- every request answers exception ``code``; the datastore is
  not reached, so nothing is written;
* ``modbus_latency(delay)`` -- each request waits ``delay`` wall seconds (a timer on the
  loop: the simulation keeps running) before it is served; the answer is computed after
  the wait. A request whose connection closed while it waited gets no answer. Answers
  of units without latency do not wait for delayed ones (each carries its transaction
  id, as a gateway's would);
* ``modbus_disconnect`` (target ``modbus`` only) -- every open connection is closed and new
  ones are closed as soon as they are accepted;
* ``modbus_frozen`` -- ``refresh`` leaves the unit's registers and bits as they were (the
  last snapshot, written values included); writes are still accepted and applied.

Faults of one kind may overlap: the largest delay and the most recent exception code of
the faults covering a unit apply. Each effect is counted in ``stats()`` (``fault_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rig.protocols.modbus.registers import FUNCTION_TABLES, ModbusMap, Table
from twin.errors import ConfigError, PointError, WriteRefused
from twin.faults import FaultTargetError

if TYPE_CHECKING:
    from twin.plant import Twin

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5020
FAULT_KINDS = ("modbus_exception", "modbus_latency", "modbus_disconnect", "modbus_frozen")
ALL_UNITS = "modbus"  # the fault target meaning every unit id

# Exception codes (Modbus Application Protocol V1.1b3, section 7).
ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
DEVICE_FAILURE = 0x04
DEVICE_BUSY = 0x06
GATEWAY_NO_RESPONSE = 0x0B

# Quantity limits per function code (ibid., section 6).
READ_LIMITS = {1: 2000, 2: 2000, 3: 125, 4: 125}
MAX_WRITE_COILS = 1968
MAX_WRITE_REGISTERS = 123
MAX_RW_READ = 125
MAX_RW_WRITE = 121

MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
_MBAP_HEAD = struct.Struct(">HHH")
MBAP_MIN_LENGTH = 2  # unit id + function code
MBAP_MAX_LENGTH = 254  # unit id + a PDU of at most 253 bytes
BATCH_FRAMES = 128  # frames served before the loop gets a turn
LOG_PERIOD_S = 10.0

PROTOCOL_ERRORS = (
    "bad_length",  # MBAP length outside 2..254: connection closed
    "bad_protocol_id",  # not Modbus: frame dropped, no answer
    "frame_timeout",  # a frame not complete in frame_timeout_s: connection closed
    "illegal_function",  # function code not served: 01
    "malformed_pdu",  # PDU length wrong for its function code: 03
    "bad_quantity",  # quantity outside the function code's limits: 03
    "bad_byte_count",  # byte count does not match the quantity: 03
    "bad_coil_value",  # FC5 value other than 0xFF00/0x0000: 03
    "unknown_unit",  # unit id not served: 0B
)

_RW = struct.Struct(">BHHHHB")
_HEAD = struct.Struct(">BHHB")
_FIXED = struct.Struct(">BHH")
_MASK = struct.Struct(">BHHH")


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

    ``max_per_address`` None means half of ``max_connections`` (at least 1).
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


class _Refused(Exception):
    """An exception response: ``code``, and the protocol error ``kind`` it counts as."""

    def __init__(self, code: int, kind: str | None = None, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.kind = kind
        self.detail = detail


class _LogBudget:
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


class _Image:
    """The served registers and bits of every unit: the snapshot plus queued writes.

    Registers are held as the big-endian bytes a read answers with, bits as a bool array.
    """

    def __init__(self, modbus_map: ModbusMap, queue_bound: int) -> None:
        self.map = modbus_map
        self.queue_bound = queue_bound
        self.pending: deque[_Pending] = deque()
        self.refused_full = 0
        self.sim_time = math.nan
        self.frozen: frozenset[int] = frozenset()  # units whose snapshot refresh keeps
        self.frozen_reads = 0
        self.blocks = {(u, t): (off, size) for u, t, off, size in modbus_map.blocks()}
        self.regs = bytearray(2 * modbus_map.register_count)
        self.bits = np.zeros(modbus_map.bit_count, dtype=bool)

    def refresh(self, values: np.ndarray, sim_time: float) -> None:
        """Encode a new snapshot from table-ordered values; pending writes stay visible.

        The blocks of ``frozen`` units keep what they held (modbus_frozen).
        """
        if len(values) < len(self.map):
            raise ValueError(f"refresh: {len(values)} values for {len(self.map)} points")
        regs, bits = self.map.encode(values)
        new_regs = bytearray(regs.astype(">u2").tobytes())
        if self.frozen:
            for (unit, table), (off, size) in self.blocks.items():
                if unit in self.frozen:
                    if table.bits:
                        bits[off:off + size] = self.bits[off:off + size]
                    else:
                        new_regs[2 * off:2 * (off + size)] = self.regs[2 * off:2 * (off + size)]
        self.regs = new_regs
        self.bits = bits
        self.sim_time = float(sim_time)
        for write in self.pending:
            self._overlay(write)

    def _overlay(self, write: _Pending) -> None:
        if write.bits:
            self.bits[write.position:write.position + len(write.raw)] = write.raw
        else:
            struct.pack_into(f">{len(write.raw)}H", self.regs, 2 * write.position, *write.raw)

    def span(self, unit: int, table: Table, address: int, count: int) -> int:
        """Start in the flat image of ``count`` items from ``address``; 02 if outside."""
        off, size = self.blocks.get((unit, table), (0, 0))
        if address + count > size:
            raise _Refused(ILLEGAL_ADDRESS)
        return off + address

    def read(self, unit: int, table: Table, address: int, count: int,
             served: bool = True) -> bytes:
        """Registers (big-endian bytes) or bits (packed, LSB first) of a read request
        (``served`` False: an internal look, not counted as a read of a frozen unit)."""
        start = self.span(unit, table, address, count)
        if served and unit in self.frozen:
            self.frozen_reads += 1
        if table.bits:
            return np.packbits(self.bits[start:start + count], bitorder="little").tobytes()
        return bytes(self.regs[2 * start:2 * (start + count)])

    def prepare(self, unit: int, table: Table, address: int,
                values: list[int] | list[bool]) -> list[_Pending]:
        """Validate a write; the queued entries it would make, or _Refused (02/03/06)."""
        try:
            writes = self.map.writes(unit, table, address, values)
        except WriteRefused as exc:
            raise _Refused(exc.code, None, str(exc)) from None
        if len(self.pending) + len(writes) > self.queue_bound:
            self.refused_full += 1
            raise _Refused(DEVICE_BUSY, None, f"write queue full ({self.queue_bound})")
        off = self.blocks[(unit, table)][0]
        out = []
        for entry, value in writes:
            start = entry.address - address
            raw = tuple(values[start:start + entry.count])
            out.append(_Pending(entry.point.id, value, unit, off + entry.address, raw,
                                table.bits))
        return out

    def commit(self, writes: Iterable[_Pending]) -> None:
        """Queue validated writes; they read back as written until the next refresh."""
        for write in writes:
            self.pending.append(write)
            self._overlay(write)


class _Connection(asyncio.Protocol):
    """One client connection: splits the TCP stream into MBAP frames and serves them.

    Hand-written rather than pymodbus' transport and framer, which lose pipelined
    requests and stall on a bad protocol id (see the module docstring).
    """

    def __init__(self, server: ModbusServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.host = "?"
        self.buffer = bytearray()
        self.accepted = time.monotonic()
        self.last_request = self.accepted
        self.requested = False  # completed a request yet
        self.closed = False
        self._frame_timer: asyncio.TimerHandle | None = None
        self._delayed: set[asyncio.TimerHandle] = set()
        self._write_paused = False
        self._backlog = False  # reading paused while a burst is served in batches

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.host = str(peer[0])
            self.peer = f"[{peer[0]}]:{peer[1]}" if ":" in self.host else f"{peer[0]}:{peer[1]}"
        self.server._admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buffer += data
        self._consume()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()
        self._watch_frame(False, restarted=False)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.closed or self.transport is None:
            return
        if not self._backlog:
            self.transport.resume_reading()
        self._consume()

    # -- framing -------------------------------------------------------------------------

    def _consume(self) -> None:
        """Serve every complete frame in the buffer (a batch at a time), in order."""
        buf = self.buffer
        size = len(buf)
        pos = served = 0
        server = self.server
        while size - pos >= 6 and not self._write_paused:
            tid, protocol, length = _MBAP_HEAD.unpack_from(buf, pos)
            if not MBAP_MIN_LENGTH <= length <= MBAP_MAX_LENGTH:
                server._protocol_error("bad_length", self, "MBAP length %d (2..254 "
                                       "allowed); connection closed", length)
                self.abort()
                return
            end = pos + 6 + length
            if end > size:
                break
            unit = buf[pos + 6]
            pdu = bytes(buf[pos + 7:end])
            pos = end
            served += 1
            if protocol:
                server._protocol_error("bad_protocol_id", self, "protocol id %d is not "
                                       "Modbus; frame dropped", protocol)
            else:
                self.last_request = time.monotonic()
                self.requested = True
                server._handle(self, tid, unit, pdu)
                if self.closed:
                    return
            if served >= BATCH_FRAMES:
                break
        if pos:
            del buf[:pos]
        rest = len(buf)
        more = rest >= 6 and not self._write_paused and served >= BATCH_FRAMES
        if more != self._backlog and self.transport is not None:
            self._backlog = more
            if more:
                self.transport.pause_reading()
            elif not self._write_paused:
                self.transport.resume_reading()
        if more:
            asyncio.get_running_loop().call_soon(self._consume_later)
        # Only an incomplete frame at the head is timed, and not while the client's
        # answers are not read: its bytes may be waiting in the socket for us to read.
        partial = 0 < rest < 6 + (MBAP_MAX_LENGTH if rest < 6 else buf[4] << 8 | buf[5])
        self._watch_frame(partial and not self._write_paused, restarted=pos > 0)

    def _consume_later(self) -> None:
        if not self.closed:
            self._consume()

    def _watch_frame(self, partial: bool, restarted: bool) -> None:
        """Time a partial frame: it must be complete frame_timeout_s after its start."""
        timer = self._frame_timer
        if timer is not None and (not partial or restarted):
            timer.cancel()
            self._frame_timer = timer = None
        if partial and timer is None:
            self._frame_timer = asyncio.get_running_loop().call_later(
                self.server.config.frame_timeout_s, self._frame_expired)

    def _frame_expired(self) -> None:
        self._frame_timer = None
        if not self.closed and self.buffer:
            self.server._protocol_error(
                "frame_timeout", self, "frame not complete %.3g s after it started (%d "
                "bytes of it); connection closed", self.server.config.frame_timeout_s,
                len(self.buffer))
            self.abort()

    # -- answers -------------------------------------------------------------------------

    def send(self, tid: int, unit: int, pdu: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu)

    def later(self, delay: float, tid: int, unit: int, pdu: bytes) -> None:
        """Serve a request after ``delay`` s (modbus_latency)."""
        handle: asyncio.TimerHandle

        def due() -> None:
            self._delayed.discard(handle)
            if not self.closed:
                self.server._answer(self, tid, unit, pdu)

        handle = asyncio.get_running_loop().call_later(delay, due)
        self._delayed.add(handle)

    # -- closing -------------------------------------------------------------------------

    def idle_for(self, now: float) -> float:
        return now - self.last_request

    def close(self) -> None:
        """Close after the answers already written are sent."""
        if self.transport is not None and not self.closed:
            self.transport.close()
        self._drop()

    def abort(self) -> None:
        """Close at once, dropping unsent answers."""
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self._drop()

    def _drop(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.buffer.clear()
        if self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None
        for handle in self._delayed:
            handle.cancel()
        self._delayed.clear()
        self.server._forget(self)


class ModbusServer:
    """The rig's Modbus TCP server (see the module docstring)."""

    def __init__(self, modbus_map: ModbusMap, config: ModbusConfig | None = None, *,
                 quiet_points: Collection[str] = ()) -> None:
        self.map = modbus_map
        self.config = config or ModbusConfig()
        self.quiet_points = frozenset(quiet_points)
        self.image = _Image(modbus_map, self.config.queue_bound)
        self.counters: Counter[str] = Counter()
        self.exceptions: Counter[int] = Counter()
        self.protocol_errors: Counter[str] = Counter()
        self.requests = 0
        self._log = _LogBudget(log)
        self._faults: tuple[_Fault, ...] = ()
        self._conns: dict[_Connection, None] = {}  # in order of acceptance
        self._listener: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._handlers: dict[int, Callable[[int, bytes], bytes]] = {
            1: self._read, 2: self._read, 3: self._read, 4: self._read,
            5: self._write_coil, 6: self._write_register, 15: self._write_coils,
            16: self._write_registers, 22: self._mask_write, 23: self._read_write}

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (on the running loop); raises OSError if the address cannot be bound."""
        if self._listener is not None:
            raise RuntimeError("modbus server already started")
        loop = asyncio.get_running_loop()
        host, port = self.config.host, self.config.port
        try:
            self._listener = await loop.create_server(lambda: _Connection(self), host, port,
                                                      reuse_address=True)
        except OSError as exc:
            raise OSError(f"modbus: cannot listen on {host}:{port} "
                          f"({exc.strerror or exc})") from exc
        self._port = self._listener.sockets[0].getsockname()[1]
        self._reaper = asyncio.create_task(self._reap_idle(), name="modbus idle reaper")
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
            for conn in list(self._conns):
                conn.abort()
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
        return len(self._conns)

    # -- connections ---------------------------------------------------------------------

    def _admit(self, conn: _Connection) -> None:
        """Take a new connection in, in place of the most idle one at a cap, or close it."""
        if self.fault_active("modbus_disconnect"):
            self.counters["fault_connections_refused"] += 1
            self._log.note("fault_refused", logging.INFO,
                           "modbus: connection from %s refused (modbus_disconnect fault)",
                           conn.peer)
            conn.abort()
            return
        cfg = self.config
        same = [c for c in self._conns if c.host == conn.host]
        scope, cap, what = ((same, cfg.per_address, f"from {conn.host}")
                            if len(same) >= cfg.per_address else
                            (list(self._conns), cfg.max_connections, "in all"))
        if len(scope) >= cap:
            victim = self._victim(scope)
            if victim is None:
                self.counters["connections_refused"] += 1
                self._log.note("connection_refused", logging.WARNING,
                               "modbus: connection from %s refused: at the cap of %d "
                               "connections %s, none idle", conn.peer, cap, what)
                conn.abort()
                return
            self.counters["connections_evicted"] += 1
            self._log.note("connection_evicted", logging.WARNING,
                           "modbus: closed the idle connection from %s to make room for %s "
                           "(at the cap of %d connections %s)", victim.peer, conn.peer, cap,
                           what)
            victim.abort()
        self._conns[conn] = None
        self.counters["connections_accepted"] += 1

    def _victim(self, scope: list[_Connection]) -> _Connection | None:
        """The connection to give way, or None: the oldest one sending a partial frame
        that has never completed one; else the one idle longest (since its last request,
        or since it connected if it never asked) if that is evict_idle_s or more; else
        the youngest that has not asked yet (a burst of newcomers replaces itself, not a
        client that connected just before it)."""
        trickling = [c for c in scope if not c.requested and c.buffer]
        if trickling:
            return min(trickling, key=lambda c: c.accepted)
        now = time.monotonic()
        idlest = max(scope, key=lambda c: c.idle_for(now))
        if idlest.idle_for(now) >= self.config.evict_idle_s:
            return idlest
        silent = [c for c in scope if not c.requested]
        return max(silent, key=lambda c: c.accepted) if silent else None

    def _forget(self, conn: _Connection) -> None:
        self._conns.pop(conn, None)

    async def _reap_idle(self) -> None:
        idle = self.config.idle_timeout_s
        period = min(0.5, idle / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self._conns):
                if conn.idle_for(now) > idle:
                    self.counters["connections_idle_closed"] += 1
                    self._log.note("idle_closed", logging.INFO,
                                   "modbus: closing the connection from %s, idle for %.0f s",
                                   conn.peer, idle)
                    conn.close()
            self._log.flush()

    def _protocol_error(self, kind: str, conn: _Connection, fmt: str, *args: object) -> None:
        self.protocol_errors[kind] += 1
        self._log.note(kind, logging.WARNING, "modbus: %s: " + fmt, conn.peer, *args)

    # -- requests ------------------------------------------------------------------------

    def _handle(self, conn: _Connection, tid: int, unit: int, pdu: bytes) -> None:
        """One request frame: delayed by a latency fault, else answered now."""
        self.requests += 1
        if self._faults:
            delay = self.fault_delay(unit)
            if delay > 0:
                self.counters["fault_delayed"] += 1
                conn.later(delay, tid, unit, pdu)
                return
        self._answer(conn, tid, unit, pdu)

    def _answer(self, conn: _Connection, tid: int, unit: int, pdu: bytes) -> None:
        code = self.fault_exception(unit) if self._faults else None
        if code is not None:
            self.counters["fault_exceptions"] += 1
            response = bytes((pdu[0] | 0x80, code))
        else:
            response = self._respond(conn, unit, pdu)
        if response[0] & 0x80:
            self.exceptions[response[1]] += 1
        conn.send(tid, unit, response)

    def _respond(self, conn: _Connection, unit: int, pdu: bytes) -> bytes:
        """The response PDU to a request PDU (an exception response when refused)."""
        fc = pdu[0]
        try:
            if unit not in self.map.devices:
                raise _Refused(GATEWAY_NO_RESPONSE, "unknown_unit", f"unit id {unit} not served")
            handler = self._handlers.get(fc)
            if handler is None:
                raise _Refused(ILLEGAL_FUNCTION, "illegal_function",
                              f"function code {fc} not served")
            return handler(unit, pdu)
        except _Refused as refused:
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

    # FC1-4
    def _read(self, unit: int, pdu: bytes) -> bytes:
        if len(pdu) != 5:
            raise _Refused(ILLEGAL_VALUE, "malformed_pdu", f"function {pdu[0]}: "
                           f"{len(pdu)}-byte PDU, 5 expected")
        fc, address, count = _FIXED.unpack(pdu)
        if not 1 <= count <= READ_LIMITS[fc]:
            raise _Refused(ILLEGAL_VALUE, "bad_quantity", f"function {fc}: quantity "
                           f"{count}, 1..{READ_LIMITS[fc]} allowed")
        data = self.image.read(unit, FUNCTION_TABLES[fc], address, count)
        return bytes((fc, len(data))) + data

    # FC5
    def _write_coil(self, unit: int, pdu: bytes) -> bytes:
        if len(pdu) != 5:
            raise _Refused(ILLEGAL_VALUE, "malformed_pdu", f"function 5: {len(pdu)}-byte "
                           "PDU, 5 expected")
        _, address, value = _FIXED.unpack(pdu)
        if value not in (0xFF00, 0x0000):
            raise _Refused(ILLEGAL_VALUE, "bad_coil_value", f"function 5: value "
                           f"{value:#06x}, 0xFF00 or 0x0000 allowed")
        self.image.commit(self.image.prepare(unit, Table.COILS, address, [value == 0xFF00]))
        return pdu

    # FC6
    def _write_register(self, unit: int, pdu: bytes) -> bytes:
        if len(pdu) != 5:
            raise _Refused(ILLEGAL_VALUE, "malformed_pdu", f"function 6: {len(pdu)}-byte "
                           "PDU, 5 expected")
        _, address, value = _FIXED.unpack(pdu)
        self.image.commit(self.image.prepare(unit, Table.HOLDING_REGISTERS, address,
                                             [value]))
        return pdu

    @staticmethod
    def _multiple(pdu: bytes, most: int, per_item: float) -> tuple[int, int, bytes]:
        """(address, quantity, data) of FC15/16; checks quantity, byte count, length."""
        fc = pdu[0]
        if len(pdu) < 6:
            raise _Refused(ILLEGAL_VALUE, "malformed_pdu", f"function {fc}: {len(pdu)}-byte "
                           "PDU, at least 6 expected")
        _, address, count, byte_count = _HEAD.unpack_from(pdu)
        if not 1 <= count <= most:
            raise _Refused(ILLEGAL_VALUE, "bad_quantity", f"function {fc}: quantity "
                           f"{count}, 1..{most} allowed")
        want = math.ceil(count * per_item)
        if byte_count != want:
            raise _Refused(ILLEGAL_VALUE, "bad_byte_count", f"function {fc}: byte count "
                           f"{byte_count} for quantity {count}, {want} expected")
        if len(pdu) != 6 + byte_count:
            raise _Refused(ILLEGAL_VALUE, "malformed_pdu", f"function {fc}: {len(pdu) - 6} "
                           f"data bytes, byte count says {byte_count}")
        return address, count, pdu[6:]

    # FC15
    def _write_coils(self, unit: int, pdu: bytes) -> bytes:
        address, count, data = self._multiple(pdu, MAX_WRITE_COILS, 1 / 8)
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        values = [bool(b) for b in bits[:count]]
        self.image.commit(self.image.prepare(unit, Table.COILS, address, values))
        return _FIXED.pack(15, address, count)

    # FC16
    def _write_registers(self, unit: int, pdu: bytes) -> bytes:
        address, count, data = self._multiple(pdu, MAX_WRITE_REGISTERS, 2)
        values = list(struct.unpack(f">{count}H", data))
        self.image.commit(self.image.prepare(unit, Table.HOLDING_REGISTERS, address, values))
        return _FIXED.pack(16, address, count)

    # FC22
    def _mask_write(self, unit: int, pdu: bytes) -> bytes:
        if len(pdu) != 7:
            raise _Refused(ILLEGAL_VALUE, "malformed_pdu", f"function 22: {len(pdu)}-byte "
                           "PDU, 7 expected")
        _, address, and_mask, or_mask = _MASK.unpack(pdu)
        table = Table.HOLDING_REGISTERS
        current = int.from_bytes(self.image.read(unit, table, address, 1, served=False), "big")
        value = (current & and_mask) | (or_mask & ~and_mask & 0xFFFF)
        self.image.commit(self.image.prepare(unit, table, address, [value]))
        return pdu

    # FC23
    def _read_write(self, unit: int, pdu: bytes) -> bytes:
        if len(pdu) < 10:
            raise _Refused(ILLEGAL_VALUE, "malformed_pdu", f"function 23: {len(pdu)}-byte "
                           "PDU, at least 10 expected")
        _, read_address, read_count, write_address, write_count, byte_count = \
            _RW.unpack_from(pdu)
        if not 1 <= read_count <= MAX_RW_READ:
            raise _Refused(ILLEGAL_VALUE, "bad_quantity", f"function 23: read quantity "
                           f"{read_count}, 1..{MAX_RW_READ} allowed")
        if not 1 <= write_count <= MAX_RW_WRITE:
            raise _Refused(ILLEGAL_VALUE, "bad_quantity", f"function 23: write quantity "
                           f"{write_count}, 1..{MAX_RW_WRITE} allowed")
        if byte_count != 2 * write_count:
            raise _Refused(ILLEGAL_VALUE, "bad_byte_count", f"function 23: byte count "
                           f"{byte_count} for quantity {write_count}, {2 * write_count} "
                           "expected")
        if len(pdu) != 10 + byte_count:
            raise _Refused(ILLEGAL_VALUE, "malformed_pdu", f"function 23: {len(pdu) - 10} "
                           f"data bytes, byte count says {byte_count}")
        table = Table.HOLDING_REGISTERS
        self.image.span(unit, table, read_address, read_count)  # both parts first
        writes = self.image.prepare(unit, table, write_address,
                                    list(struct.unpack(f">{write_count}H", pdu[10:])))
        self.image.commit(writes)
        data = self.image.read(unit, table, read_address, read_count)
        return bytes((23, len(data))) + data

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
        if kind == "modbus_disconnect":
            for conn in list(self._conns):
                self.counters["fault_connections_closed"] += 1
                conn.abort()

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
        self.image.frozen = frozenset(frozen)

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
        code = params.get("code", DEVICE_BUSY)
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
