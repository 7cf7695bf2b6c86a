"""A live run that fails at any step of start-up releases everything it had opened.

Each case makes one step fail (its start function raises) after every earlier step has
really opened its resource: the run store, the InfluxDB forwarder (a real server), the
points file, the Modbus server, the embedded broker, the MQTT adapter, the observer and
the reference systems under test. Afterwards no thread, listening socket, child process
or open file of the run may be left, and the error names the step.
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


def _connectable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("step", list(STEPS))
def test_failed_start_releases_everything(step: str, influxdb: InfluxDB1, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    db = unique_name("startup")
    influxdb.create_database(db)
    modbus_port, broker_port = free_ports(2)
    owner, name = STEPS[step]
    seen: list[Snapshot] = []
    monkeypatch.setattr(owner, name, _failing(step, getattr(owner, name), seen))
    options = LiveOptions(out_dir=tmp_path / "run", speed=10, duration_s=60,
                          modbus=f"127.0.0.1:{modbus_port}", broker_port=broker_port,
                          status=False, controller="reference", leak_detector="reference",
                          influx=f"influx1://127.0.0.1:{influxdb.port}?db={db}")
    rig = LiveRig(load_site("reference-1mw"), options)
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
    deadline = time.monotonic() + SETTLE_S
    while (left := Snapshot.take().minus(before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left open after a failure at {step}: {left}"
    assert not _connectable(modbus_port) and not _connectable(broker_port)
