"""Reference plant controller: a Modbus TCP client supervising the plant, as a BMS would.

    python -m rig.sut.controller --modbus HOST:PORT --points POINTS.json
        [--variant VARIANT] [--period 1.0] [--speed N] [--reset-delay 300]
        [--confirm 30] [--give-up 30]

Addressing comes only from the exported point list. Every period (wall seconds) it reads
the points it needs in as few requests as the map allows, decides, writes, and writes a
heartbeat ``<device>.heartbeat`` (a counter) to every device it controls that has one:

* **Leaks.** A CDU leaks when one of its spot sensors (``cduN.leak``, ``cduN.rackMM.leak``)
  is wet, or when the make-up water runs (``cduN.makeup_flow`` > 0) while the reservoir is
  low (``cduN.low_level``) or its level keeps falling, for ``--confirm`` simulated seconds
  (the loop loses water faster than the make-up can add it; slower leaks are the leak
  detector's job). The CDU is isolated (``cduN.isolate`` = 1 with ``cduN.isolate.hand`` = 1)
  and its make-up disabled (``cduN.makeup_enable`` = 0 in hand), once per CDU.
* **Heat pumps.** On a trip (any ``hpN.trip.*``) it takes the enables in hand on every heat
  pump and keeps as many healthy units enabled as were running before the trip, preferring
  the ones already enabled: a standby replaces the tripped unit. ``--reset-delay``
  simulated seconds after the trip (default 300 s, the heat pumps' anti-short-cycle
  time) it pulses ``hpN.reset`` once per unit (no automatic reset after that, even when
  the unit trips again); a unit whose reset cleared the trip stays a healthy standby.
* **Facility pumps.** When ``facility.pumpN`` trips, a healthy disabled pump is enabled.
* Everything it wrote (except resets and heartbeats) is read back every period and written
  again when two reads in a row disagree (e.g. a watchdog fallback put it back in auto, or
  the rig refused the write with a transient exception). A part whose inputs the rig
  refused to read waits for the next period.

Defect variants (everything else identical to ``reference``): ``no-isolate`` never writes
``cduN.isolate``; ``reset-loop`` pulses ``hpN.reset`` every ``RESET_LOOP_S`` simulated
seconds while the unit is tripped, with no wait and no limit; ``no-standby`` never enables
a standby facility pump.

Times: simulated seconds from ``rig.sim_time`` when the point list has it, otherwise wall
seconds times ``--speed``. The period is shortened so that one period is at most
``--max-sim-step`` simulated seconds, or heartbeats would be too slow for the watchdogs.
With ``--lockstep`` there is no period: the controller polls ``rig.sim_time`` (every
``LOCKSTEP_POLL_S`` wall) and runs one cycle per new value, i.e. per slice the rig
serves; its first heartbeat write of the cycle (a new count, after every action's
write) is its answer to that slice.
Each action is one line on stdout, stamped ``t=<sim s>`` (or ``wall=<ISO time>``).
Exit status: 0 after SIGTERM/SIGINT, 2 for an unusable point list or arguments, 3 when
no period has succeeded for ``--give-up`` wall seconds (connections are retried with
backoff meanwhile; one the rig accepts and drops at once counts as a failure).
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from rig.sut import CONTROLLER_VARIANTS
from rig.sut.pointmap import PointInfo, PointMap, ReadBlock, plan_reads
from twin.errors import ConfigError, HeatrigError

log = logging.getLogger(__name__)
actions_log = logging.getLogger(__name__ + ".actions")

VARIANTS: tuple[str, ...] = CONTROLLER_VARIANTS
RESET_LOOP_S = 5.0  # simulated seconds between the resets of variant reset-loop
TIME_POINT = "rig.sim_time"
EXIT_OK, EXIT_USAGE, EXIT_RIG_GONE = 0, 2, 3
HEARTBEAT_MAX = 65534  # 65535 is the uint16 NaN marker
MAKEUP_RUNNING = 1e-3  # kg/s
LOCKSTEP_POLL_S = 0.0005  # wall, between reads of rig.sim_time in lockstep
PERMANENT_REFUSALS = (1, 2, 3)  # illegal function, address, value: retrying cannot help


class LinkLost(HeatrigError):
    """The Modbus connection to the rig failed (it is retried, then given up)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What the controller does; times in simulated seconds unless marked wall."""

    variant: str = "reference"  # one of VARIANTS
    period_s: float = 1.0  # wall
    speed: float = 1.0
    max_sim_step_s: float = 10.0
    reset_delay_s: float = 300.0
    reset_verify_s: float = 30.0
    confirm_s: float = 30.0
    level_window_s: float = 60.0
    level_drop_m: float = 0.002
    give_up_s: float = 30.0  # wall
    timeout_s: float = 2.0  # wall, per request
    lockstep: bool = False  # one cycle per slice the rig serves, no wall period

    @property
    def effective_period_s(self) -> float:
        """Wall period: ``period_s``, shortened to ``max_sim_step_s / speed`` (>= 50 ms)."""
        if self.speed > 0:
            return max(0.05, min(self.period_s, self.max_sim_step_s / self.speed))
        return self.period_s


@dataclass(slots=True)
class Action:
    """One decision: a log line and the writes that carry it out (in order)."""

    text: str
    writes: list[tuple[str, float]] = field(default_factory=list)
    hold: bool = True  # read the written values back and re-assert them


# --------------------------------------------------------------------------- decisions


@dataclass(slots=True)
class CduWatch:
    """Leak evidence of one CDU."""

    name: str
    spots: list[str]
    level: str | None
    makeup: str | None
    low_level: str | None
    history: deque[tuple[float, float]] = field(default_factory=deque)
    inputs: list[str] = field(default_factory=list)
    suspect_since: float | None = None
    handled: bool = False

    def __post_init__(self) -> None:
        self.inputs = [*self.spots, *(p for p in (self.level, self.makeup, self.low_level) if p)]

    def check(self, t: float, v: dict[str, float], s: Settings) -> str | None:
        """The reason this CDU leaks at ``t``, or None."""
        wet = [p for p in self.spots if v.get(p, 0.0) >= 0.5]
        if wet:
            return "spot sensor " + ", ".join(wet)
        level = v.get(self.level, math.nan) if self.level else math.nan
        if math.isfinite(level):
            self.history.append((t, level))
        while len(self.history) > 1 and t - self.history[1][0] >= s.level_window_s:
            self.history.popleft()
        falling = (len(self.history) > 1 and t - self.history[0][0] >= 0.9 * s.level_window_s
                   and level <= self.history[0][1] - s.level_drop_m)
        makeup = v.get(self.makeup, 0.0) if self.makeup else 0.0
        low = self.low_level is not None and v.get(self.low_level, 0.0) >= 0.5
        if not (makeup > MAKEUP_RUNNING and (low or falling)):
            self.suspect_since = None
            return None
        if self.suspect_since is None:
            self.suspect_since = t
        if t - self.suspect_since < s.confirm_s:
            return None
        what = "low" if low else "falling"
        return (f"reservoir level {what} ({level:.3f} m) while the make-up runs "
                f"({makeup:.3f} kg/s) for {t - self.suspect_since:.0f} s")


class PlantLogic:
    """The controller's decisions from one period's readings (no I/O)."""

    def __init__(self, points: PointMap, settings: Settings) -> None:
        self.points = points
        self.s = settings
        self.cdus = [CduWatch(c, points.spot_sensors(c), _opt(points, f"{c}.reservoir_level"),
                              _opt(points, f"{c}.makeup_flow"), _opt(points, f"{c}.low_level"))
                     for c in points.cdus()]
        self.hps = points.heat_pumps()
        self.pumps = points.facility_pumps()
        self._check_points()
        self._hp_inputs = [q for h in self.hps for q in (f"{h}.running", *points.trips(h))]
        self._pump_inputs = [f"{p}.{q}" for p in self.pumps for q in ("trip", "enable")]
        self.hold: dict[str, float] = {}
        self._mismatch: dict[str, int] = {}
        self._first = True
        self.hp_control = False
        self.hp_wanted = 0
        self.hp_enabled: dict[str, float] = {}
        self.prev_running: dict[str, bool] = {}
        self.prev_tripped: dict[str, bool] = {}
        self.reset_at: dict[str, float] = {}
        self.verify_at: dict[str, float] = {}
        self.reset_done: set[str] = set()
        self.pump_tripped: dict[str, bool] = {}
        self.loop_reset: dict[str, float] = {}  # variant reset-loop: last reset (sim s)

    def _check_points(self) -> None:
        needed = []
        for c in self.cdus:
            needed += [f"{c.name}.{p}" for p in ("isolate", "isolate.hand", "makeup_enable",
                                                  "makeup_enable.hand")]
        for h in self.hps:
            needed += [f"{h}.{p}" for p in ("enable", "enable.hand", "reset", "reset.hand",
                                             "running")]
        for p in self.pumps:
            needed += [f"{p}.{q}" for q in ("enable", "enable.hand", "trip")]
        problems = [f"{self.points.source}: the controller needs point {pid!r}"
                    for pid in self.points.missing(needed)]
        problems += [f"{self.points.source}: {pid} is not a writable coil or register"
                     for pid in needed if pid in self.points and pid.split(".")[-1] not in
                     ("running", "trip") and not self.points[pid].writable]
        if not self.cdus and not self.hps and not self.pumps:
            problems.append(f"{self.points.source}: no CDUs, heat pumps or facility pumps")
        if problems:
            raise ConfigError(problems)

    def needs(self) -> list[str]:
        """Point ids to read this period."""
        ids = [TIME_POINT] if TIME_POINT in self.points else []
        for c in self.cdus:
            ids += c.spots + [p for p in (c.level, c.makeup, c.low_level) if p]
        for h in self.hps:
            ids += [f"{h}.running", *self.points.trips(h)]
            ids += [p for p in (f"{h}.lockout",) if p in self.points]
        for p in self.pumps:
            ids += [f"{p}.running", f"{p}.trip", f"{p}.enable"]
        return [*ids, *self.hold]

    def step(self, t: float, v: dict[str, float]) -> list[Action]:
        """Decide at simulated time ``t`` from the values read; update the holds.

        A part whose inputs were not read (the rig refused that request) waits for the
        next period: a missing value is never taken for a zero.
        """
        actions = self._reassert(v)
        actions += self._leaks(t, v)
        if all(p in v for p in self._hp_inputs):
            actions += self._heat_pumps(t, v)
            self._first = False
        if all(p in v for p in self._pump_inputs):
            actions += self._pumps(v)
        for action in actions:
            if action.hold:
                for pid, value in action.writes:
                    self.hold[pid] = value
                    self._mismatch.pop(pid, None)
        return actions

    def refused(self, point_id: str) -> None:
        """The rig refused a write for good (illegal address or value): stop holding it."""
        self.hold.pop(point_id, None)
        self._mismatch.pop(point_id, None)

    # -- holds --------------------------------------------------------------------------
    def _reassert(self, v: dict[str, float]) -> list[Action]:
        writes, notes = [], []
        for pid, want in self.hold.items():
            got = v.get(pid, math.nan)
            if not math.isfinite(got) or abs(got - want) < 1e-6:
                self._mismatch.pop(pid, None)
                continue
            self._mismatch[pid] = self._mismatch.get(pid, 0) + 1
            if self._mismatch[pid] >= 2:
                writes.append((pid, want))
                notes.append(f"{pid}={want:g} (read {got:g})")
        if not writes:
            return []
        writes.sort(key=lambda w: w[0].endswith(".hand"))  # value before its hand switch
        return [Action("re-assert " + ", ".join(notes), writes)]

    # -- leaks --------------------------------------------------------------------------
    def _leaks(self, t: float, v: dict[str, float]) -> list[Action]:
        actions = []
        for cdu in self.cdus:
            if cdu.handled or not all(p in v for p in cdu.inputs):
                continue
            reason = cdu.check(t, v, self.s)
            if reason is None:
                continue
            cdu.handled = True
            n = cdu.name
            writes: list[tuple[str, float]] = []
            if self.s.variant != "no-isolate":
                writes += [(f"{n}.isolate", 1.0), (f"{n}.isolate.hand", 1.0)]
                what = f"isolate {n}, disable its make-up"
            else:
                what = f"disable the make-up of {n}"
            writes += [(f"{n}.makeup_enable", 0.0), (f"{n}.makeup_enable.hand", 1.0)]
            actions.append(Action(f"leak on {n} ({reason}): {what}", writes))
        return actions

    # -- heat pumps ---------------------------------------------------------------------
    def _heat_pumps(self, t: float, v: dict[str, float]) -> list[Action]:
        if not self.hps:
            return []
        actions: list[Action] = []
        running = {h: v.get(f"{h}.running", 0.0) >= 0.5 for h in self.hps}
        trips = {h: [p.rsplit(".", 1)[1] for p in self.points.trips(h) if v.get(p, 0.0) >= 0.5]
                 for h in self.hps}
        tripped = {h: bool(trips[h]) for h in self.hps}
        lockout = {h: v.get(f"{h}.lockout", 0.0) >= 0.5 for h in self.hps}
        before = running if self._first else self.prev_running
        new = [h for h in self.hps if tripped[h] and not self.prev_tripped.get(h, False)]
        for h in new:
            actions.append(Action(f"{h} tripped ({', '.join(trips[h])})"))
            if h not in self.reset_done and h not in self.reset_at:
                self.reset_at[h] = t + self.s.reset_delay_s
        if new and not self.hp_control:
            self.hp_control = True
            self.hp_wanted = max(1, sum(before.values()))
            actions.append(Action(f"taking the heat-pump enables in hand, keeping "
                                  f"{self.hp_wanted} unit(s) enabled"))
        if self.hp_control:
            actions += self._stage(running, tripped, lockout)
        if self.s.variant == "reset-loop":
            actions += self._reset_loop(t, tripped)
        else:
            actions += self._resets(t, tripped)
        self.prev_running, self.prev_tripped = running, tripped
        return actions

    def _stage(self, running: dict[str, bool], tripped: dict[str, bool],
               lockout: dict[str, bool]) -> list[Action]:
        healthy = [h for h in self.hps if not tripped[h] and not lockout[h]]
        keep = [h for h in healthy if self.hp_enabled.get(h, 0.0) >= 0.5]
        rest = sorted((h for h in healthy if h not in keep), key=lambda h: not running[h])
        chosen = (keep + rest)[:self.hp_wanted]
        desired = {h: 1.0 if h in chosen else 0.0 for h in self.hps}
        changed = [h for h in self.hps if self.hp_enabled.get(h) != desired[h]]
        self.hp_enabled = desired
        if not changed:
            return []
        writes = []
        notes = []
        for h in changed:
            writes += [(f"{h}.enable", desired[h]), (f"{h}.enable.hand", 1.0)]
            why = "tripped" if tripped[h] else "locked out" if lockout[h] else \
                "running" if running[h] else "standby"
            notes.append(f"{'enable' if desired[h] else 'disable'} {h} ({why})")
        text = "heat pumps: " + ", ".join(notes)
        if len(chosen) < self.hp_wanted:
            text += f"; only {len(chosen)} of {self.hp_wanted} wanted unit(s) healthy"
        return [Action(text, writes)]

    def _resets(self, t: float, tripped: dict[str, bool]) -> list[Action]:
        actions = []
        for h, due in list(self.reset_at.items()):
            if t < due:
                continue
            del self.reset_at[h]
            if not tripped[h]:
                actions.append(Action(f"{h} trip cleared before its automatic reset"))
                continue
            self.reset_done.add(h)
            self.verify_at[h] = t + self.s.reset_verify_s
            actions.append(Action(f"reset {h} (the one automatic attempt, "
                                  f"{self.s.reset_delay_s:g} s after the trip)",
                                  [(f"{h}.reset", 1.0), (f"{h}.reset.hand", 1.0)], hold=False))
        for h, due in list(self.verify_at.items()):
            if t < due:
                continue
            del self.verify_at[h]
            if tripped[h]:
                actions.append(Action(f"{h} still tripped after its reset; no further "
                                      "automatic reset"))
            else:
                actions.append(Action(f"{h} reset cleared the trip; {h} is a healthy standby"))
        return actions

    def _reset_loop(self, t: float, tripped: dict[str, bool]) -> list[Action]:
        """Variant reset-loop: reset every tripped unit every RESET_LOOP_S, no limit."""
        actions = []
        for h in self.hps:
            if tripped[h] and t - self.loop_reset.get(h, -math.inf) >= RESET_LOOP_S:
                self.loop_reset[h] = t
                actions.append(Action(f"reset {h}", [(f"{h}.reset", 1.0),
                                                     (f"{h}.reset.hand", 1.0)], hold=False))
        return actions

    # -- facility pumps -----------------------------------------------------------------
    def _pumps(self, v: dict[str, float]) -> list[Action]:
        actions = []
        trip = {p: v.get(f"{p}.trip", 0.0) >= 0.5 for p in self.pumps}
        enabled = {p: v.get(f"{p}.enable", 0.0) >= 0.5 or self.hold.get(f"{p}.enable") == 1.0
                   for p in self.pumps}
        for p in self.pumps:
            if not trip[p] or self.pump_tripped.get(p, False):
                continue
            standby = [q for q in self.pumps if q != p and not trip[q] and not enabled[q]]
            if standby and self.s.variant == "no-standby":
                actions.append(Action(f"{p} tripped: standby {standby[0]} left off"))
            elif standby:
                q = standby[0]
                enabled[q] = True
                actions.append(Action(f"{p} tripped: enable standby {q}",
                                      [(f"{q}.enable", 1.0), (f"{q}.enable.hand", 1.0)]))
            else:
                others = [q for q in self.pumps if q != p and not trip[q]]
                actions.append(Action(f"{p} tripped: no standby to enable ("
                                      f"{', '.join(others) or 'no other healthy pump'} "
                                      "already enabled)"))
        self.pump_tripped = trip
        return actions


def _opt(points: PointMap, pid: str) -> str | None:
    return pid if pid in points else None


# --------------------------------------------------------------------------- Modbus


class ModbusLink:
    """A synchronous Modbus TCP client for the rig (one request at a time)."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port = host, port
        self.client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0,
                                      reconnect_delay=0)
        self.refused_reads = 0

    @property
    def where(self) -> str:
        """``host:port`` for messages."""
        return f"{self.host}:{self.port}"

    def connect(self) -> bool:
        """Open the connection; False when the rig does not answer."""
        self.client.close()
        try:
            return bool(self.client.connect())
        except (ModbusException, OSError):
            return False

    def close(self) -> None:
        """Close the connection."""
        self.client.close()

    def read(self, blocks: Sequence[ReadBlock]) -> dict[str, float]:
        """Values of every block's points; a block the rig refuses is left out."""
        values: dict[str, float] = {}
        for b in blocks:
            fn = {"coils": self.client.read_coils,
                  "discrete_inputs": self.client.read_discrete_inputs,
                  "holding_registers": self.client.read_holding_registers,
                  "input_registers": self.client.read_input_registers}[b.table]
            resp = self._call(fn, b.start, count=b.count, device_id=b.unit_id)
            if resp.isError():
                self.refused_reads += 1
                log.debug("read of unit %d %s %d+%d refused: %s", b.unit_id, b.table, b.start,
                          b.count, resp)
                continue
            raw = resp.bits[:b.count] if b.table in ("coils", "discrete_inputs") \
                else resp.registers
            values.update(b.decode(raw))
        return values

    def write(self, point: PointInfo, value: float) -> int | None:
        """Write one point; None when accepted, else the exception code of the refusal."""
        if point.bits:
            resp = self._call(self.client.write_coil, point.address, bool(value),
                              device_id=point.unit_id)
        elif point.count == 1:
            resp = self._call(self.client.write_register, point.address,
                              point.encode(value)[0], device_id=point.unit_id)
        else:
            resp = self._call(self.client.write_registers, point.address, point.encode(value),
                              device_id=point.unit_id)
        if not resp.isError():
            return None
        return int(getattr(resp, "exception_code", 0) or 0)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ModbusException, OSError) as exc:
            raise LinkLost(str(exc) or type(exc).__name__) from exc


# --------------------------------------------------------------------------- the loop


class Controller:
    """Polls the rig, runs `PlantLogic`, writes its actions and the heartbeats."""

    def __init__(self, link: ModbusLink, points: PointMap, settings: Settings,
                 stop: threading.Event | None = None) -> None:
        self.link = link
        self.points = points
        self.s = settings
        self.logic = PlantLogic(points, settings)
        self.stop = stop or threading.Event()
        devices = [c.name for c in self.logic.cdus] + self.logic.hps + \
            (["facility"] if self.logic.pumps else [])
        self.heartbeats = [f"{d}.heartbeat" for d in devices if f"{d}.heartbeat" in points
                           and points[f"{d}.heartbeat"].writable]
        self.beat = 0
        self._t0 = time.monotonic()
        self._sim_from_rig = TIME_POINT in points
        self._refusing: set[str] = set()
        self._last_t = math.nan  # rig.sim_time of the last cycle (lockstep)
        if settings.lockstep and not self._sim_from_rig:
            raise ConfigError(f"lockstep needs {TIME_POINT} in the point list")
        self._time_reads = plan_reads([points[TIME_POINT]]) if self._sim_from_rig else []

    def run(self) -> int:
        """Run until stopped (0) or until no period succeeded for ``give_up_s`` (3).

        Connection failures are retried with a backoff of at most 30 simulated seconds
        (0.5-5 s wall); a connection the rig accepts and drops at once counts as a failure.
        """
        period = self.s.effective_period_s
        log.info("controller (%s): rig %s, %d CDUs, %d heat pumps, %d facility pumps, "
                 "%d heartbeats, period %.3g s wall, times from %s", self.s.variant,
                 self.link.where, len(self.logic.cdus), len(self.logic.hps),
                 len(self.logic.pumps), len(self.heartbeats), period,
                 TIME_POINT if self._sim_from_rig else f"wall clock x {self.s.speed:g}")
        max_backoff = min(5.0, max(0.5, 30.0 / self.s.speed))
        last_ok = time.monotonic()
        backoff, connected, lost, why = 0.25, False, False, "no connection"
        next_cycle = time.monotonic()
        while not self.stop.is_set():
            if not connected:
                connected = self.link.connect()
            if connected:
                try:
                    if self.s.lockstep and not self.next_slice():
                        break
                    self.cycle()
                except LinkLost as exc:
                    connected, why = False, str(exc)
                    if self.stop.is_set():
                        break  # the rig is going down with us
                    if not lost:
                        log.warning("lost the rig at %s: %s", self.link.where, exc)
                    lost = True
                else:
                    if lost:
                        log.info("the rig at %s answers again", self.link.where)
                    last_ok, backoff, lost = time.monotonic(), 0.25, False
                    if self.s.lockstep:
                        continue
                    next_cycle = max(next_cycle + period, time.monotonic() - period)
                    self.stop.wait(max(0.0, next_cycle - time.monotonic()))
                    continue
            waited = time.monotonic() - last_ok
            if waited >= self.s.give_up_s:
                print(f"controller: the rig at {self.link.where} has not answered for "
                      f"{waited:.0f} s ({why}); giving up", file=sys.stderr, flush=True)
                return EXIT_RIG_GONE
            self.stop.wait(min(backoff, self.s.give_up_s - waited))
            backoff = min(backoff * 2, max_backoff)
            next_cycle = time.monotonic()
        log.info("controller stopped")
        return EXIT_OK

    def next_slice(self) -> bool:
        """Lockstep: wait until ``rig.sim_time`` differs from the last cycle's; False
        when stopped first."""
        while not self.stop.is_set():
            t = self.link.read(self._time_reads).get(TIME_POINT, math.nan)
            if t != self._last_t and math.isfinite(t):
                return True
            self.stop.wait(LOCKSTEP_POLL_S)
        return False

    def cycle(self) -> None:
        """One period: read, decide, write actions, write heartbeats."""
        values = self.link.read(plan_reads(self.points[p] for p in self.logic.needs()))
        t = self._last_t = self.sim_time(values)
        for action in self.logic.step(t, values):
            actions_log.info("%s %s", self.stamp(t), action.text)
            for pid, value in action.writes:
                self._write(pid, value)
        self.beat = self.beat % HEARTBEAT_MAX + 1
        for pid in self.heartbeats:
            self._write(pid, self.beat)

    def _write(self, pid: str, value: float) -> None:
        """Write one point; a refusal is logged once until that point is accepted again."""
        code = self.link.write(self.points[pid], value)
        if code is None:
            self._refusing.discard(pid)
            return
        if code in PERMANENT_REFUSALS:
            self.logic.refused(pid)
        if pid not in self._refusing:
            self._refusing.add(pid)
            log.warning("write %s = %g refused by the rig (exception %d)%s", pid, value, code,
                        "" if code in PERMANENT_REFUSALS else "; retried from the read-back")

    def sim_time(self, values: dict[str, float]) -> float:
        """Simulated seconds: the rig's ``rig.sim_time``, else wall seconds x speed."""
        t = values.get(TIME_POINT, math.nan)
        if self._sim_from_rig and math.isfinite(t):
            return t
        return (time.monotonic() - self._t0) * self.s.speed

    def stamp(self, t: float) -> str:
        """The time stamp of an action line."""
        if self._sim_from_rig:
            return f"t={t:.1f}s"
        return f"wall={datetime.now(UTC).isoformat(timespec='milliseconds')}"


# --------------------------------------------------------------------------- CLI


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; ValueError."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"--modbus {text!r}: expected HOST:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "127.0.0.1", int(port)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m rig.sut.controller",
                                description="Reference plant controller (Modbus TCP client).")
    p.add_argument("--modbus", required=True, metavar="HOST:PORT")
    p.add_argument("--points", required=True, metavar="POINTS.json",
                   help="the rig's exported point list (JSON)")
    p.add_argument("--variant", choices=VARIANTS, default="reference")
    p.add_argument("--period", type=float, default=1.0, help="wall seconds per cycle")
    p.add_argument("--speed", type=float, default=1.0,
                   help="the rig's speed (simulated seconds per wall second)")
    p.add_argument("--max-sim-step", type=float, default=10.0,
                   help="longest cycle in simulated seconds (shortens --period)")
    p.add_argument("--reset-delay", type=float, default=300.0,
                   help="simulated seconds from a heat-pump trip to its one reset "
                   "(default 300, the anti-short-cycle time)")
    p.add_argument("--confirm", type=float, default=30.0,
                   help="simulated seconds the level evidence must last")
    p.add_argument("--give-up", type=float, default=30.0,
                   help="wall seconds without the rig before exiting (status 3)")
    p.add_argument("--timeout", type=float, default=2.0, help="wall seconds per request")
    p.add_argument("--lockstep", action="store_true",
                   help="one cycle per slice the rig serves (heatrig run --mode lockstep)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    for name in ("period", "speed", "max_sim_step", "give_up", "timeout"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if args.reset_delay < 0 or args.confirm < 0:
        p.error("--reset-delay and --confirm must be >= 0")
    return args


def setup_logging(level: str) -> None:
    """Diagnostics on stderr, one action per line on stdout."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    actions_log.addHandler(out)
    actions_log.propagate = False
    actions_log.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        host, port = parse_endpoint(args.modbus)
        points = PointMap.load(args.points)
        settings = Settings(variant=args.variant, period_s=args.period, speed=args.speed,
                            max_sim_step_s=args.max_sim_step, reset_delay_s=args.reset_delay,
                            confirm_s=args.confirm, give_up_s=args.give_up,
                            timeout_s=args.timeout, lockstep=args.lockstep)
        stop = threading.Event()
        controller = Controller(ModbusLink(host, port, settings.timeout_s), points, settings,
                                stop)
    except (ConfigError, ValueError) as exc:
        print(f"controller: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        return controller.run()
    finally:
        controller.link.close()


if __name__ == "__main__":
    sys.exit(main())
