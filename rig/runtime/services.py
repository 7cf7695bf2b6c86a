"""Start-up of a live run's resources, each owned by the run's `AsyncExitStack`.

Every ``open_*``/``start_*`` function opens one thing (the run store, the InfluxDB
forwarder, the Modbus server, the embedded broker, the MQTT adapter, the observer) and
registers its release on ``stack`` as soon as it is open, so a start-up that fails at any
step releases everything opened before it when the stack unwinds. `startup_step` names
the step in the error (`StartupError`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

from rig.present.pointlist import render
from rig.protocols.modbus.registers import ModbusMap
from rig.protocols.modbus.server import ModbusConfig, ModbusServer
from rig.protocols.mqtt.adapter import MqttAdapter, MqttConfig
from rig.protocols.mqtt.broker import EmbeddedBroker
from rig.protocols.mqtt.observer import Observer
from rig.record.influx import Forwarder, InfluxTarget
from rig.record.store import RunStore
from twin.errors import ConfigError, ProtocolError, RunError
from twin.points import PointTable

log = logging.getLogger(__name__)


class StartupError(RunError):
    """A live run could not start; ``step`` names what failed (what was opened before it
    has been released)."""

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        super().__init__(f"the live run cannot start ({step}): {cause}")


@contextmanager
def startup_step(step: str) -> Iterator[None]:
    """Raise any failure inside as a `StartupError` naming ``step`` (a `ConfigError`, a
    user's mistake that names its field, as it is)."""
    try:
        yield
    except (StartupError, ConfigError):
        raise
    except Exception as exc:
        raise StartupError(step, exc) from exc


def open_store(stack: AsyncExitStack, out_dir: Path, manifest: Mapping[str, Any],
               points: Sequence[Mapping[str, Any]]) -> RunStore:
    """Create the run store in ``out_dir``; closed when the stack unwinds."""
    store = RunStore.create(out_dir, manifest, points)
    stack.callback(store.close)
    return store


def start_forwarder(stack: AsyncExitStack, store: RunStore, url: str,
                    drain: Callable[[], bool]) -> Forwarder:
    """Forward ``store`` to the InfluxDB at ``url`` (ServiceError or ValueError when that
    cannot start; the caller decides whether the run goes on). When the stack unwinds it
    stops, after exporting everything recorded if ``drain()`` is then true (a run that
    ended, not one that failed to start)."""
    forwarder = Forwarder(store, InfluxTarget.from_url(url))
    forwarder.start()
    stack.callback(lambda: forwarder.stop(drain=drain()))
    return forwarder


def write_point_list(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write the point list (JSON) the systems under test read their addresses from."""
    path.write_text(render(rows, "json"))


async def start_modbus(stack: AsyncExitStack, modbus_map: ModbusMap, endpoint: str,
                       quiet_points: Collection[str]) -> ModbusServer:
    """Serve ``modbus_map`` on ``endpoint`` (HOST:PORT); stopped when the stack unwinds."""
    server = ModbusServer(modbus_map, ModbusConfig.from_endpoint(endpoint),
                          quiet_points=quiet_points)
    try:
        await server.start()
    except OSError as exc:
        raise ProtocolError(f"{exc}: is another program using that port? choose one with "
                            "--modbus HOST:PORT") from exc
    stack.push_async_callback(server.stop)
    return server


def start_broker(stack: AsyncExitStack, port: int) -> tuple[EmbeddedBroker, str]:
    """Start the embedded MQTT broker on loopback ``port`` (0 = any free one); return it
    and its URL. Stopped when the stack unwinds."""
    broker = EmbeddedBroker(port=port)
    url = broker.start()
    stack.callback(broker.stop)
    return broker, url


def start_mqtt(stack: AsyncExitStack, config: MqttConfig, points: PointTable) -> MqttAdapter:
    """Connect the MQTT adapter (waits up to 10 s); closed when the stack unwinds."""
    adapter = MqttAdapter(config, points).start(wait_s=10.0)
    stack.callback(adapter.close)
    return adapter


def start_observer(stack: AsyncExitStack, url: str, filters: list[str]) -> Observer:
    """Subscribe to what the systems under test publish; closed when the stack unwinds."""
    observer = Observer(url, filters).start()
    stack.callback(observer.close)
    return observer
