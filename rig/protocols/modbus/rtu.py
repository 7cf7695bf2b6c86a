"""Modbus RTU over a serial line, serving the same `ModbusServer` (map, image, writes,
faults) as Modbus TCP.

The request handling is the TCP server's own (`pdu.respond` on the server's `Image`); only
the framing differs: a frame ends after a silent interval of 3.5 character times (1.75 ms
above 19200 baud, as the specification allows), carries the unit id first and a CRC-16
last. A frame with a bad CRC or shorter than 4 bytes is dropped unanswered (counted as
``bad_crc``). Unit 0 (broadcast) is served without an answer. A unit the map does not
serve, and a unit a protocol fault takes offline (``modbus_disconnect``, or
``modbus_exception`` with code 0x0B, which TCP answers as a gateway), answer nothing.

Why not pymodbus' serial server: it decodes requests with its own PDU classes and
datastore, which differ from `pdu` (see there); sharing the request handling needs the
raw PDU, so the framing is done here on the pyserial file descriptor, read on the live
loop (no thread, no lock).
"""

from __future__ import annotations

import asyncio
import logging

import serial

from rig.protocols.modbus import pdu as pdus
from rig.protocols.modbus.exceptions import DEVICE_FAILURE, GATEWAY_NO_RESPONSE, Refused
from rig.protocols.modbus.server import ModbusServer
from twin.errors import ProtocolError

log = logging.getLogger(__name__)

PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
MAX_FRAME = 256  # bytes (unit id + PDU of at most 253 + CRC)


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(frame: bytes) -> bytes:
    """``frame`` followed by its CRC (low byte first)."""
    return frame + crc16(frame).to_bytes(2, "little")


def silent_interval(baud: int, bits_per_char: int = 11) -> float:
    """3.5 character times (s), at least 1.75 ms (the fixed value above 19200 baud)."""
    return max(3.5 * bits_per_char / baud, 0.00175)


class RtuServer:
    """Serves ``server``'s map on a serial ``device`` (a tty or a pseudo-terminal)."""

    def __init__(self, server: ModbusServer, device: str, *, baud: int = 19200,
                 parity: str = "N", stopbits: int = 1) -> None:
        if parity not in PARITIES:
            raise ValueError(f"parity must be N, E or O, not {parity!r}")
        if stopbits not in (1, 2):
            raise ValueError(f"stop bits must be 1 or 2, not {stopbits!r}")
        self.server = server
        self.device, self.baud, self.parity, self.stopbits = device, baud, parity, stopbits
        self.gap = silent_interval(baud, 1 + 8 + (parity != "N") + stopbits)
        self.bad_frames = 0
        self.requests = 0
        self._port: serial.Serial | None = None
        self._buf = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Open the serial line and read it on the running loop; ProtocolError if it
        cannot be opened."""
        try:
            self._port = serial.Serial(self.device, self.baud, bytesize=8,
                                       parity=PARITIES[self.parity], stopbits=self.stopbits,
                                       timeout=0)
        except (serial.SerialException, OSError) as exc:
            raise ProtocolError(f"modbus rtu: cannot open {self.device}: {exc}") from exc
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._port.fileno(), self._readable)
        log.info("modbus rtu: serving %s at %d baud, parity %s, %d stop bit(s)",
                 self.device, self.baud, self.parity, self.stopbits)

    async def stop(self) -> None:
        """Stop reading and close the line."""
        if self._timer is not None:
            self._timer.cancel()
        if self._port is not None and self._loop is not None:
            self._loop.remove_reader(self._port.fileno())
            self._port.close()
            self._port = None

    def _readable(self) -> None:
        assert self._port is not None and self._loop is not None
        try:
            data = self._port.read(4096)
        except serial.SerialException:
            return
        self._buf += data
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self.gap, self._frame_end)

    def _frame_end(self) -> None:
        frame, self._buf = bytes(self._buf), bytearray()
        self._timer = None
        if not 4 <= len(frame) <= MAX_FRAME or crc16(frame[:-2]) != int.from_bytes(
                frame[-2:], "little"):
            self.bad_frames += 1
            self.server.protocol_errors["bad_crc"] += 1
            return
        self.requests += 1
        self.server.requests += 1
        unit, pdu = frame[0], frame[1:-2]
        faults = self.server._faults  # the TCP server's active faults apply here too
        if unit != 0 and (unit not in self.server.map.devices
                          or faults.covering("modbus_disconnect")
                          or faults.exception(unit) == GATEWAY_NO_RESPONSE):
            return  # offline: a serial device that is not there answers nothing
        delay = faults.delay(unit) if faults else 0.0
        if delay > 0 and self._loop is not None:
            self._loop.call_later(delay, self._answer, unit, pdu)
        else:
            self._answer(unit, pdu)

    def _answer(self, unit: int, pdu: bytes) -> None:
        code = self.server.fault_exception(unit) if unit else None
        if code is not None:
            response = bytes((pdu[0] | 0x80, code))
        else:
            try:
                response = pdus.respond(self.server.image, unit or self._any_unit(), pdu)
            except Refused as refused:
                if refused.kind is not None:
                    self.server.protocol_errors[refused.kind] += 1
                response = bytes((pdu[0] | 0x80, refused.code))
            except Exception as exc:  # a defect must not stop the line
                log.error("modbus rtu: unit %d function %d failed (%s)", unit, pdu[0], exc)
                response = bytes((pdu[0] | 0x80, DEVICE_FAILURE))
        if response[0] & 0x80:
            self.server.exceptions[response[1]] += 1
        if unit == 0 or self._port is None:
            return  # broadcast: never answered
        self._port.write(with_crc(bytes((unit,)) + response))

    def _any_unit(self) -> int:
        return next(iter(self.server.map.devices))
