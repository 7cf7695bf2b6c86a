"""Reference leak detector: an MQTT client watching the rig's CDU telemetry.

    python -m rig.sut.leak_detector --mqtt mqtt://HOST:PORT --prefix P --site S
        [--variant VARIANT] [--threshold 0.01] [--window 60] [--heartbeat 10]
        [--reservoir-area 0.25] [--density 990] [--name leak_detector]

It subscribes to ``<prefix>/<site>/+/telemetry`` and follows every device whose telemetry
has ``<device>.reservoir_level`` (the CDUs):

* **spot sensors** -- ``<device>.leak`` and ``<device>.rackMM.leak``: a wet one is a leak at
  that location (``cdu1.rack03``, or ``cdu1`` for the sensor under the CDU);
* **level decay** -- a mass balance of the reservoir over the last ``--window`` seconds of
  telemetry time: with y(t) = density x area x level(t) - (make-up mass added since the
  start), the least-squares slope of y is minus the leak rate (kg/s), whether or not the
  make-up runs. A leak is declared when the estimate exceeds ``--threshold`` for
  ``CONFIRM`` messages in a row, with at least 90 % of the window in the history.

It publishes (QoS 1, not retained) on ``<prefix>/<site>/sut/<name>/alarm``, once per
device and incident::

    {"alarm": "leak", "device": "cdu1", "location": "cdu1.rack03" | "cdu1",
     "reason": "spot sensor" | "level decay", "t": <telemetry sim time>, "rate_kg_s": x}

and ``{"alarm": "clear", ...}`` (same fields, ``t`` and ``rate_kg_s`` of now) when no spot
sensor is wet and the estimate stayed below half the threshold for ``CONFIRM`` messages.
In a ``leak`` alarm ``rate_kg_s`` is the rate since the onset: the best fit over the
history of a level that holds and then falls at a constant rate (rough when a spot sensor
alarms seconds after the onset: the level has barely moved). In a ``clear`` it is the
window's mean rate. Null when the history is too short. Its status ``online``/``offline`` is
retained on ``<prefix>/<site>/sut/<name>/status`` (``offline`` is also the last will);
``online`` is sent once the subscription is acknowledged.

As a sign of life it publishes ``{"t": <telemetry sim time>}`` on
``<prefix>/<site>/sut/<name>/heartbeat`` every ``--heartbeat`` seconds of telemetry time
(after the telemetry message that crosses it was processed).

Lockstep: it answers each of the rig's ``{"step": n}`` on ``<prefix>/<site>/rig/step``
with ``{"step": n}`` on ``<prefix>/<site>/sut/<name>/ack``, once every message before the
announcement (the slice's telemetry) has been handled.

Defect variants: ``high-threshold`` ignores the spot sensors and uses 100 x the threshold,
so it misses slow leaks; ``alarm-flood`` re-publishes an open leak alarm with every
telemetry message of that CDU. No exception in a callback stops the network loop; paho reconnects
with backoff; SIGTERM/SIGINT publish ``offline`` and exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from rig.sut import LEAK_DETECTOR_VARIANTS

log = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = LEAK_DETECTOR_VARIANTS
HEARTBEAT_S = 10.0  # telemetry seconds between heartbeats
LEVEL_KEY = b'.reservoir_level"'  # in the telemetry of every device the detector follows
HIGH_THRESHOLD_FACTOR = 100.0
RESERVOIR_AREA = 0.25  # m2, the site default (twin.site.CDU.reservoir_area)
WATER_DENSITY = 990.0  # kg/m3, as the twin (twin.water.RHO_WATER)
CONFIRM = 3  # telemetry messages in a row
MIN_ESTIMATE_SPAN_S = 10.0
MAX_PAYLOAD_BYTES = 1 << 20
_RACK_LEAK = re.compile(r"^(.+)\.(rack\d+)\.leak$")


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """Detection parameters (SI)."""

    variant: str = "reference"  # one of VARIANTS
    threshold_kg_s: float = 0.01
    window_s: float = 60.0
    reservoir_area_m2: float = RESERVOIR_AREA
    density_kg_m3: float = WATER_DENSITY

    @property
    def use_spot_sensors(self) -> bool:
        """Every variant but ``high-threshold`` uses the spot sensors."""
        return self.variant != "high-threshold"

    @property
    def effective_threshold(self) -> float:
        """Leak-rate threshold in use (kg/s)."""
        factor = HIGH_THRESHOLD_FACTOR if self.variant == "high-threshold" else 1.0
        return self.threshold_kg_s * factor


@dataclass(slots=True)
class Incident:
    """An alarm raised and not yet cleared."""

    location: str
    reason: str
    t: float


@dataclass(slots=True)
class Reservoir:
    """Telemetry history of one CDU and its leak state."""

    device: str
    samples: deque[tuple[float, float]] = field(default_factory=deque)  # (t, y kg)
    makeup_mass: float = 0.0  # kg added since the history started
    last: tuple[float, float] | None = None  # (t, make-up kg/s) of the previous message
    over: int = 0  # messages in a row above the threshold
    quiet: int = 0  # messages in a row without evidence (while an incident is open)
    incident: Incident | None = None

    def reset(self) -> None:
        """Forget the history (time went backwards or a long gap)."""
        self.samples.clear()
        self.makeup_mass = 0.0
        self.last = None
        self.over = 0

    def add(self, t: float, level: float | None, makeup: float | None, s: DetectorSettings) -> None:
        """Add one telemetry sample (level m, make-up kg/s; None when missing)."""
        rate = makeup if makeup is not None and math.isfinite(makeup) else 0.0
        if self.last is not None:
            t0, r0 = self.last
            if t0 - s.window_s <= t <= t0:
                return  # a repeated or late message
            if t < t0 or t - t0 > s.window_s:
                self.reset()  # the rig restarted, or a long gap
            else:
                self.makeup_mass += 0.5 * (r0 + rate) * (t - t0)
        self.last = (t, rate)
        if level is not None and math.isfinite(level):
            mass = s.density_kg_m3 * s.reservoir_area_m2 * level
            self.samples.append((t, mass - self.makeup_mass))
        while self.samples and t - self.samples[0][0] > s.window_s:
            self.samples.popleft()

    def span(self) -> float:
        """Telemetry time covered by the history (s)."""
        return self.samples[-1][0] - self.samples[0][0] if len(self.samples) > 1 else 0.0

    def leak_rate(self) -> float | None:
        """Least-squares leak rate over the history (kg/s), None with under 10 s of it."""
        if self.span() < MIN_ESTIMATE_SPAN_S:
            return None
        n = len(self.samples)
        mt = sum(t for t, _ in self.samples) / n
        my = sum(y for _, y in self.samples) / n
        sxx = sum((t - mt) ** 2 for t, _ in self.samples)
        sxy = sum((t - mt) * (y - my) for t, y in self.samples)
        return -sxy / sxx if sxx > 0 else None


    def onset_rate(self) -> float | None:
        """Leak rate since its onset (kg/s): the best fit of a level that holds, then falls
        at a constant rate from one of the samples on; None with under 3 samples."""
        pts = list(self.samples)
        if len(pts) < 3:
            return None
        best: tuple[float, float] | None = None
        for k in range(len(pts) - 1):
            tk = pts[k][0]
            xs = [max(0.0, t - tk) for t, _ in pts]
            mx = sum(xs) / len(xs)
            my = sum(y for _, y in pts) / len(pts)
            sxx = sum((x - mx) ** 2 for x in xs)
            if sxx <= 0:
                continue
            slope = sum((x - mx) * (y - my) for x, (_, y) in zip(xs, pts, strict=True)) / sxx
            sse = sum((y - my - slope * (x - mx)) ** 2 for x, (_, y) in zip(xs, pts, strict=True))
            if best is None or sse < best[0] - 1e-12:
                best = (sse, -slope)
        return None if best is None else best[1]


class LeakDetector:
    """Detection logic: telemetry messages in, alarm payloads out (no I/O)."""

    def __init__(self, settings: DetectorSettings) -> None:
        self.s = settings
        self.cdus: dict[str, Reservoir] = {}

    def telemetry(self, device: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Process one device's telemetry; return the alarm payloads to publish."""
        values = message.get("values")
        t = message.get("t")
        level_id = f"{device}.reservoir_level"
        if not isinstance(values, dict) or level_id not in values:
            return []
        if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
            raise ValueError(f"{device}: telemetry without a usable 't'")
        res = self.cdus.setdefault(device, Reservoir(device))
        res.add(float(t), _number(values.get(level_id)),
                _number(values.get(f"{device}.makeup_flow")), self.s)
        rate = res.leak_rate()
        threshold = self.s.effective_threshold
        wet = self._wet(device, values) if self.s.use_spot_sensors else []
        decaying = (rate is not None and rate > threshold
                    and res.span() >= 0.9 * self.s.window_s)
        res.over = res.over + 1 if decaying else 0
        if res.incident is None:
            if wet:
                return [self._raise(res, wet[0], "spot sensor", t, rate)]
            if res.over >= CONFIRM:
                return [self._raise(res, device, "level decay", t, rate)]
            return []
        if self.s.variant == "alarm-flood":
            inc = res.incident
            return [_payload("leak", device, inc.location, inc.reason, t, rate)]
        quiet = not wet and rate is not None and rate < threshold / 2
        res.quiet = res.quiet + 1 if quiet else 0
        if res.quiet >= CONFIRM:
            inc = res.incident
            res.incident = None
            log.info("leak on %s cleared at t=%g s", device, t)
            return [_payload("clear", device, inc.location, inc.reason, t, rate)]
        return []

    def _wet(self, device: str, values: dict[str, Any]) -> list[str]:
        """Locations of the wet spot sensors of a device."""
        wet = []
        for pid, value in values.items():
            if not pid.endswith(".leak") or not isinstance(value, int | float) or value < 0.5:
                continue
            if pid == f"{device}.leak":
                wet.append(device)
            elif (m := _RACK_LEAK.match(pid)) and m.group(1) == device:
                wet.append(f"{device}.{m.group(2)}")
        return sorted(wet, key=lambda loc: (loc == device, loc))

    def _raise(self, res: Reservoir, location: str, reason: str, t: float,
               rate: float | None) -> dict[str, Any]:
        res.incident = Incident(location, reason, t)
        res.quiet = 0
        onset = res.onset_rate()
        log.info("leak on %s at %s (%s) at t=%g s, rate %s kg/s since its onset, %s kg/s "
                 "over the window", res.device, location, reason, t, _fmt(onset), _fmt(rate))
        return _payload("leak", res.device, location, reason, t,
                        onset if onset is not None else rate)


def _payload(kind: str, device: str, location: str, reason: str, t: float,
             rate: float | None) -> dict[str, Any]:
    return {"alarm": kind, "device": device, "location": location, "reason": reason,
            "t": t, "rate_kg_s": None if rate is None else round(rate, 5)}


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4f}"


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


# --------------------------------------------------------------------------- MQTT


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and as whom the detector connects."""

    url: str
    prefix: str
    site: str
    name: str = "leak_detector"
    qos: int = 1
    keepalive_s: int = 30

    @property
    def base(self) -> str:
        """``<prefix>/<site>``."""
        return f"{self.prefix}/{self.site}"

    @property
    def alarm_topic(self) -> str:
        """Where alarms go."""
        return f"{self.base}/sut/{self.name}/alarm"

    @property
    def status_topic(self) -> str:
        """Retained online/offline status (and last will)."""
        return f"{self.base}/sut/{self.name}/status"

    @property
    def step_topic(self) -> str:
        """The rig's lockstep announcements of served slices."""
        return f"{self.base}/rig/step"

    @property
    def ack_topic(self) -> str:
        """Where this detector answers a lockstep slice."""
        return f"{self.base}/sut/{self.name}/ack"

    @property
    def heartbeat_topic(self) -> str:
        """Where the sign of life goes."""
        return f"{self.base}/sut/{self.name}/heartbeat"

    @property
    def telemetry_filter(self) -> str:
        """Subscription to every device's telemetry."""
        return f"{self.base}/+/telemetry"


def _no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    """Send small messages (alarms, lockstep acks) at once, not after the peer's delayed
    TCP acknowledgement of the previous segment (Nagle's algorithm: up to 40 ms each)."""
    with contextlib.suppress(OSError, AttributeError):  # not a plain TCP socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def parse_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` -> (host, port, tls); ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"--mqtt {url!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    tls = parts.scheme == "mqtts"
    return parts.hostname, parts.port or (8883 if tls else 1883), tls


class DetectorService:
    """The MQTT side: subscription, status, alarms; `LeakDetector` does the deciding."""

    def __init__(self, conn: Connection, detector: LeakDetector,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.conn = conn
        self.detector = detector
        self.heartbeat_s = heartbeat_s
        self.last_beat = -math.inf  # telemetry time of the last heartbeat
        self.host, self.port, tls = parse_url(conn.url)
        self.errors = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"heatrig-sut-{conn.name}-{os.getpid()}")
        if tls:
            self.client.tls_set()
        user = os.environ.get("HEATRIG_MQTT_USERNAME")
        if user:
            self.client.username_pw_set(user, os.environ.get("HEATRIG_MQTT_PASSWORD"))
        self.client.will_set(conn.status_topic, b"offline", qos=1, retain=True)
        # paho takes float seconds here; its annotation says int
        self.client.reconnect_delay_set(0.5, 10)  # type: ignore[arg-type]
        self.client.on_connect = self._guard(self._on_connect)
        self.client.on_subscribe = self._guard(self._on_subscribe)
        self.client.on_socket_open = _no_delay
        self.client.on_disconnect = self._guard(self._on_disconnect)
        self.client.on_message = self._guard(self._on_message)

    def start(self) -> None:
        """Connect in the background (paho retries until the broker answers)."""
        self.client.connect_async(self.host, self.port, keepalive=self.conn.keepalive_s)
        self.client.loop_start()
        log.info("leak detector (%s, threshold %g kg/s, window %g s) on %s:%d, alarms on %s",
                 self.detector.s.variant, self.detector.s.effective_threshold,
                 self.detector.s.window_s, self.host, self.port, self.conn.alarm_topic)

    def close(self, timeout: float = 5.0) -> None:
        """Publish ``offline``, disconnect, stop the network thread."""
        if self.client.is_connected():
            info = self.client.publish(self.conn.status_topic, b"offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("offline status not confirmed: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        def guarded(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                self.errors += 1
                log.exception("error in %s (the network loop continues)", fn.__name__)
        return guarded

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        client.subscribe([(self.conn.telemetry_filter, self.conn.qos),
                          (self.conn.step_topic, self.conn.qos)])
        log.info("connected, subscribing to %s", self.conn.telemetry_filter)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        client.publish(self.conn.status_topic, b"online", qos=1, retain=True)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if getattr(reason, "is_failure", True):
            log.warning("connection lost (%s); reconnecting", reason)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.conn.step_topic:  # lockstep: every earlier message is handled
            self._answer_step(client, msg.payload)
            return
        parts = msg.topic.split("/")
        if len(parts) < 2 or parts[-1] != "telemetry" or len(msg.payload) > MAX_PAYLOAD_BYTES:
            return
        if LEVEL_KEY not in msg.payload:  # not a CDU: skip the parse (most of the traffic)
            return
        try:
            message = json.loads(msg.payload)
        except ValueError:
            self.errors += 1
            log.warning("ignored a telemetry message that is not JSON on %s", msg.topic[:200])
            return
        if not isinstance(message, dict):
            return
        for alarm in self.detector.telemetry(parts[-2], message):
            client.publish(self.conn.alarm_topic, json.dumps(alarm), qos=self.conn.qos)
        t = message.get("t")
        if isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) and (
                t - self.last_beat >= self.heartbeat_s or t < self.last_beat):
            self.last_beat = float(t)
            client.publish(self.conn.heartbeat_topic, json.dumps({"t": t}), qos=0)


    def _answer_step(self, client: paho.Client, payload: bytes | bytearray) -> None:
        try:
            step = json.loads(payload)["step"]
        except (ValueError, KeyError, TypeError):
            self.errors += 1
            log.warning("ignored a malformed lockstep announcement")
            return
        if isinstance(step, int) and not isinstance(step, bool):
            client.publish(self.conn.ack_topic, json.dumps({"step": step}), qos=self.conn.qos)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m rig.sut.leak_detector",
                                description="Reference leak detector (MQTT client).")
    p.add_argument("--mqtt", required=True, metavar="URL", help="mqtt://HOST[:PORT]")
    p.add_argument("--prefix", required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--variant", choices=VARIANTS, default="reference")
    p.add_argument("--threshold", type=float, default=0.01,
                   help="leak rate that raises an alarm (kg/s; x100 in high-threshold)")
    p.add_argument("--window", type=float, default=60.0,
                   help="telemetry seconds of the level-decay estimate")
    p.add_argument("--reservoir-area", type=float, default=RESERVOIR_AREA, help="m2")
    p.add_argument("--density", type=float, default=WATER_DENSITY, help="kg/m3")
    p.add_argument("--heartbeat", type=float, default=HEARTBEAT_S,
                   help="telemetry seconds between heartbeats")
    p.add_argument("--name", default="leak_detector",
                   help="topic level under sut/ (run several detectors side by side)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    for name in ("threshold", "window", "reservoir_area", "density", "heartbeat"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", args.name):
        p.error("--name: 1-64 letters, digits, '_' or '-'")
    try:
        parse_url(args.mqtt)
    except ValueError as exc:
        p.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = DetectorSettings(variant=args.variant, threshold_kg_s=args.threshold,
                                window_s=args.window, reservoir_area_m2=args.reservoir_area,
                                density_kg_m3=args.density)
    service = DetectorService(Connection(args.mqtt, args.prefix, args.site, args.name),
                              LeakDetector(settings), args.heartbeat)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        service.close()
        log.info("leak detector stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
