"""The Modbus server's parts on their own, without sockets: the PDU handlers against a
register image, the active fault set, the log budget, and the fault target shared with
the MQTT adapter."""

from __future__ import annotations

import logging
import struct

import pytest

from rig.protocols.faulttargets import fault_target
from rig.protocols.modbus import pdu
from rig.protocols.modbus.exceptions import ILLEGAL_ADDRESS, ILLEGAL_VALUE, Refused
from rig.protocols.modbus.faults import ALL_UNITS, Faults
from rig.protocols.modbus.image import Image
from rig.protocols.modbus.logbudget import LogBudget
from rig.protocols.modbus.registers import Entry, ModbusMap, Table
from twin.faults import FaultTargetError
from twin.plant import Twin
from twin.site import Site


def make_image() -> tuple[Twin, Image]:
    tw = Twin(Site(name="reference-1mw"), seed=1)
    image = Image(ModbusMap.for_twin(tw), queue_bound=8)
    image.refresh(tw.measured_values(), tw.now)
    return tw, image


def writable_register(image: Image) -> Entry:
    return next(e for e in image.map if e.writable and e.table is Table.HOLDING_REGISTERS)


def test_a_read_answers_the_snapshot_of_its_unit() -> None:
    tw, image = make_image()
    entry = next(e for e in image.map if e.table is Table.INPUT_REGISTERS)
    expected = image.map.encode_unit(tw.measured_values(), entry.unit_id)[entry.table]
    request = struct.pack(">BHH", 4, entry.address, entry.count)
    answer = pdu.respond(image, entry.unit_id, request)
    assert answer[:2] == bytes((4, 2 * entry.count))
    words = list(struct.unpack(f">{entry.count}H", answer[2:]))
    assert words == [int(w) for w in expected[entry.address:entry.address + entry.count]]


def test_a_write_is_queued_and_reads_back_until_the_next_refresh() -> None:
    tw, image = make_image()
    entry = writable_register(image)
    before = pdu.respond(image, entry.unit_id, struct.pack(">BHH", 3, entry.address,
                                                           entry.count))[2:]
    words = entry.encode(entry.point.hi)
    if struct.pack(f">{len(words)}H", *words) == before:  # already there: write lo
        words = entry.encode(entry.point.lo)
    request = struct.pack(f">BHHB{len(words)}H", 16, entry.address, len(words),
                          2 * len(words), *words)
    assert pdu.respond(image, entry.unit_id, request) == struct.pack(
        ">BHH", 16, entry.address, len(words))
    assert [w.point for w in image.pending] == [entry.point.id]
    read = pdu.respond(image, entry.unit_id, struct.pack(">BHH", 3, entry.address,
                                                         len(words)))
    assert list(struct.unpack(f">{len(words)}H", read[2:])) == words
    image.refresh(tw.measured_values(), tw.now)  # still pending: still visible
    read = pdu.respond(image, entry.unit_id, struct.pack(">BHH", 3, entry.address,
                                                         len(words)))
    assert list(struct.unpack(f">{len(words)}H", read[2:])) == words


def test_fc23_with_a_bad_read_address_writes_nothing() -> None:
    _, image = make_image()
    entry = writable_register(image)
    words = entry.encode(entry.point.lo)
    size = image.map.size(entry.unit_id, Table.HOLDING_REGISTERS)
    request = struct.pack(f">BHHHHB{len(words)}H", 23, size, 1, entry.address, len(words),
                          2 * len(words), *words)
    with pytest.raises(Refused) as refused:
        pdu.respond(image, entry.unit_id, request)
    assert refused.value.code == ILLEGAL_ADDRESS
    assert not image.pending


def test_quantity_checks_come_before_the_address() -> None:
    _, image = make_image()
    unit = next(iter(image.map.devices))
    with pytest.raises(Refused) as refused:
        pdu.respond(image, unit, struct.pack(">BHH", 3, 65000, 126))
    assert (refused.value.code, refused.value.kind) == (ILLEGAL_VALUE, "bad_quantity")


def test_fault_set_overlaps_and_clears() -> None:
    faults = Faults({"cdu1": 3, "cdu2": 4})
    slow = faults.add("modbus_latency", ALL_UNITS, {"delay": 0.2})
    slower = faults.add("modbus_latency", "cdu1", {"delay": 0.5})
    faults.add("modbus_exception", ALL_UNITS, {})
    last = faults.add("modbus_exception", "cdu2", {"code": 4})
    faults.add("modbus_frozen", "cdu2", {})
    assert (faults.delay(3), faults.delay(4)) == (0.5, 0.2)
    assert (faults.exception(3), faults.exception(4)) == (6, 4)
    assert faults.frozen(frozenset({3, 4})) == {4}
    assert faults.remove(slower) and not faults.remove(slower)
    assert faults.remove(last)
    assert (faults.delay(3), faults.exception(4)) == (0.2, 6)
    assert faults.remove(slow) and faults.delay(3) == 0.0
    with pytest.raises(ValueError, match="delay"):
        faults.add("modbus_latency", ALL_UNITS, {})
    with pytest.raises(FaultTargetError, match="not per unit"):
        faults.add("modbus_disconnect", "cdu1", {})


def test_fault_target_is_everything_one_device_or_an_error() -> None:
    devices = ("b", "a")
    assert fault_target("k", "all", everything="all", devices=devices) is None
    assert fault_target("k", "a", everything="all", devices=devices) == "a"
    with pytest.raises(FaultTargetError, match=r"^k: unknown target 'c'; expected 'all' or "
                       r"a device \(a, b\)$"):
        fault_target("k", "c", everything="all", devices=devices)
    with pytest.raises(FaultTargetError, match=r"^k: target must be 'all' \(shared\), not "
                       r"'a'$"):
        fault_target("k", "a", everything="all", devices=devices, whole_only="shared")
    assert fault_target("k", "all", everything="all", devices=devices,
                        whole_only="shared") is None


def test_log_budget_holds_repeats_and_flushes_their_count(
        caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.logbudget")
    budget = LogBudget(logger, period=3600.0)
    with caplog.at_level(logging.INFO, logger="test.logbudget"):
        for n in range(5):
            budget.note("bad", logging.WARNING, "bad frame %d", n)
        budget.flush()  # the period is not over: nothing yet
        assert [r.getMessage() for r in caplog.records] == ["bad frame 0"]
        budget.flush(force=True)
    assert len(caplog.records) == 2
    assert caplog.records[1].getMessage().startswith("modbus: 4 more bad in the last")
    assert caplog.records[1].getMessage().endswith(", 5 in all")
