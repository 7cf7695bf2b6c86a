"""The project's exception tree, in one place.

Expected outcomes (a refused write, a failed expectation) are values; these exceptions
are for input that cannot be used and for programming errors.
"""

from __future__ import annotations


class HeatrigError(Exception):
    """Base class of every error heatrig raises on purpose."""


class ConfigError(HeatrigError):
    """A site or scenario description is invalid.

    Each entry of ``problems`` is one human-readable line naming the file, line, field
    path and what is allowed.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class UnitError(HeatrigError, ValueError):
    """A quantity string could not be parsed into the expected dimension."""


class PointError(HeatrigError, KeyError):
    """A point id is unknown."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown point"


class WriteRefused(HeatrigError, ValueError):
    """A write to a point was refused; nothing changed.

    ``code`` follows Modbus: 2 = no such writable point (illegal data address),
    3 = value not acceptable (illegal data value).
    """

    ILLEGAL_ADDRESS = 2
    ILLEGAL_VALUE = 3

    def __init__(self, point_id: str, reason: str, code: int) -> None:
        self.point_id = point_id
        self.reason = reason
        self.code = code
        super().__init__(f"{point_id}: {reason}")


class RefrigerantError(HeatrigError, ValueError):
    """A refrigerant cycle was asked for outside its operating envelope or fluid range."""


class ServiceError(HeatrigError):
    """An external service (broker, database) cannot be used; the message says why."""


class RunStoreError(HeatrigError):
    """A run directory has no usable run store, or the store cannot be written."""
