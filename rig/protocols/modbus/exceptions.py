"""Modbus exception codes, the exception response raised while serving a request, and the
kinds of protocol error the server counts (`PROTOCOL_ERRORS`)."""

from __future__ import annotations

# Exception codes (Modbus Application Protocol V1.1b3, section 7).
ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
DEVICE_FAILURE = 0x04
DEVICE_BUSY = 0x06
GATEWAY_NO_RESPONSE = 0x0B

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


class Refused(Exception):
    """An exception response: ``code``, and the protocol error ``kind`` it counts as."""

    def __init__(self, code: int, kind: str | None = None, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.kind = kind
        self.detail = detail
