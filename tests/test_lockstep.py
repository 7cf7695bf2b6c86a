"""Lockstep bookkeeping: which writes and messages answer a served slice, what happens to
a system that falls silent, and that silence on the first slice stops the run."""

from __future__ import annotations

import asyncio
import json

import pytest

from rig.runtime.lockstep import Answer, Lockstep, LockstepStartError

ACK = "heatrig/s/sut/detector/ack"


def make(announced: list[tuple[int, float]], **kwargs: object) -> Lockstep:
    return Lockstep([Answer("ctl", heartbeat="*.heartbeat"), Answer("detector", mqtt=True)],
                    slice_s=0.01, announce=lambda n, t: announced.append((n, t)),
                    ack_topic=lambda name: f"heatrig/s/sut/{name}/ack", **kwargs)  # type: ignore[arg-type]


def test_answer_needs_exactly_one_way() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Answer("x")
    with pytest.raises(ValueError, match="exactly one"):
        Answer("x", heartbeat="*.heartbeat", mqtt=True)


def test_a_slice_is_answered_by_a_new_heartbeat_and_an_ack_of_that_step() -> None:
    async def scenario() -> None:
        announced: list[tuple[int, float]] = []
        lock = make(announced, timeout_s=5.0, first_timeout_s=5.0)
        lock.serve(0.0)
        assert announced == [(0, 0.0)]
        lock.on_modbus_write("cdu1.isolate", 1.0)  # not a heartbeat
        lock.on_modbus_write("cdu1.heartbeat", 1.0)
        assert lock.on_mqtt(ACK, json.dumps({"step": 0}).encode())
        await asyncio.wait_for(lock.wait(), 2.0)
        lock.serve(6.0)
        lock.on_modbus_write("hp1.heartbeat", 1.0)  # the tail of the last cycle: same count
        assert lock.on_mqtt(ACK, b'{"step": 0}')  # an old step does not answer this one
        waiter = asyncio.ensure_future(lock.wait())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        lock.on_modbus_write("cdu1.heartbeat", 2.0)
        lock.on_mqtt(ACK, b'{"step": 1}')
        await asyncio.wait_for(waiter, 2.0)
        assert lock.stats.slices == 2 and not lock.stats.lapses and not lock.silent

    asyncio.run(scenario())


def test_other_topics_are_not_acks_and_a_malformed_ack_is_consumed() -> None:
    lock = make([])
    assert not lock.on_mqtt("heatrig/s/sut/detector/alarm", b"{}")
    assert lock.on_mqtt(ACK, b"not json")


def test_a_silent_system_is_not_waited_for_and_its_slices_are_held_to_real_time() -> None:
    async def scenario() -> None:
        lock = make([], timeout_s=0.05, first_timeout_s=5.0)
        lock.serve(0.0)
        lock.on_modbus_write("cdu1.heartbeat", 1.0)
        lock.on_mqtt(ACK, b'{"step": 0}')
        await lock.wait()
        lock.serve(6.0)
        lock.on_modbus_write("cdu1.heartbeat", 2.0)  # the detector stays silent
        await lock.wait()
        assert lock.silent == {"detector"} and lock.stats.lapses == [(1, "detector")]
        lock.serve(12.0)  # only the controller is awaited now; the slice lasts >= slice_s
        lock.on_modbus_write("cdu1.heartbeat", 3.0)
        await lock.wait()
        assert lock.stats.paced_slices == 2
        lock.serve(18.0)
        lock.on_mqtt(ACK, b'{"step": 3}')  # it answers again: waited for again
        lock.on_modbus_write("cdu1.heartbeat", 4.0)
        await lock.wait()
        assert not lock.silent

    asyncio.run(scenario())


def test_silence_on_the_first_slice_is_a_start_up_failure() -> None:
    async def scenario() -> None:
        lock = make([], first_timeout_s=0.05)
        lock.serve(0.0)
        lock.on_modbus_write("cdu1.heartbeat", 1.0)
        await lock.wait()

    with pytest.raises(LockstepStartError, match="detector did not answer the first slice"):
        asyncio.run(scenario())


def test_an_exited_process_is_not_waited_for() -> None:
    async def scenario() -> None:
        lock = make([], first_timeout_s=5.0, alive=lambda name: name != "detector")
        lock.serve(0.0)
        lock.on_modbus_write("cdu1.heartbeat", 1.0)
        await asyncio.wait_for(lock.wait(), 1.0)
        assert not lock.stats.lapses

    asyncio.run(scenario())
