"""What the protocol adapters' faults share: the target (every device of an adapter, or
one device it serves), the active fault that covers it, and the ``delay`` parameter."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from twin.faults import FaultTargetError

K = TypeVar("K")  # how an adapter names what a fault covers (device name, unit id)


@dataclass(frozen=True, eq=False, slots=True)
class TargetedFault(Generic[K]):
    """One active protocol fault, ``kind@target``; ``covered`` None covers everything."""

    kind: str
    target: str
    covered: frozenset[K] | None

    def covers(self, key: K) -> bool:
        return self.covered is None or key in self.covered

    def __str__(self) -> str:
        return f"{self.kind}@{self.target}"


def fault_target(kind: str, target: str, *, everything: str, devices: Collection[str],
                 whole_only: str | None = None, what: str = "a device") -> str | None:
    """The device a fault of ``kind`` covers, or None when ``target`` is ``everything``.

    ``whole_only`` is the reason a kind only takes ``everything`` (None: any device may be
    targeted); ``what`` names the devices in the error. Raises FaultTargetError.
    """
    if target == everything:
        return None
    if whole_only is not None:
        raise FaultTargetError(f"{kind}: target must be {everything!r} ({whole_only}), "
                               f"not {target!r}")
    if target not in devices:
        raise FaultTargetError(
            f"{kind}: unknown target {target!r}; expected {everything!r} or {what} "
            f"({', '.join(sorted(devices))})")
    return target


def fault_delay(kind: str, params: Mapping[str, Any]) -> float:
    """The required ``delay`` parameter of a fault (s, a finite number > 0); ValueError."""
    if "delay" not in params:
        raise ValueError(f"{kind}: needs delay (s)")
    delay = params["delay"]
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not (
            math.isfinite(delay) and delay > 0):
        raise ValueError(f"{kind}: delay must be a number of seconds > 0, not {delay!r}")
    return float(delay)
