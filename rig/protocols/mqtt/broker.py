"""Embedded MQTT broker (amqtt) for runs on a machine with no broker installed.

`EmbeddedBroker` runs the broker in a child process of its own (``python -m
rig.protocols.mqtt.broker``), so it has a core and an interpreter lock of its own: run
in a thread of the rig's process it shared the GIL with the simulation loop and paho's
threads, and on a busy machine it stalled for seconds at 60x (outbound messages
dropped, a leak alarm seen two simulated minutes late) where the same broker in its own
process kept up (measured with `scenarios/cdu-leak.yaml` beside two CPU-bound
processes). It listens on 127.0.0.1 only and allows anonymous clients, which is
acceptable on loopback. The child stops when the rig closes its stdin or dies.

    broker = EmbeddedBroker()          # port 0 = a free port, read back after start
    url = broker.start()               # "mqtt://127.0.0.1:<port>"
    ...
    broker.stop()

`BrokerThread` is the broker itself on an asyncio loop in a daemon thread; the child
process runs one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import selectors
import signal
import subprocess
import sys
import threading
from typing import Any

from rig.protocols.logsafe import escape_library_logs
from twin.errors import ConfigError, ServiceError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def broker_config(port: int) -> dict[str, Any]:
    """amqtt configuration: one TCP listener on loopback, anonymous clients, no extra plugins.

    The default packet/event logging and ``$SYS`` plugins are left out: they cost time on
    every message and nothing here needs them.
    """
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{LOOPBACK}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


def _own_filters_broker() -> type:
    """amqtt's ``Broker`` that sends a retained message only for the session's own filters.

    amqtt 0.12.1, on every CONNECT, replays retained messages for *every* filter any client
    of the broker has subscribed to (it loops over ``Broker._subscriptions``, not over the
    connecting session's), so a client subscribing to ``foo/bar`` still received
    ``<prefix>/<site>/status``, and a matching client got it twice (on CONNECT and on
    SUBSCRIBE). MQTT 3.1.1 (3.3.1.3) sends retained messages when a subscription is made.
    Both replays go through ``_publish_retained_messages_for_subscription``; this override
    skips it unless ``session`` itself holds that filter. On SUBSCRIBE it does (it was just
    added), so that delivery stays; on CONNECT a clean session holds none, and a resumed one
    gets its own filters only.
    """
    from amqtt.broker import Broker  # imported here: amqtt is heavy and optional at runtime

    class OwnFiltersBroker(Broker):  # amqtt has no types: Broker is Any to mypy
        async def _publish_retained_messages_for_subscription(
                self, subscription: tuple[str, int], session: Any) -> None:
            holders = self._subscriptions.get(subscription[0], ())
            if any(s.client_id == session.client_id for s, _ in holders):
                await super()._publish_retained_messages_for_subscription(subscription,
                                                                           session)

    return OwnFiltersBroker


def checked_port(port: int) -> int:
    """``port`` if it is one a broker can listen on (0 = any free port); else ConfigError."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"embedded broker port {port} outside 0..65535")
    return port


class BrokerThread:
    """amqtt broker on 127.0.0.1 in a daemon thread with its own event loop.

    ``port`` 0 picks a free port; after ``start()`` the chosen one is in ``.port`` and
    ``.url``. ``stop()`` shuts the broker down and joins the thread; it is idempotent.
    """

    def __init__(self, port: int = 0) -> None:
        self.host, self.port, self.url = LOOPBACK, checked_port(port), ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    @property
    def running(self) -> bool:
        """True between a successful ``start()`` and ``stop()``."""
        return self._thread is not None and self._thread.is_alive() and self._ready.is_set()

    def start(self) -> str:
        """Start the broker and return its URL ``mqtt://127.0.0.1:<port>``.

        Raises ServiceError when it cannot listen (port taken) or does not start in time.
        """
        if self._thread is not None:
            raise RuntimeError("embedded broker already started")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._main, name="heatrig-mqtt-broker",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) and self._error is None:
            self.stop()
            raise ServiceError(f"embedded MQTT broker did not start in {START_TIMEOUT_S:g} s")
        if self._error is not None:
            error = self._error
            self._thread.join(STOP_TIMEOUT_S)
            self._thread = None
            raise ServiceError(f"embedded MQTT broker on {self.host}:{self.port} cannot "
                               f"start: {error} (another broker there? use it with --mqtt "
                               f"mqtt://{self.host}:{self.port}, or --broker-port 0)") from error
        self.url = f"mqtt://{self.host}:{self.port}"
        log.info("embedded MQTT broker listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        """Shut the broker down (clients are disconnected) and join its thread."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._stop_event_set)
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            log.warning("embedded MQTT broker thread did not stop in %g s", STOP_TIMEOUT_S)
        self._thread = None
        log.info("embedded MQTT broker on %s stopped", self.url or f"port {self.port}")

    # -- broker thread ------------------------------------------------------------------

    def _stop_event_set(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(), or logged once running
            if not self._ready.is_set():
                self._error = exc
            else:
                log.exception("embedded MQTT broker failed")
        finally:
            self._ready.set()  # wake start() whatever happened
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._loop = None

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        broker = _own_filters_broker()(broker_config(self.port))
        await broker.start()
        escape_library_logs("amqtt")  # amqtt logs topics and payloads as they came
        self._broker = broker
        server = broker._servers["default"].instance  # amqtt keeps the asyncio.Server there
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await broker.shutdown()
            self._broker = None


class EmbeddedBroker:
    """The embedded broker in a child process; same life cycle as `BrokerThread`.

    ``port`` 0 picks a free port; after ``start()`` the chosen one is in ``.port`` and
    ``.url``. ``stop()`` ends the child and waits for it; it is idempotent.
    """

    def __init__(self, port: int = 0) -> None:
        self.host, self.port, self.url = LOOPBACK, checked_port(port), ""
        self._proc: subprocess.Popen[str] | None = None

    @property
    def running(self) -> bool:
        """True between a successful ``start()`` and ``stop()`` while the child lives."""
        return self._proc is not None and self._proc.poll() is None and bool(self.url)

    def start(self) -> str:
        """Start the broker and return its URL ``mqtt://127.0.0.1:<port>``.

        Raises ServiceError when it cannot listen (port taken) or does not start in time.
        """
        if self._proc is not None:
            raise RuntimeError("embedded broker already started")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "rig.protocols.mqtt.broker", "--port", str(self.port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = _first_line(self._proc, START_TIMEOUT_S)
        if line.startswith(READY):
            self.port = int(line.split()[1])
            self.url = f"mqtt://{self.host}:{self.port}"
            log.info("embedded MQTT broker listening on %s (pid %d)", self.url, self._proc.pid)
            return self.url
        self.stop()
        if not line:
            raise ServiceError(f"embedded MQTT broker did not start in {START_TIMEOUT_S:g} s")
        raise ServiceError(line.removeprefix(FAILED).strip())

    def stop(self) -> None:
        """End the child process (clients are disconnected) and wait for it."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the child's signal to shut down cleanly
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("embedded MQTT broker did not stop in %g s; killing it", STOP_TIMEOUT_S)
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        log.info("embedded MQTT broker on %s stopped", self.url or f"port {self.port}")

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


READY = "ready"
FAILED = "failed"


def _first_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The child's first line of output, or "" when it says nothing in ``timeout_s``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return ""
    return proc.stdout.readline().strip()


def main(argv: list[str] | None = None) -> int:
    """Child process: run a `BrokerThread` until stdin closes; report readiness on stdout."""
    parser = argparse.ArgumentParser(prog="python -m rig.protocols.mqtt.broker")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    broker = BrokerThread(args.port)
    try:
        broker.start()
    except (ServiceError, ConfigError) as exc:
        print(f"{FAILED} {exc}", flush=True)
        return 1
    print(f"{READY} {broker.port}", flush=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the rig's to handle; it stops us
    with contextlib.suppress(ValueError, OSError):
        sys.stdin.read()  # until the rig closes the pipe (or dies)
    broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
