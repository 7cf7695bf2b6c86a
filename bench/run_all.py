"""Run every benchmark in turn (``make bench``); each prints its own figures."""

from __future__ import annotations

import subprocess
import sys

BENCHES = ["bench.bench_twin", "bench.bench_cycle", "bench.bench_live", "bench.bench_modbus",
           "bench.bench_mqtt", "bench.bench_store"]


def main() -> int:
    failed = []
    for name in BENCHES:
        print(f"\n=== python -m {name}", flush=True)
        if subprocess.run([sys.executable, "-m", name]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
