"""Broker soak: kill and restart a real Mosquitto 20 times under a publishing MQTT adapter.

For each restart it measures the time from the broker being ready again to the first
telemetry message a subscriber receives, and reports min/median/max; it fails (exit 1) if
any exceeds 2 s or a message handed to the adapter was dropped or never confirmed. The
measurement is the one of ``tests/test_mqtt_hardening.py`` (5 restarts there).

    .venv/bin/python -m bench.soak_broker [--restarts 20] [--reconnect-max S]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from servers import Mosquitto  # tests/ holds the server harness
from test_mqtt_hardening import reconnect_times

BOUND_S = 2.0
DOWNTIMES_S = (0.2, 0.5, 1.0, 2.0, 3.2)  # outage lengths cycled through (s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=20, help="broker kills (default 20)")
    parser.add_argument("--reconnect-max", type=float, default=None,
                        help="cap of the reconnect backoff, s (default: MqttConfig's)")
    args = parser.parse_args(argv)
    if args.restarts < 1:
        parser.error("--restarts must be >= 1")
    config = {} if args.reconnect_max is None else {
        "reconnect_min_s": min(1.0, args.reconnect_max), "reconnect_max_s": args.reconnect_max}
    downtimes = [DOWNTIMES_S[i % len(DOWNTIMES_S)] for i in range(args.restarts)]
    with Mosquitto() as broker:
        times, stats = reconnect_times(broker, downtimes, **config)
    lost = stats["dropped"] + stats["sent"] - stats["published"]
    report = {
        "restarts": len(times),
        "reconnect_s": {"min": round(min(times), 3), "median": round(statistics.median(times), 3),
                        "max": round(max(times), 3)},
        "each_s": [round(t, 3) for t in times],
        "downtimes_s": downtimes,
        "messages": {"sent": stats["sent"], "confirmed": stats["published"],
                     "dropped": stats["dropped"], "reconnects": stats["reconnects"]},
    }
    r = report["reconnect_s"]
    print(f"{len(times)} broker restarts: reconnect to first telemetry min {r['min']:.3f} s, "
          f"median {r['median']:.3f} s, max {r['max']:.3f} s")
    print(json.dumps(report))
    ok = max(times) <= BOUND_S and lost == 0 and stats["reconnects"] == len(times)
    print(f"broker soak: {'clean' if ok else 'FAILED'} (bound {BOUND_S:g} s, lost {lost})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
