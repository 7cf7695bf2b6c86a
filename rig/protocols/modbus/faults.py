"""Protocol faults of the Modbus server (`rig.assess.faults`) and the set of active ones.

``target`` is ``modbus`` (every unit id, also unknown ones) or a device name (its unit id):

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
the faults covering a unit apply.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rig.protocols.faulttargets import TargetedFault, fault_delay, fault_target
from rig.protocols.modbus.exceptions import DEVICE_BUSY
from twin.faults import FaultTargetError

FAULT_KINDS = ("modbus_exception", "modbus_latency", "modbus_disconnect", "modbus_frozen")
ALL_UNITS = "modbus"  # the fault target meaning every unit id


@dataclass(frozen=True, eq=False, slots=True)
class Fault(TargetedFault[int]):
    """One active protocol fault; ``covered`` (unit ids) None covers every unit id."""

    code: int = 0
    delay: float = 0.0


class Faults:
    """The active faults, in the order they were injected; ``unit_ids`` maps the device
    names a fault may target to their unit ids."""

    def __init__(self, unit_ids: Mapping[str, int]) -> None:
        self.unit_ids = unit_ids
        self.active: tuple[Fault, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.active)

    def __iter__(self) -> Iterator[Fault]:
        return iter(self.active)

    def add(self, kind: str, target: str, params: dict[str, Any]) -> Fault:
        """A new active fault; FaultTargetError for its kind or target, ValueError for
        its parameters."""
        if kind not in FAULT_KINDS:
            raise FaultTargetError(f"modbus: unknown fault kind {kind!r}; the Modbus server "
                                   f"takes {', '.join(FAULT_KINDS)}")
        fault = Fault(kind, target, self._units(kind, target), **fault_params(kind, params))
        self.active = (*self.active, fault)
        return fault

    def remove(self, fault: Fault) -> bool:
        """Clear ``fault``; False if it was cleared already."""
        if fault not in self.active:
            return False
        self.active = tuple(f for f in self.active if f is not fault)
        return True

    def covering(self, kind: str, unit_id: int | None = None) -> bool:
        """True while a fault of ``kind`` covers ``unit_id`` (None: any unit)."""
        return any(f.kind == kind and (unit_id is None or f.covers(unit_id))
                   for f in self.active)

    def delay(self, unit_id: int) -> float:
        """Injected latency of a unit's responses (s; 0 without a modbus_latency fault)."""
        return max((f.delay for f in self.active
                    if f.kind == "modbus_latency" and f.covers(unit_id)), default=0.0)

    def exception(self, unit_id: int) -> int | None:
        """Exception code every request to a unit answers now, or None."""
        for fault in reversed(self.active):
            if fault.kind == "modbus_exception" and fault.covers(unit_id):
                return fault.code
        return None

    def frozen(self, every_unit: frozenset[int]) -> frozenset[int]:
        """The units a modbus_frozen fault covers (``every_unit`` for target modbus)."""
        frozen: set[int] = set()
        for fault in self.active:
            if fault.kind == "modbus_frozen":
                frozen |= fault.covered if fault.covered is not None else every_unit
        return frozenset(frozen)

    def _units(self, kind: str, target: str) -> frozenset[int] | None:
        whole_only = "connections are not per unit" if kind == "modbus_disconnect" else None
        device = fault_target(kind, target, everything=ALL_UNITS, devices=self.unit_ids,
                              whole_only=whole_only, what="a device served over Modbus")
        return None if device is None else frozenset({self.unit_ids[device]})


def fault_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
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
        return {"delay": fault_delay(kind, params)}
    return {}
