"""The project's exception tree, in one place.

Expected outcomes (a refused write, a failed expectation) are values; these exceptions
are for input that cannot be used and for programming errors.
"""

from __future__ import annotations


class HeatrigError(Exception):
    """Base class of every error heatrig raises on purpose."""


class ConfigError(HeatrigError, ValueError):
    """A site file, scenario file or command-line value cannot be used.

    Each entry of ``problems`` is one self-contained line naming the file, line, field
    path and what is allowed (``FILE:LINE: field.path: what is allowed``), or the option
    and what it takes (``--modbus 'x': expected HOST:PORT``). A single string is one
    problem. It is a `ValueError` too, so validators and callers that expect one keep
    working.
    """

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ScenarioError(ConfigError):
    """A scenario file (or a file it includes, or the site it names) cannot be used."""


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


class ProtocolError(HeatrigError):
    """A Modbus or MQTT endpoint cannot be served (address taken, listener refused)."""


class RunError(HeatrigError):
    """A run cannot be started, read or reproduced; the message names the run and why."""


class RunStoreError(RunError):
    """A run directory has no usable run store, or the store cannot be written."""
