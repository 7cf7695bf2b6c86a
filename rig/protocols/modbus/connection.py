"""Modbus TCP connections: MBAP framing, frame deadline, backpressure, batches, and the
admission and eviction of clients (`ConnectionPool`), so that no client can starve the
others.

Framing follows the Modbus Messaging on TCP/IP Implementation Guide V1.0b. Several
requests may be in flight on one connection (pipelined, even in one TCP segment): each
is answered, in order. A frame with a protocol id other than 0 is not Modbus and is
dropped unanswered; an MBAP length outside 2..254 loses the framing, so the connection
is closed.

Why the framing is the server's own rather than pymodbus 3.16's: its transport empties
the receive buffer whenever it sends an answer and its framer decodes one frame per
received segment, so pipelined requests are lost; a frame with a bad protocol id is
neither consumed nor skipped (the stream stalls until 264 bytes have piled up and are
thrown away, valid frames with them), and is logged, with hex dumps at debug level, each
time more bytes arrive. None of these is reachable through its public hooks.

Limits (`rig.protocols.modbus.config.ModbusConfig`):

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
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable

from rig.protocols.modbus.config import ModbusConfig
from rig.protocols.modbus.logbudget import LogBudget

MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
_MBAP_HEAD = struct.Struct(">HHH")
MBAP_MIN_LENGTH = 2  # unit id + function code
MBAP_MAX_LENGTH = 254  # unit id + a PDU of at most 253 bytes
BATCH_FRAMES = 128  # frames served before the loop gets a turn

Serve = Callable[["Connection", int, int, bytes], None]  # conn, transaction id, unit, PDU
ProtocolError = Callable[..., None]  # (kind, conn, fmt, *args)


class Connection(asyncio.Protocol):
    """One client connection: splits the TCP stream into MBAP frames and serves them.

    Hand-written rather than pymodbus' transport and framer, which lose pipelined
    requests and stall on a bad protocol id (see the module docstring).
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
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
        self.pool.admit(self)

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
        pool = self.pool
        while size - pos >= 6 and not self._write_paused:
            tid, protocol, length = _MBAP_HEAD.unpack_from(buf, pos)
            if not MBAP_MIN_LENGTH <= length <= MBAP_MAX_LENGTH:
                pool.error("bad_length", self, "MBAP length %d (2..254 allowed); "
                           "connection closed", length)
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
                pool.error("bad_protocol_id", self, "protocol id %d is not Modbus; "
                           "frame dropped", protocol)
            else:
                self.last_request = time.monotonic()
                self.requested = True
                pool.serve(self, tid, unit, pdu)
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
                self.pool.config.frame_timeout_s, self._frame_expired)

    def _frame_expired(self) -> None:
        self._frame_timer = None
        if not self.closed and self.buffer:
            self.pool.error(
                "frame_timeout", self, "frame not complete %.3g s after it started (%d "
                "bytes of it); connection closed", self.pool.config.frame_timeout_s,
                len(self.buffer))
            self.abort()

    # -- answers -------------------------------------------------------------------------

    def send(self, tid: int, unit: int, pdu: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu)

    def later(self, delay: float, serve: Callable[[], None]) -> None:
        """Call ``serve`` after ``delay`` s unless the connection closed (modbus_latency)."""
        handle: asyncio.TimerHandle

        def due() -> None:
            self._delayed.discard(handle)
            if not self.closed:
                serve()

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
        self.pool.forget(self)



class ConnectionPool:
    """The open connections, in order of acceptance, within the limits of ``config``.

    ``serve(conn, tid, unit, pdu)`` is called for each request frame, ``error(kind, conn,
    fmt, *args)`` for each framing error, and ``refuse(conn)`` for each new client: True
    closes it at once (modbus_disconnect). Connection events are counted in ``counters``
    (``connections_*``) and logged through ``budget``.
    """

    def __init__(self, config: ModbusConfig, budget: LogBudget, counters: Counter[str], *,
                 serve: Serve, error: ProtocolError,
                 refuse: Callable[[Connection], bool]) -> None:
        self.config = config
        self.budget = budget
        self.counters = counters
        self.serve = serve
        self.error = error
        self.refuse = refuse
        self.conns: dict[Connection, None] = {}  # in order of acceptance

    def __len__(self) -> int:
        return len(self.conns)

    def connection(self) -> Connection:
        """A new connection protocol (the listener's factory)."""
        return Connection(self)

    def abort_all(self) -> int:
        """Close every open connection at once; how many there were."""
        conns = list(self.conns)
        for conn in conns:
            conn.abort()
        return len(conns)

    def admit(self, conn: Connection) -> None:
        """Take a new connection in, in place of the most idle one at a cap, or close it."""
        if self.refuse(conn):
            conn.abort()
            return
        cfg = self.config
        same = [c for c in self.conns if c.host == conn.host]
        scope, cap, what = ((same, cfg.per_address, f"from {conn.host}")
                            if len(same) >= cfg.per_address else
                            (list(self.conns), cfg.max_connections, "in all"))
        if len(scope) >= cap:
            victim = self.victim(scope)
            if victim is None:
                self.counters["connections_refused"] += 1
                self.budget.note("connection_refused", logging.WARNING,
                                 "modbus: connection from %s refused: at the cap of %d "
                                 "connections %s, none idle", conn.peer, cap, what)
                conn.abort()
                return
            self.counters["connections_evicted"] += 1
            self.budget.note("connection_evicted", logging.WARNING,
                             "modbus: closed the idle connection from %s to make room for %s "
                             "(at the cap of %d connections %s)", victim.peer, conn.peer, cap,
                             what)
            victim.abort()
        self.conns[conn] = None
        self.counters["connections_accepted"] += 1

    def victim(self, scope: list[Connection]) -> Connection | None:
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

    def forget(self, conn: Connection) -> None:
        """Drop a closed connection."""
        self.conns.pop(conn, None)

    async def reap_idle(self) -> None:
        """Close connections idle for idle_timeout_s, and flush the log budget (forever)."""
        idle = self.config.idle_timeout_s
        period = min(0.5, idle / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self.conns):
                if conn.idle_for(now) > idle:
                    self.counters["connections_idle_closed"] += 1
                    self.budget.note("idle_closed", logging.INFO,
                                     "modbus: closing the connection from %s, idle for %.0f s",
                                     conn.peer, idle)
                    conn.close()
            self.budget.flush()
