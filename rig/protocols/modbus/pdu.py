"""The request PDUs of the function codes served, each answered from an `Image`: bytes in,
bytes out, no I/O.

The Modbus Application Protocol Specification V1.1b3: 1, 2 (read coils / discrete inputs,
1-2000), 3, 4 (read holding / input registers, 1-125), 5 (write single coil: 0xFF00 or
0x0000), 6 (write single register), 15 (write multiple coils, 1-1968), 16 (write
multiple registers, 1-123), 22 (mask write register), 23 (read/write multiple registers,
read 1-125 / write 1-121; the write is done before the read, both parts are validated
first and an exception applies nothing). Checks in the specification's order: function
code served (else 01), PDU length, quantity and byte count (else 03), address range
(else 02), value (else 03). Other function codes answer 01; an unknown unit id answers
0B (gateway target failed to respond). A refused request raises `Refused` and changes
nothing; a request writing several points is accepted or refused as a whole.

Why these are the server's own rather than pymodbus 3.16's decoders: they take any FC5
value but 0 as ON, answer FC15 quantity 0 with 01, and FC23 writes before it checks the
read address.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

import numpy as np

from rig.protocols.modbus.exceptions import (
    GATEWAY_NO_RESPONSE,
    ILLEGAL_FUNCTION,
    ILLEGAL_VALUE,
    Refused,
)
from rig.protocols.modbus.image import Image
from rig.protocols.modbus.registers import FUNCTION_TABLES, Table

# Quantity limits per function code (ibid., section 6).
READ_LIMITS = {1: 2000, 2: 2000, 3: 125, 4: 125}
MAX_WRITE_COILS = 1968
MAX_WRITE_REGISTERS = 123
MAX_RW_READ = 125
MAX_RW_WRITE = 121

_RW = struct.Struct(">BHHHHB")
_HEAD = struct.Struct(">BHHB")
_FIXED = struct.Struct(">BHH")
_MASK = struct.Struct(">BHHH")


def respond(image: Image, unit: int, pdu: bytes) -> bytes:
    """The response PDU to a request PDU for ``unit``; raises Refused for an exception."""
    fc = pdu[0]
    if unit not in image.map.devices:
        raise Refused(GATEWAY_NO_RESPONSE, "unknown_unit", f"unit id {unit} not served")
    handler = HANDLERS.get(fc)
    if handler is None:
        raise Refused(ILLEGAL_FUNCTION, "illegal_function", f"function code {fc} not served")
    return handler(image, unit, pdu)


# FC1-4
def _read(image: Image, unit: int, pdu: bytes) -> bytes:
    if len(pdu) != 5:
        raise Refused(ILLEGAL_VALUE, "malformed_pdu", f"function {pdu[0]}: "
                      f"{len(pdu)}-byte PDU, 5 expected")
    fc, address, count = _FIXED.unpack(pdu)
    if not 1 <= count <= READ_LIMITS[fc]:
        raise Refused(ILLEGAL_VALUE, "bad_quantity", f"function {fc}: quantity "
                      f"{count}, 1..{READ_LIMITS[fc]} allowed")
    data = image.read(unit, FUNCTION_TABLES[fc], address, count)
    return bytes((fc, len(data))) + data


# FC5
def _write_coil(image: Image, unit: int, pdu: bytes) -> bytes:
    if len(pdu) != 5:
        raise Refused(ILLEGAL_VALUE, "malformed_pdu", f"function 5: {len(pdu)}-byte "
                      "PDU, 5 expected")
    _, address, value = _FIXED.unpack(pdu)
    if value not in (0xFF00, 0x0000):
        raise Refused(ILLEGAL_VALUE, "bad_coil_value", f"function 5: value "
                      f"{value:#06x}, 0xFF00 or 0x0000 allowed")
    image.commit(image.prepare(unit, Table.COILS, address, [value == 0xFF00]))
    return pdu


# FC6
def _write_register(image: Image, unit: int, pdu: bytes) -> bytes:
    if len(pdu) != 5:
        raise Refused(ILLEGAL_VALUE, "malformed_pdu", f"function 6: {len(pdu)}-byte "
                      "PDU, 5 expected")
    _, address, value = _FIXED.unpack(pdu)
    image.commit(image.prepare(unit, Table.HOLDING_REGISTERS, address, [value]))
    return pdu


def _multiple(pdu: bytes, most: int, per_item: float) -> tuple[int, int, bytes]:
    """(address, quantity, data) of FC15/16; checks quantity, byte count, length."""
    fc = pdu[0]
    if len(pdu) < 6:
        raise Refused(ILLEGAL_VALUE, "malformed_pdu", f"function {fc}: {len(pdu)}-byte "
                      "PDU, at least 6 expected")
    _, address, count, byte_count = _HEAD.unpack_from(pdu)
    if not 1 <= count <= most:
        raise Refused(ILLEGAL_VALUE, "bad_quantity", f"function {fc}: quantity "
                      f"{count}, 1..{most} allowed")
    want = math.ceil(count * per_item)
    if byte_count != want:
        raise Refused(ILLEGAL_VALUE, "bad_byte_count", f"function {fc}: byte count "
                      f"{byte_count} for quantity {count}, {want} expected")
    if len(pdu) != 6 + byte_count:
        raise Refused(ILLEGAL_VALUE, "malformed_pdu", f"function {fc}: {len(pdu) - 6} "
                      f"data bytes, byte count says {byte_count}")
    return address, count, pdu[6:]


# FC15
def _write_coils(image: Image, unit: int, pdu: bytes) -> bytes:
    address, count, data = _multiple(pdu, MAX_WRITE_COILS, 1 / 8)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    values = [bool(b) for b in bits[:count]]
    image.commit(image.prepare(unit, Table.COILS, address, values))
    return _FIXED.pack(15, address, count)


# FC16
def _write_registers(image: Image, unit: int, pdu: bytes) -> bytes:
    address, count, data = _multiple(pdu, MAX_WRITE_REGISTERS, 2)
    values = list(struct.unpack(f">{count}H", data))
    image.commit(image.prepare(unit, Table.HOLDING_REGISTERS, address, values))
    return _FIXED.pack(16, address, count)


# FC22
def _mask_write(image: Image, unit: int, pdu: bytes) -> bytes:
    if len(pdu) != 7:
        raise Refused(ILLEGAL_VALUE, "malformed_pdu", f"function 22: {len(pdu)}-byte "
                      "PDU, 7 expected")
    _, address, and_mask, or_mask = _MASK.unpack(pdu)
    table = Table.HOLDING_REGISTERS
    current = int.from_bytes(image.read(unit, table, address, 1, served=False), "big")
    value = (current & and_mask) | (or_mask & ~and_mask & 0xFFFF)
    image.commit(image.prepare(unit, table, address, [value]))
    return pdu


# FC23
def _read_write(image: Image, unit: int, pdu: bytes) -> bytes:
    if len(pdu) < 10:
        raise Refused(ILLEGAL_VALUE, "malformed_pdu", f"function 23: {len(pdu)}-byte "
                      "PDU, at least 10 expected")
    _, read_address, read_count, write_address, write_count, byte_count = \
        _RW.unpack_from(pdu)
    if not 1 <= read_count <= MAX_RW_READ:
        raise Refused(ILLEGAL_VALUE, "bad_quantity", f"function 23: read quantity "
                      f"{read_count}, 1..{MAX_RW_READ} allowed")
    if not 1 <= write_count <= MAX_RW_WRITE:
        raise Refused(ILLEGAL_VALUE, "bad_quantity", f"function 23: write quantity "
                      f"{write_count}, 1..{MAX_RW_WRITE} allowed")
    if byte_count != 2 * write_count:
        raise Refused(ILLEGAL_VALUE, "bad_byte_count", f"function 23: byte count "
                      f"{byte_count} for quantity {write_count}, {2 * write_count} "
                      "expected")
    if len(pdu) != 10 + byte_count:
        raise Refused(ILLEGAL_VALUE, "malformed_pdu", f"function 23: {len(pdu) - 10} "
                      f"data bytes, byte count says {byte_count}")
    table = Table.HOLDING_REGISTERS
    image.span(unit, table, read_address, read_count)  # both parts first
    writes = image.prepare(unit, table, write_address,
                           list(struct.unpack(f">{write_count}H", pdu[10:])))
    image.commit(writes)
    data = image.read(unit, table, read_address, read_count)
    return bytes((23, len(data))) + data


HANDLERS: dict[int, Callable[[Image, int, bytes], bytes]] = {
    1: _read, 2: _read, 3: _read, 4: _read, 5: _write_coil, 6: _write_register,
    15: _write_coils, 16: _write_registers, 22: _mask_write, 23: _read_write}
