"""Benchmark: the rig's Modbus TCP server under load while the twin runs at speed 1.

    python -m bench.bench_modbus [--clients 4] [--duration 20] [--count 100] [--speed 1]

One asyncio loop runs the twin in 100 ms slices paced to absolute wall deadlines (apply
pending writes, ``run_until``, refresh the registers, sleep) and
`rig.protocols.modbus.server.ModbusServer`
on a free loopback port. ``--clients`` separate processes (so they do not share the
server's GIL), each a synchronous pymodbus client, read ``--count`` input registers of
one CDU unit per request as fast as they can. Reported: read requests/s served (server
counter over the window) and completed (clients), client latency p50/p99/max, slice
lateness p50/p99/max (how late each slice starts after its deadline), the time spent per
slice and in ``refresh`` (measured values + encoding every register), and the server
process's CPU use. Target: >= 1000 requests/s, p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import queue
import resource
import shlex
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

SLICE_S = 0.1
SITE = "reference-1mw"
TARGET_RPS = 1000.0
TARGET_P99_MS = 5.0


# --------------------------------------------------------------------------- clients


def _client_main(port: int, unit: int, count: int, ready: Any, start: Any, stop: Any,
                 results: Any) -> None:
    """Child process: read ``count`` input registers in a loop until ``stop`` is set."""
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
    if not client.connect():
        ready.put(("failed", unit))
        return
    ready.put(("ready", unit))
    start.wait()
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter
    read = client.read_input_registers
    while not stop.is_set():
        began = clock()
        try:
            rr = read(0, count=count, device_id=unit)
            if rr.isError() or len(rr.registers) != count:
                errors += 1
        except Exception:  # a failed request is counted, not fatal
            errors += 1
        latencies.append(clock() - began)
    client.close()
    results.put((unit, np.array(latencies), errors))


# --------------------------------------------------------------------------- server side


@dataclass
class Outcome:
    clients: int
    count: int
    window_s: float
    served: int
    completed: int
    errors: int
    exceptions: dict[int, int]
    latency_ms: np.ndarray
    lateness_ms: np.ndarray
    work_ms: np.ndarray
    refresh_us: np.ndarray
    cpu_s: float
    sim_s: float


async def run(clients: int, duration_s: float, count: int, speed: float) -> Outcome:
    """Serve the twin, start the clients, measure for ``duration_s``, stop everything."""
    from rig.protocols.modbus.registers import ModbusMap, Table
    from rig.protocols.modbus.server import ModbusConfig, ModbusServer
    from twin.plant import Twin
    from twin.site import Site

    twin = Twin(Site(name=SITE), seed=1)
    modbus_map = ModbusMap.for_twin(twin)
    units = [u for u, t, _, size in modbus_map.blocks()
             if t is Table.INPUT_REGISTERS and size >= count]
    if not units:
        raise SystemExit(f"no unit has {count} input registers")
    server = ModbusServer(modbus_map, ModbusConfig(port=0, max_connections=clients + 4,
                                                   max_per_address=clients + 4))
    await server.start()
    server.refresh(twin.measured_values(), twin.now)

    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    start, stop = ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=_client_main, daemon=True,
                         args=(server.port, units[i % len(units)], count, ready, start, stop,
                               results)) for i in range(clients)]
    for proc in procs:
        proc.start()
    loop = asyncio.get_running_loop()
    waiting = clients
    deadline = loop.time() + 60.0
    while waiting:  # the loop must keep running so that the clients can connect
        try:
            state, unit = ready.get_nowait()
        except queue.Empty:
            if loop.time() > deadline:
                raise SystemExit("clients did not start") from None
            await asyncio.sleep(0.02)
            continue
        if state != "ready":
            raise SystemExit(f"client for unit {unit} could not connect")
        waiting -= 1

    lateness: list[float] = []
    work: list[float] = []
    refresh: list[float] = []
    slices = round(duration_s / SLICE_S)
    start.set()
    requests0 = server.requests
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    sim0 = twin.now
    t0 = loop.time()
    for k in range(1, slices + 1):
        wake = t0 + k * SLICE_S
        delay = wake - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = loop.time()
        lateness.append(1e3 * (now - wake))
        server.apply_pending(twin)
        twin.run_until(sim0 + k * SLICE_S * speed)
        began = time.perf_counter()
        server.refresh(twin.measured_values(), twin.now)
        refresh.append(1e6 * (time.perf_counter() - began))
        work.append(1e3 * (loop.time() - now))
    window = loop.time() - t0
    served = server.requests - requests0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()

    collected = []
    deadline = loop.time() + 30.0
    while len(collected) < clients and loop.time() < deadline:
        try:
            collected.append(results.get_nowait())
        except queue.Empty:
            await asyncio.sleep(0.02)
    stats = server.stats()
    await server.stop()
    for proc in procs:
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
    latencies = np.concatenate([c[1] for c in collected]) if collected else np.array([0.0])
    return Outcome(clients, count, window, served, sum(len(c[1]) for c in collected),
                   sum(c[2] for c in collected), stats["exceptions"], 1e3 * latencies,
                   np.array(lateness), np.array(work), np.array(refresh),
                   (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
                   twin.now - sim0)


def report(out: Outcome, command: str) -> str:
    """The result table."""
    def pct(data: np.ndarray, q: float) -> float:
        return float(np.percentile(data, q)) if data.size else 0.0

    rps = out.served / out.window_s
    p99 = pct(out.latency_ms, 99)
    rows = [
        ("clients x registers/request", f"{out.clients} x {out.count}"),
        ("window (wall s) / simulated s", f"{out.window_s:.1f} / {out.sim_s:.1f}"),
        ("read requests/s served (server)", f"{rps:,.0f}"),
        ("read requests/s completed (clients)", f"{out.completed / out.window_s:,.0f}"),
        ("registers/s", f"{rps * out.count:,.0f}"),
        ("errors / exception responses", f"{out.errors} / {out.exceptions or 0}"),
        ("latency p50 / p99 / max (ms)", f"{pct(out.latency_ms, 50):.2f} / {p99:.2f} / "
                                         f"{out.latency_ms.max():.2f}"),
        ("slice lateness p50 / p99 / max (ms)",
         f"{pct(out.lateness_ms, 50):.2f} / {pct(out.lateness_ms, 99):.2f} / "
         f"{out.lateness_ms.max():.2f}"),
        ("slice work p50 / p99 (ms)", f"{pct(out.work_ms, 50):.2f} / {pct(out.work_ms, 99):.2f}"),
        ("refresh: read twin + encode map p50 / p99 (us)",
         f"{pct(out.refresh_us, 50):.0f} / {pct(out.refresh_us, 99):.0f}"),
        ("server process CPU", f"{100 * out.cpu_s / out.window_s:.0f} %"),
        ("target", f">= {TARGET_RPS:.0f} req/s and p99 <= {TARGET_P99_MS:g} ms: "
                   f"{'met' if rps >= TARGET_RPS and p99 <= TARGET_P99_MS else 'NOT met'}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"command: {command}", ""]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.bench_modbus``."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_modbus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="client processes (4)")
    parser.add_argument("--duration", type=float, default=20.0, help="wall seconds (20)")
    parser.add_argument("--count", type=int, default=100, help="registers a request (100)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulation speed (1)")
    args = parser.parse_args(argv)
    command = "python -m bench.bench_modbus " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    out = asyncio.run(run(args.clients, args.duration, args.count, args.speed))
    print(report(out, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
