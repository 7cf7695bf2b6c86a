"""MQTT topic layout, shared by the MQTT adapter, the point list and the dashboards.

    <prefix>/<site>/status                  retained: online/offline (last will)
    <prefix>/<site>/<device>/telemetry      one JSON message per device and sample period
    <prefix>/<site>/<device>/alarm          alarm raised/cleared messages
    <prefix>/<site>/<device>/cmd/<point>    commands to a writable point (JSON)
    <prefix>/<site>/<device>/reply          answers to commands (accepted or refused)
    <prefix>/<site>/rig/step                lockstep: {"step": n, "t": s} after each slice
    <prefix>/<site>/sut/<name>/ack          lockstep: a system under test answers {"step": n}
"""

from __future__ import annotations


def base(prefix: str, site: str) -> str:
    """Topic root of one site."""
    return f"{prefix}/{site}"


def status(prefix: str, site: str) -> str:
    """Retained online/offline status of the rig (also its last will)."""
    return f"{base(prefix, site)}/status"


def telemetry(prefix: str, site: str, device: str) -> str:
    """Telemetry topic of one device."""
    return f"{base(prefix, site)}/{device}/telemetry"


def alarm(prefix: str, site: str, device: str) -> str:
    """Alarm topic of one device."""
    return f"{base(prefix, site)}/{device}/alarm"


def command(prefix: str, site: str, device: str, point_id: str) -> str:
    """Command topic of one writable point."""
    return f"{base(prefix, site)}/{device}/cmd/{point_id}"


def reply(prefix: str, site: str, device: str) -> str:
    """Reply topic where the rig answers commands of one device."""
    return f"{base(prefix, site)}/{device}/reply"


def step(prefix: str, site: str) -> str:
    """Lockstep: where the rig announces each slice it has served."""
    return f"{base(prefix, site)}/rig/step"


def ack(prefix: str, site: str, name: str) -> str:
    """Lockstep: where system under test ``name`` answers a served slice."""
    return f"{base(prefix, site)}/sut/{name}/ack"


def command_filter(prefix: str, site: str) -> str:
    """Subscription filter matching every command topic of a site."""
    return f"{base(prefix, site)}/+/cmd/#"


def parse_command(prefix: str, site: str, topic: str) -> tuple[str, str] | None:
    """``(device, point_id)`` of a command topic of this site, or None if it is not one.

    The point id is everything after ``cmd/`` (it may be empty or hold a ``/``; the
    caller refuses such ids as unknown points). A device holding a control character is
    not one: the reply topic is built from it.
    """
    root = base(prefix, site) + "/"
    if not topic.startswith(root):
        return None
    parts = topic[len(root):].split("/", 2)
    if len(parts) != 3 or parts[1] != "cmd" or not parts[0] or not parts[0].isprintable():
        return None
    return parts[0], parts[2]
