"""The README's "A five-minute tour", run command by command from the README itself.

The ``sh`` blocks of the tour are parsed out of README.md and every command in them is
run, in order, in a temporary working folder that links to the repository's files (so
``.venv/bin/heatrig`` and ``scenarios/`` are found as the README says and ``runs/`` lands
in the temporary folder). Each command must exit as the README says and print what it
says. The only changes to the commands: ports become free ones (other tests may hold the
defaults), the day simulated offline becomes one hour (see `LONG_DURATION`), and the
clients get a bound (``mosquitto_sub`` stops after its messages). `mbpoll` and
``mosquitto_*`` run against a live ``heatrig run reference-1mw`` started here and stopped
with SIGINT as with Ctrl-C. A command the test has no handler for fails it, so a new tour
command cannot go untested.
"""

from __future__ import annotations

import json
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import topic_matches_sub
from servers import free_ports

from rig.config.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HEATRIG = ".venv/bin/heatrig"
MODBUS_PORT = "5020"  # the defaults the README's commands use
MQTT_PORT = "1883"
# The tour simulates a day; an hour runs the same code path in a few seconds.
LONG_DURATION = ("--duration", "24h")
SHORT_DURATION = ("--duration", "1h")
MBPOLL_TABLES = {"0": "coils", "1": "discrete_inputs", "3": "input_registers",
                 "4": "holding_registers"}


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Command:
    """One command line of the tour, with its trailing comment."""

    argv: tuple[str, ...]
    comment: str
    block: int  # index of its sh block in the tour


def split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of a shell line; a ``#`` inside quotes is not a comment."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def tour_commands(text: str) -> list[Command]:
    """Every command of the ``sh`` blocks in the "A five-minute tour" section."""
    match = re.search(r"^## A five-minute tour\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## A five-minute tour' section"
    blocks = re.findall(r"^```sh\n(.*?)^```", match.group(1), re.MULTILINE | re.DOTALL)
    commands = []
    for index, block in enumerate(blocks):
        for line in block.replace("\\\n", " ").splitlines():
            code, comment = split_comment(line)
            if code.strip():
                commands.append(Command(tuple(shlex.split(code)), comment, index))
            elif comment and commands and commands[-1].block == index:  # a continued comment
                last = commands.pop()
                commands.append(Command(last.argv, f"{last.comment} {comment}", index))
    return commands


def test_the_tour_parser_reads_commands_and_comments() -> None:
    text = ("## A five-minute tour\n\n```sh\nprog a 'b # c' d   # the comment\n"
            "             # goes on\nother \\\n  --flag\n```\n\n```text\nnot me\n```\n"
            "## Next\n```sh\nnot in the tour\n```\n")
    assert tour_commands(text) == [
        Command(("prog", "a", "b # c", "d"), "the comment goes on", 0),
        Command(("other", "--flag"), "", 0)]


# ----------------------------------------------------------------------------- running


def replaced(argv: tuple[str, ...], old: tuple[str, ...], new: tuple[str, ...]) -> list[str]:
    """``argv`` with the option ``old`` (which must be there) replaced by ``new``."""
    args = list(argv)
    for i in range(len(args) - len(old) + 1):
        if tuple(args[i:i + len(old)]) == old:
            return args[:i] + list(new) + args[i + len(old):]
    raise AssertionError(f"{shlex.join(argv)}: expected {' '.join(old)} in the command")


def run(argv: list[str], cwd: Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, text=True, capture_output=True, timeout=timeout,
                          check=False)


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the rig exited early with {process.returncode}"
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout:g} s")


class Subscriber:
    """A README ``mosquitto_sub`` in the background, with ``-d`` to see its SUBACK (and its
    output line-buffered, so each line arrives when it is printed)."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        assert "-v" in argv, "the tour's subscriptions print topics (-v)"
        self.filter = argv[argv.index("-t") + 1]
        self.process = subprocess.Popen(["stdbuf", "-oL", *argv, "-d"], cwd=cwd, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.messages: list[tuple[str, str]] = []
        threading.Thread(target=self._read, daemon=True).start()
        self._wait(lambda line: "received SUBACK" in line, "its SUBACK")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def _wait(self, done: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if not line.startswith(("Client ", "Subscribed ")) and " " in line:
                topic, payload = line.split(" ", 1)
                if topic_matches_sub(self.filter, topic):  # the -v format: TOPIC PAYLOAD
                    self.messages.append((topic, payload))
            if done(line):
                return
        raise AssertionError(f"mosquitto_sub -t {self.filter}: no {what} in {timeout:g} s")

    def wait_messages(self, count: int) -> list[tuple[str, str]]:
        self._wait(lambda line: len(self.messages) >= count, f"{count} messages")
        return self.messages

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@dataclass
class Tour:
    """State shared by the commands: the folder, the live rig and what was checked."""

    cwd: Path
    point_rows: list[dict[str, Any]] = field(default_factory=list)
    rig: subprocess.Popen[str] | None = None
    modbus_port: int = 0
    mqtt_port: int = 0
    subscribers: list[Subscriber] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)
    mbpoll_writes: dict[str, str] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)  # the runs the tour recorded
    expectations: dict[str, list[str]] = field(default_factory=dict)  # run dir -> names

    def point(self, point_id: str) -> dict[str, Any]:
        if not self.point_rows:
            listing = run([HEATRIG, "points", "reference-1mw", "--format", "json"], self.cwd)
            assert listing.returncode == 0, listing.stderr
            self.point_rows = json.loads(listing.stdout)
        rows = [row for row in self.point_rows if row["id"] == point_id]
        assert rows, f"the README names {point_id!r}, which is not in the point list"
        return rows[0]

    def live(self) -> None:
        """Start ``heatrig run reference-1mw`` (serving until Ctrl-C) once."""
        if self.rig is not None:
            return
        self.modbus_port, self.mqtt_port = free_ports(2)
        with (self.cwd / "live.log").open("w") as log:  # a file: a pipe could fill up
            self.rig = subprocess.Popen(
                [HEATRIG, "run", "reference-1mw", "--modbus", f"127.0.0.1:{self.modbus_port}",
                 "--broker-port", str(self.mqtt_port), "--quiet"], cwd=self.cwd, text=True,
                stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.modbus_port, self.rig)
        # ready for MQTT when its retained status says so (a bare TCP probe upsets amqtt)
        deadline = time.monotonic() + 60.0
        while True:
            status = run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.mqtt_port), "-t",
                          "heatrig/reference-1mw/status", "-C", "1", "-W", "10"], self.cwd)
            if status.stdout.strip() == "online":
                break
            assert time.monotonic() < deadline and self.rig.poll() is None, (
                status.stdout, status.stderr, self.log())
            time.sleep(0.3)

    def log(self) -> str:
        """The live rig's output so far."""
        path = self.cwd / "live.log"
        return path.read_text() if path.exists() else ""

    def stop_live(self) -> tuple[int, str]:
        """Ctrl-C the live rig; its exit code and output."""
        assert self.rig is not None
        self.rig.send_signal(signal.SIGINT)
        self.rig.wait(timeout=60)
        return self.rig.returncode, self.log()


@pytest.fixture()
def tour(tmp_path: Path) -> Iterator[Tour]:
    for entry in ROOT.iterdir():
        if entry.name not in ("runs", ".git"):
            (tmp_path / entry.name).symlink_to(entry)
    state = Tour(tmp_path)
    yield state
    for sub in state.subscribers:
        sub.stop()
    if state.rig is not None and state.rig.poll() is None:
        state.rig.kill()
        state.rig.wait()


# ----------------------------------------------------------------------------- handlers


def heatrig_command(tour: Tour, cmd: Command) -> None:
    sub = cmd.argv[1]
    argv = list(cmd.argv)
    cwd = tour.cwd
    if sub == "sim":
        argv = replaced(cmd.argv, LONG_DURATION, SHORT_DURATION)
        result = run(argv, cwd)
        assert result.returncode == 0, result.stderr
        out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
        assert out is not None, "the tour's sim names its run folder"
        assert f"summary: {out / 'summary.json'}" in result.stdout
        assert (cwd / out / "summary.json").is_file() and "PUE" in result.stdout  # its KPIs
        tour.run_dirs.append(str(out))
    elif sub == "run":
        modbus, mqtt = free_ports(2)
        argv += ["--modbus", f"127.0.0.1:{modbus}", "--broker-port", str(mqtt)]
        result = run(argv, cwd, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr  # every verdict passes
        target = cmd.argv[2]
        scenario = load_scenario(cwd / target if (cwd / target).exists() else target).scenario
        verdicts = [line for line in result.stdout.splitlines()
                    if re.match(r"^(PASS|FAIL)\s", line)]
        assert [v.split(None, 1)[1].split(":")[0] for v in verdicts] == [
            e.name for e in scenario.expect]  # one line per expectation
        assert all(v.startswith("PASS") for v in verdicts)
        run_dir = cwd / "runs" / scenario.name
        assert f"report: runs/{scenario.name}/report.html" in result.stdout
        for name in ("report.html", "junit.xml", "verdicts.json"):
            assert (run_dir / name).is_file(), name
        tour.run_dirs.append(f"runs/{scenario.name}")
        tour.expectations[f"runs/{scenario.name}"] = [e.name for e in scenario.expect]
    elif sub == "points":
        result = run(argv, cwd)
        assert result.returncode == 0, result.stderr
        fmt = argv[argv.index("--format") + 1]
        assert fmt == "md"
        header = result.stdout.splitlines()[0]
        assert header.startswith("| id |") and "modbus_address" in header
        assert "| cdu1.supply_temp |" in result.stdout
    elif sub == "runs":
        result = run(argv, cwd)
        assert result.returncode == 0, result.stderr
        assert tour.run_dirs
        for recorded in tour.run_dirs:
            assert f"run_dir={recorded} " in result.stdout, result.stdout
    elif sub == "show":
        result = run(argv, cwd)
        assert result.returncode == 0, result.stderr
        shown = argv[2].rstrip("/")
        assert f"({shown})" in result.stdout.splitlines()[0] and "KPIs" in result.stdout
        for name in tour.expectations.get(shown, []):  # and its verdicts
            assert name in result.stdout
    elif sub == "replay":
        result = run(argv, cwd, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "record identical to the original" in result.stdout
    else:
        raise AssertionError(f"no check for README command {shlex.join(cmd.argv)}")


def mbpoll_command(tour: Tour, cmd: Command) -> None:
    tour.live()
    argv = replaced(cmd.argv, ("-p", MODBUS_PORT), ("-p", str(tour.modbus_port)))
    args = argv[1:]
    unit, kind, ref = (args[args.index(flag) + 1] for flag in ("-a", "-t", "-r"))
    host = args.index("127.0.0.1")
    values = args[host + 1:]
    result = run(argv, tour.cwd, timeout=30)
    if cmd.comment.startswith("refused"):
        assert "exception 03" in cmd.comment
        assert result.returncode != 0 and "Illegal data value" in result.stderr, result
        return
    point = tour.point(cmd.comment)  # the comment names the point the command addresses
    modbus = point["modbus"]
    assert modbus["unit_id"] == int(unit)
    assert modbus["table"] == MBPOLL_TABLES[kind.split(":")[0]]
    assert modbus["address"] + 1 == int(ref)  # mbpoll counts from 1
    if kind.endswith(":float"):
        assert modbus["type"] == "float32" and "-B" in args  # ABCD: big-endian words
    assert result.returncode == 0, result.stdout + result.stderr
    if values:
        assert "Written 1 references." in result.stdout
        tour.mbpoll_writes[cmd.comment] = values[0]
        return
    read = re.search(rf"^\[{ref}\]:\s+(-?[0-9.]+)", result.stdout, re.MULTILINE)
    assert read, result.stdout
    assert point["min"] <= float(read.group(1)) <= point["max"]


def check_mbpoll_writes(tour: Tour) -> None:
    """Read back what the tour wrote: the setpoint (not the refused 500) and the hand coil.

    Accepted writes take effect at the rig's next slice, so this polls for a few seconds.
    """
    assert tour.mbpoll_writes, "the tour's mbpoll commands wrote nothing"
    for point_id, value in tour.mbpoll_writes.items():
        modbus = tour.point(point_id)["modbus"]
        table = {v: k for k, v in MBPOLL_TABLES.items()}[modbus["table"]]
        kind = [f"{table}:float", "-B"] if modbus["type"] == "float32" else [table]
        ref = modbus["address"] + 1
        argv = ["mbpoll", "-m", "tcp", "-p", str(tour.modbus_port), "-a",
                str(modbus["unit_id"]), "-t", *kind, "-r", str(ref), "-c", "1", "-1",
                "127.0.0.1"]
        deadline = time.monotonic() + 10.0
        while True:
            result = run(argv, tour.cwd)
            read = re.search(rf"^\[{ref}\]:\s+(-?[0-9.]+)", result.stdout, re.MULTILINE)
            if read and float(read.group(1)) == float(value):
                break
            assert time.monotonic() < deadline, (point_id, result.stdout, tour.log())
            time.sleep(0.2)


def mosquitto_command(tour: Tour, cmd: Command) -> None:
    tour.live()
    argv = replaced(cmd.argv, ("-p", MQTT_PORT), ("-p", str(tour.mqtt_port)))
    if cmd.argv[0] == "mosquitto_sub":
        tour.subscribers.append(Subscriber(argv, tour.cwd))
        return
    result = run(argv, tour.cwd, timeout=30)
    assert result.returncode == 0, result.stderr
    topic = argv[argv.index("-t") + 1]
    tour.published.append({"point": topic.rsplit("/", 1)[1],
                           **json.loads(argv[argv.index("-m") + 1])})


def check_mqtt(tour: Tour) -> None:
    """Telemetry arrived as JSON; each command was answered as accepted on the reply topic."""
    assert tour.subscribers and tour.published
    for sub in tour.subscribers:
        if sub.filter.endswith("/telemetry"):
            (_, payload), *_ = sub.wait_messages(1)
            assert isinstance(json.loads(payload)["values"], dict), payload
        elif sub.filter.endswith("/reply"):
            replies = [json.loads(p) for _, p in sub.wait_messages(len(tour.published))]
            for sent, reply in zip(tour.published, replies, strict=True):
                assert reply["point"] == sent["point"] and reply["accepted"] is True, reply
                assert reply["value"] == sent["value"]
        else:
            raise AssertionError(f"no check for a subscription to {sub.filter}")


HANDLERS = {HEATRIG: heatrig_command, "mbpoll": mbpoll_command,
            "mosquitto_sub": mosquitto_command, "mosquitto_pub": mosquitto_command}


def test_every_command_of_the_readme_tour_works(tour: Tour) -> None:
    for program in ("mbpoll", "mosquitto_sub", "mosquitto_pub"):
        assert shutil.which(program), f"{program} is missing: make services installs it"
    commands = tour_commands(README.read_text(encoding="utf-8"))
    assert len({c.block for c in commands}) >= 5 and len(commands) >= 10
    for cmd in commands:
        handler = HANDLERS.get(cmd.argv[0])
        assert handler, f"no check for README command {shlex.join(cmd.argv)}"
        previous = tour.done[-1] if tour.done else ""
        if previous == "mbpoll" and cmd.argv[0] != "mbpoll":
            check_mbpoll_writes(tour)
        if previous.startswith("mosquitto") and not cmd.argv[0].startswith("mosquitto"):
            check_mqtt(tour)
        handler(tour, cmd)
        tour.done.append(cmd.argv[0])
    if tour.done[-1] == "mbpoll":
        check_mbpoll_writes(tour)
    if tour.done[-1].startswith("mosquitto"):
        check_mqtt(tour)
    assert {"mbpoll", "mosquitto_sub", "mosquitto_pub"} <= set(tour.done)
    code, output = tour.stop_live()
    assert code == 0, output  # Ctrl-C ends a live run cleanly
    assert "Traceback" not in output
