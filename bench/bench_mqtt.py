"""Benchmark: reference-site telemetry through the MQTT adapter at increasing speed.

    python -m bench.bench_mqtt [--speeds 1,10,50,100,200] [--duration 10] [--qos 1]
                               [--broker mosquitto|embedded|embedded-inloop]

For each speed a paced asyncio loop advances the twin by ``slice x speed`` simulated seconds
per wall-clock slice (100 ms), publishing every point's measured value at each sensor
period (1 s simulated) through
`rig.protocols.mqtt.adapter.MqttAdapter`, and applying pending commands at
each slice boundary, as the live runner does. A stock paho subscriber in a separate process
(so it does not share the publisher's GIL) counts the point values delivered and the gaps
in each device's ``seq``. Reported per speed: point values/s delivered, messages lost
(gaps plus never delivered), slice lateness p50/p99/max (how late each slice starts
after its wall deadline), the time spent per slice and the publisher's CPU use.

Brokers: ``mosquitto`` (tests/servers.py's Mosquitto on a free loopback port),
``embedded`` (`rig.protocols.mqtt.broker.EmbeddedBroker`: amqtt in its own thread) and
``embedded-inloop`` (amqtt on the simulation loop itself, to see what the thread buys).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SLICE_S = 0.1
LATENESS_LIMIT_MS = 5.0
SITE = "reference-1mw"


# --------------------------------------------------------------------------- subscriber


def _subscriber_main(port: int, pattern: str, conn: Any) -> None:
    """Child process: count values and seq gaps per device; answer requests on ``conn``."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    lock = threading.Lock()
    counts = {"messages": 0, "values": 0, "gaps": 0, "dups": 0}
    last: dict[str, int] = {}
    subscribed = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        body = json.loads(msg.payload)
        device = msg.topic.rsplit("/", 2)[-2]
        with lock:
            counts["messages"] += 1
            counts["values"] += len(body["values"])
            prev = last.get(device, -1)
            seq = body["seq"]
            if seq <= prev:
                counts["dups"] += 1
            else:
                counts["gaps"] += seq - prev - 1
                last[device] = seq

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}")
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(pattern, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    conn.send(subscribed.wait(10.0))
    while True:
        request = conn.recv()
        if request == "stop":
            break
        with lock:
            conn.send({**counts, "last": dict(last)})
    client.disconnect()
    client.loop_stop()
    conn.send("bye")


class Subscriber:
    """Handle on the subscriber process."""

    def __init__(self, port: int, pattern: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_subscriber_main, args=(port, pattern, child),
                                daemon=True)
        self.proc.start()
        if not self.conn.recv():
            raise RuntimeError("bench subscriber could not subscribe")

    def counts(self) -> dict[str, Any]:
        self.conn.send("counts")
        return self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.conn.send("stop")
            self.conn.recv()
        self.proc.join(5.0)
        if self.proc.is_alive():
            self.proc.kill()


# --------------------------------------------------------------------------- paced run


@dataclass
class Result:
    speed: float
    samples: int
    messages: int
    values_sent: int
    values_delivered: int
    lost: int
    dups: int
    wall_s: float  # the paced loop
    delivered_s: float  # from the loop's start until the last message arrived (or gave up)
    lateness_ms: list[float]
    work_ms: list[float]
    cpu_s: float
    dropped: int

    def pct(self, data: list[float], q: float) -> float:
        ordered = sorted(data)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    @property
    def values_per_s(self) -> float:
        return self.values_delivered / self.delivered_s

    @property
    def lateness_p99(self) -> float:
        return self.pct(self.lateness_ms, 0.99)

    def row(self) -> str:
        return (f"{self.speed:>6g}x {self.samples:>6d} {self.messages:>7d} "
                f"{self.values_per_s:>12,.0f} {self.lost:>5d} "
                f"{self.pct(self.lateness_ms, 0.5):>7.2f} {self.lateness_p99:>7.2f} "
                f"{max(self.lateness_ms):>7.2f} {self.pct(self.work_ms, 0.5):>7.2f} "
                f"{self.pct(self.work_ms, 0.99):>7.2f} {100 * self.cpu_s / self.wall_s:>5.0f}%")


HEADER = (f"{'speed':>7} {'samples':>6} {'msgs':>7} {'values/s dlv':>12} {'lost':>5} "
          f"{'late50':>7} {'late99':>7} {'lateMax':>7} {'work50':>7} {'work99':>7} {'cpu':>6}")


async def paced_run(url: str, port: int, speed: float, duration_s: float, qos: int,
                    broker_in_loop: bool) -> Result:
    """One speed: a fresh twin, adapter and subscriber; the paced loop; the counts."""
    from rig.protocols.mqtt.adapter import MqttAdapter, MqttConfig
    from twin.plant import Twin
    from twin.site import Site

    inloop = None
    if broker_in_loop:
        from amqtt.broker import Broker

        from rig.protocols.mqtt.broker import broker_config
        inloop = Broker(broker_config(port))
        await inloop.start()
    prefix = f"bench{os.getpid()}x{speed:g}".replace(".", "_")
    twin = Twin(Site(name=SITE), seed=1)
    loop = asyncio.get_running_loop()
    # Off the loop: with the broker in this loop, blocking here would stall it.
    sub = await loop.run_in_executor(None, Subscriber, port, f"{prefix}/{SITE}/+/telemetry")
    adapter = MqttAdapter(MqttConfig(url=url, site=SITE, prefix=prefix, qos=qos,
                                     queue_bound=100_000), twin.points)
    adapter.start()
    deadline = loop.time() + 10.0
    while not adapter.connected and loop.time() < deadline:
        await asyncio.sleep(0.01)
    if not adapter.connected:
        raise RuntimeError(f"adapter did not connect to {url}")
    samples = 0

    def sample() -> None:
        nonlocal samples
        samples += 1
        adapter.publish_twin(twin)

    twin.every(twin.site.sensors.period, sample)
    lateness: list[float] = []
    work: list[float] = []
    slices = round(duration_s / SLICE_S)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = loop.time()
    for k in range(1, slices + 1):
        wake = t0 + k * SLICE_S
        delay = wake - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = loop.time()
        lateness.append(1e3 * (now - wake))
        adapter.apply_pending(twin)
        twin.run_until(k * SLICE_S * speed)
        work.append(1e3 * (loop.time() - now))
    wall = loop.time() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    expected = adapter._seq  # messages per device
    total_msgs = sum(expected.values())
    deadline = loop.time() + 15.0
    counts = sub.counts()
    while counts["messages"] + counts["gaps"] < total_msgs and loop.time() < deadline:
        await asyncio.sleep(0.2)
        counts = sub.counts()
    delivered_s = loop.time() - t0
    sent_values = samples * len(twin.points)
    stats = adapter.stats()
    await loop.run_in_executor(None, adapter.close)
    await loop.run_in_executor(None, sub.close)
    if inloop is not None:
        await inloop.shutdown()
    never = sum(n - 1 - counts["last"].get(d, -1) for d, n in expected.items())
    return Result(speed, samples, total_msgs, sent_values, counts["values"],
                  counts["gaps"] + never, counts["dups"], wall, delivered_s, lateness, work,
                  (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
                  stats["dropped"])


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speeds", default="1,10,20,50,100,200,400",
                        help="comma-separated speed factors (default %(default)s)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="wall seconds per speed (default %(default)s)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--broker", choices=("mosquitto", "embedded", "embedded-inloop"),
                        default="mosquitto")
    args = parser.parse_args(argv)
    speeds = [float(s) for s in args.speeds.split(",")]
    sys.path.insert(0, str(ROOT / "tests"))
    from servers import Mosquitto, free_port

    from rig.protocols.mqtt.broker import EmbeddedBroker

    server: Any = None
    if args.broker == "mosquitto":
        server = Mosquitto().start()
        url, port = server.url, server.port
    elif args.broker == "embedded":
        server = EmbeddedBroker()
        url = server.start()
        port = server.port
    else:
        port = free_port()
        url = f"mqtt://127.0.0.1:{port}"
    command = "python -m bench.bench_mqtt " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"# {command.strip()}")
    print(f"# broker {args.broker} at {url}, QoS {args.qos}, slice {SLICE_S * 1e3:g} ms, "
          f"{args.duration:g} s per speed, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")
    print(HEADER)
    results = []
    try:
        for speed in speeds:
            result = asyncio.run(paced_run(url, port, speed, args.duration, args.qos,
                                           args.broker == "embedded-inloop"))
            results.append(result)
            print(result.row(), flush=True)
    finally:
        if server is not None:
            server.stop() if args.broker == "embedded" else server.close()
    ok = [r for r in results if r.lateness_p99 <= LATENESS_LIMIT_MS]
    lossless = [r for r in results if r.lost == 0 and r.dropped == 0]
    best = max(lossless, key=lambda r: r.values_per_s, default=None)
    print(f"# highest speed with p99 slice lateness <= {LATENESS_LIMIT_MS:g} ms: "
          f"{max((r.speed for r in ok), default=0):g}x")
    if best is not None:
        print(f"# most point values/s delivered with none lost: "
              f"{best.values_per_s:,.0f} at {best.speed:g}x "
              f"({best.messages / best.delivered_s:,.0f} messages/s)")
    print(f"# total lost: {sum(r.lost for r in results)}, dropped: "
          f"{sum(r.dropped for r in results)}, duplicates: {sum(r.dups for r in results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
