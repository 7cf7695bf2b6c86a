"""Shared pytest fixtures for heatrig's tests.

Sections (append new fixtures under a new heading at the end, keep each one short):

1. Real servers -- Mosquitto, InfluxDB 1.x, VictoriaMetrics from ``tests/servers.py``.
   Session-scoped ``mosquitto``, ``influxdb``, ``influxdb_auth``, ``victoria_metrics`` are
   shared: give your data unique names (``servers.unique_name()``) and never stop or kill
   them. Tests that crash or restart a server use the per-test ``fresh_*`` variants.
2. Health checks -- autouse: a test fails if it leaves non-daemon threads running.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from servers import (
    InfluxDB1,
    Mosquitto,
    ServerNotInstalledError,
    ServerProcess,
    VictoriaMetrics,
)

# --------------------------------------------------------------------------- 1. real servers

S = TypeVar("S", bound=ServerProcess)


def _serve(factory: Callable[[], S]) -> Iterator[S]:
    """Create, start, yield and finally close one server; fail clearly if not installed."""
    try:
        server = factory()
    except ServerNotInstalledError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    """Shared Mosquitto broker (anonymous, no persistence) on a free loopback port."""
    yield from _serve(Mosquitto)


@pytest.fixture(scope="session")
def influxdb() -> Iterator[InfluxDB1]:
    """Shared InfluxDB 1.x without auth; create your own database per test."""
    yield from _serve(InfluxDB1)


@pytest.fixture(scope="session")
def influxdb_auth() -> Iterator[InfluxDB1]:
    """Shared InfluxDB 1.x with auth enabled; admin is ``.username``/``.password``."""
    yield from _serve(lambda: InfluxDB1(auth=True))


@pytest.fixture(scope="session")
def victoria_metrics() -> Iterator[VictoriaMetrics]:
    """Shared VictoriaMetrics (100y retention); filter exports by your own metric names."""
    yield from _serve(VictoriaMetrics)


@pytest.fixture
def fresh_mosquitto() -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own, free to kill() and start() again."""
    yield from _serve(Mosquitto)


@pytest.fixture
def fresh_influxdb() -> Iterator[InfluxDB1]:
    """An InfluxDB 1.x of this test's own, free to kill() and start() again (same port/data)."""
    yield from _serve(InfluxDB1)


@pytest.fixture
def fresh_victoria_metrics() -> Iterator[VictoriaMetrics]:
    """A VictoriaMetrics of this test's own, free to kill() and start() again."""
    yield from _serve(VictoriaMetrics)


# --------------------------------------------------------------------------- 2. health checks

THREAD_LEAK_GRACE_S = 2.0


@pytest.fixture(autouse=True)
def system_health_check() -> Iterator[None]:
    """Fail a test that leaves new non-daemon threads alive (after a short grace period).

    Autouse fixtures are set up first and torn down last, so threads owned by the test's
    other fixtures have been stopped by the time this runs.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_LEAK_GRACE_S
    while True:
        leaked = [
            t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon
        ]
        if not leaked or time.monotonic() >= deadline:
            break
        leaked[0].join(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
    if leaked:
        names = ", ".join(sorted(t.name for t in leaked))
        pytest.fail(
            f"test leaked {len(leaked)} non-daemon thread(s) still running after "
            f"{THREAD_LEAK_GRACE_S:.0f}s: {names}",
            pytrace=False,
        )
