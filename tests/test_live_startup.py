"""A live run that fails at any step of start-up releases everything it had opened.

Each case makes one step fail (its start function raises) after every earlier step has
really opened its resource: the run store, the InfluxDB forwarder (a real server), the
points file, the Modbus server, the embedded broker, the MQTT adapter, the observer and
the reference systems under test. Afterwards no thread, listening socket, child process
or open file of the run may be left, and the error names the step. A run that ends
normally releases everything too.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from servers import InfluxDB1, free_ports, unique_name

from rig.config.sites import load_site
from rig.runtime import services
from rig.runtime.live import LiveOptions, LiveRig
from rig.runtime.services import StartupError
from rig.runtime.suts import Suts

SETTLE_S = 5.0  # for threads and processes to be reaped after a failed start


@dataclass(frozen=True)
class Snapshot:
    """What this process holds open."""

    threads: frozenset[threading.Thread]
    listening: frozenset[tuple[str, int]]
    children: frozenset[int]
    files: frozenset[str]

    @classmethod
    def take(cls) -> Snapshot:
        proc = psutil.Process()
        return cls(
            threads=frozenset(t for t in threading.enumerate() if t.is_alive()),
            listening=frozenset((c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet")
                                if c.status == psutil.CONN_LISTEN),
            children=frozenset(p.pid for p in proc.children(recursive=True)
                               if p.status() != psutil.STATUS_ZOMBIE),
            files=frozenset(f.path for f in proc.open_files()))

    def minus(self, other: Snapshot) -> dict[str, Any]:
        """What this snapshot holds that ``other`` does not (empty entries left out)."""
        diff = {"threads": sorted(t.name for t in self.threads - other.threads),
                "listening": sorted(self.listening - other.listening),
                "children": sorted(self.children - other.children),
                "files": sorted(self.files - other.files)}
        return {k: v for k, v in diff.items() if v}


# step -> (object, attribute) of its start function
STEPS: dict[str, tuple[Any, str]] = {
    "store": (services, "open_store"),
    "forwarder": (services, "start_forwarder"),
    "points.json": (services, "write_point_list"),
    "modbus": (services, "start_modbus"),
    "broker": (services, "start_broker"),
    "mqtt adapter": (services, "start_mqtt"),
    "observer": (services, "start_observer"),
    "sut controller": (Suts, "spawn"),
    "sut leak_detector": (Suts, "spawn"),
}


def _failing(step: str, real: Callable[..., Any], seen: list[Snapshot]) -> Callable[..., Any]:
    """``real`` made to record what is open, then raise, when it starts ``step``."""
    sut = step.removeprefix("sut ") if step.startswith("sut ") else None

    def fail() -> None:
        seen.append(Snapshot.take())
        raise RuntimeError("injected failure")

    if sut is not None:
        def spawn(self: Suts, name: str, args: list[str]) -> Any:
            if name == sut:
                fail()
            return real(self, name, args)
        return spawn
    if inspect.iscoroutinefunction(real):
        async def fail_async(*args: Any, **kwargs: Any) -> Any:
            fail()
        return fail_async
    return lambda *args, **kwargs: fail()


def _options(tmp_path: Path, influxdb: InfluxDB1, modbus_port: int,
             broker_port: int) -> LiveOptions:
    db = unique_name("startup")
    influxdb.create_database(db)
    return LiveOptions(out_dir=tmp_path / "run", speed=10, duration_s=5,
                       modbus=f"127.0.0.1:{modbus_port}", broker_port=broker_port,
                       status=False, controller="reference", leak_detector="reference",
                       influx=f"influx1://127.0.0.1:{influxdb.port}?db={db}")


def _left_open(before: Snapshot) -> dict[str, Any]:
    deadline = time.monotonic() + SETTLE_S
    while (left := Snapshot.take().minus(before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _connectable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("step", list(STEPS))
def test_failed_start_releases_everything(step: str, influxdb: InfluxDB1, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    modbus_port, broker_port = free_ports(2)
    owner, name = STEPS[step]
    seen: list[Snapshot] = []
    monkeypatch.setattr(owner, name, _failing(step, getattr(owner, name), seen))
    rig = LiveRig(load_site("reference-1mw"),
                  _options(tmp_path, influxdb, modbus_port, broker_port))
    before = Snapshot.take()

    with pytest.raises(StartupError) as info:
        asyncio.run(rig.run())

    assert info.value.step == step
    assert f"({step})" in str(info.value) and "injected failure" in str(info.value)
    assert len(seen) == 1, "the step did not run"
    opened = seen[0].minus(before)
    if step != "store":  # every later step fails with something open: the check has teeth
        assert opened.get("files"), opened
    if step in ("broker", "mqtt adapter", "observer") or step.startswith("sut"):
        assert ("127.0.0.1", modbus_port) in opened.get("listening", []), opened
    if step == "sut leak_detector":
        assert opened.get("children"), opened  # the controller was running
    left = _left_open(before)
    assert not left, f"left open after a failure at {step}: {left}"
    assert not _connectable(modbus_port) and not _connectable(broker_port)


def test_a_run_that_ends_releases_everything(influxdb: InfluxDB1, tmp_path: Path) -> None:
    modbus_port, broker_port = free_ports(2)
    rig = LiveRig(load_site("reference-1mw"),
                  _options(tmp_path, influxdb, modbus_port, broker_port))
    before = Snapshot.take()
    summary = asyncio.run(rig.run())
    assert summary.live is not None and summary.live.export is not None
    assert summary.live.export.error is None and summary.live.export.stats
    assert summary.duration_s == 5
    assert set(rig.suts.procs) == {"controller", "leak_detector"}
    assert all(p.returncode is not None for p in rig.suts.procs.values())
    left = _left_open(before)
    assert not left, f"left open after the run: {left}"
    assert not _connectable(modbus_port) and not _connectable(broker_port)
