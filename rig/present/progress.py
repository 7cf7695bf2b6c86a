"""A dependency-free progress bar for long offline runs (stderr)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws one line on a terminal; elsewhere prints a line every 10 %."""

    def __init__(self, total_s: float, label: str, stream: TextIO | None = None) -> None:
        self.total = total_s
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, sim_s: float) -> None:
        """Report progress at simulated time sim_s (s)."""
        now = time.perf_counter()
        fraction = min(1.0, sim_s / self.total) if self.total > 0 else 1.0
        elapsed = now - self.start
        speed = sim_s / elapsed if elapsed > 0 else 0.0
        if self.tty:
            if now - self._last_draw < 0.2 and fraction < 1.0:
                return
            self._last_draw = now
            bar = "#" * int(30 * fraction)
            self.stream.write(f"\r{self.label} [{bar:<30}] {100 * fraction:5.1f}%  "
                              f"{sim_s / 3600:6.2f} h simulated  {speed:8.0f}x real time")
            if fraction >= 1.0:
                self.stream.write("\n")
            self.stream.flush()
        else:
            decile = int(fraction * 10)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(f"{self.label}: {100 * fraction:.0f}% "
                                  f"({sim_s / 3600:.2f} h simulated, {speed:.0f}x)\n")
                self.stream.flush()
