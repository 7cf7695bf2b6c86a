"""Client-supplied text made safe to log: one place, used by every protocol adapter.

A topic, a point id or a payload excerpt comes from whoever is on the wire. Logged as is,
a newline in it starts a new line that looks like the rig's own (a forged log line), and
escape sequences can rewrite a terminal. ``safe_for_log`` escapes every control and
line-separator character ``repr``-style (``\\n``, ``\\x1b``, ``\\u2028``) and shortens
the text; printable characters, non-ASCII letters included, stay as they are.
"""

from __future__ import annotations

import logging
import unicodedata

DEFAULT_LIMIT = 200  # characters kept of one client-supplied string
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    short = _SHORT.get(ch)
    if short is not None:
        return short
    if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
            else f"\\U{code:08x}"
    return ch


def safe_for_log(value: str | bytes | bytearray | object, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` as one printable line of at most about ``limit`` characters.

    Bytes are decoded as UTF-8 (undecodable bytes shown as ``\\xNN``); other objects are
    logged through ``str()``. Text longer than ``limit`` is cut and ends in ``...``.
    """
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value[: 4 * limit]).decode("utf-8", errors="backslashreplace")
    else:
        text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    text = text[:limit]
    out = text if text.isprintable() else "".join(_escape_char(ch) for ch in text)
    return out + "..." if cut else out


THIRD_PARTY_LIMIT = 2000  # characters kept of one line of a library's log


class EscapingFilter(logging.Filter):
    """Escapes a record's message for the libraries (paho, amqtt) that log topics as is.

    Attach it to each logger whose call sites are not the rig's own; the rig's own calls
    pass client-supplied strings through ``safe_for_log`` instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isprintable():
            record.msg = safe_for_log(message, THIRD_PARTY_LIMIT)
            record.args = None
        return True


ESCAPING_FILTER = EscapingFilter()


def escape_library_logs(prefix: str) -> None:
    """Attach ``ESCAPING_FILTER`` to the logger ``prefix`` and every existing one below it
    (a logger's filters do not apply to records of its children)."""
    names = [prefix] + [n for n in logging.root.manager.loggerDict if n.startswith(prefix + ".")]
    for name in names:
        logger = logging.getLogger(name)
        if ESCAPING_FILTER not in logger.filters:
            logger.addFilter(ESCAPING_FILTER)
