"""The systems under test of a live run: separate processes, each with its log file."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from rig.runtime.lockstep import Answer
from twin.site import Site

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0


def sut_commands(site: Site, *, controller: str, leak_detector: str, modbus_at: str,
                 points_json: Path, mqtt_url: str, speed: float,
                 lockstep: bool = False) -> list[tuple[str, list[str]]]:
    """``(name, python arguments)`` of each system under test to start (``"none"`` starts
    nothing); the controller reads ``points_json`` and talks Modbus to ``modbus_at``, the
    leak detector listens on ``mqtt_url``. ``lockstep``: the controller cycles once per
    served slice (the leak detector always answers the rig's step announcements)."""
    commands = []
    if controller != "none":
        commands.append(("controller", [
            "-m", "rig.sut.controller", "--modbus", modbus_at, "--points", str(points_json),
            "--variant", controller, "--speed", f"{speed:g}",
            *(["--lockstep"] if lockstep else [])]))
    if leak_detector != "none":
        commands.append(("leak_detector", [
            "-m", "rig.sut.leak_detector", "--mqtt", mqtt_url,
            "--prefix", site.protocols.mqtt_prefix, "--site", site.name,
            "--variant", leak_detector,
            "--reservoir-area", f"{site.cdus.reservoir_area:g}"]))
    return commands


def reference_answers(controller: str, leak_detector: str) -> list[Answer]:
    """How the started reference systems answer a lockstep slice: the controller with
    a new heartbeat count, the leak detector with an MQTT ack."""
    answers = []
    if controller != "none":
        answers.append(Answer("controller", heartbeat="*.heartbeat"))
    if leak_detector != "none":
        answers.append(Answer("leak_detector", mqtt=True))
    return answers


class Suts:
    """Processes started with `spawn` (output to ``<out_dir>/sut-<name>.log``), ended
    together with `stop`."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start ``python <args>`` as ``name``."""
        logfile = (self.out_dir / f"sut-{name}.log").open("wb")
        try:
            proc = subprocess.Popen([sys.executable, *args], stdout=logfile,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except BaseException:
            logfile.close()
            raise
        self._logs.append(logfile)
        self.procs[name] = proc
        log.info("started %s (pid %d), log %s", name, proc.pid, logfile.name)
        return proc

    async def stop(self) -> None:
        """SIGTERM every process, wait up to 5 s (the event loop keeps serving them while
        they stop), kill what is left, close the logs. Stopping twice is harmless."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.perf_counter() + STOP_TIMEOUT_S
        while any(p.poll() is None for p in self.procs.values()) and \
                time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        for name, proc in self.procs.items():
            if proc.poll() is None:
                log.warning("%s did not stop in %g s; killing it", name, STOP_TIMEOUT_S)
                proc.kill()
                proc.wait()
        for logfile in self._logs:
            logfile.close()
        self._logs.clear()
