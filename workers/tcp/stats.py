"""Counters the control endpoint reports, and log rate limiting.

Per-frame events (drops, hand-offs) only bump counters; the worker logs summaries of them at
most every few seconds, so a hostile or broken client cannot flood the log.
"""

from __future__ import annotations

import logging
import os
from array import array

DROP_REASONS = ("queue_frames", "queue_bytes", "streams", "disconnect")
CLOSE_REASONS = ("peer", "error", "malformed_header", "too_large", "truncated", "header_timeout",
                 "idle_timeout", "lagging", "connection_cap", "shutdown")


class LatencyWindow:
    """The most recent hand-off latencies (seconds), for p50/p99 without unbounded memory."""

    def __init__(self, size: int = 8192) -> None:
        self._buf = array("d", bytes(8 * size))
        self._size = size
        self._n = 0

    def add_batch(self, now: float, frames: list) -> None:
        """Record ``now - t_read`` for every frame handed over together at ``now``."""
        buf, size, n = self._buf, self._size, self._n
        for frame in frames:
            buf[n % size] = now - frame.t_read
            n += 1
        self._n = n

    def summary(self) -> dict[str, float | int | None]:
        n = min(self._n, self._size)
        samples = sorted(self._buf[:n])
        if not samples:
            return {"p50_ms": None, "p99_ms": None, "max_ms": None, "samples": 0}

        def pick(q: float) -> float:
            return round(samples[min(n - 1, int(q * n))] * 1000, 3)

        return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": pick(1.0), "samples": n}


class LogLimiter:
    """Lets ``budget`` lines through per summary interval and counts the rest."""

    def __init__(self, log: logging.Logger, budget: int = 10) -> None:
        self._log = log
        self._budget = budget
        self._left = budget
        self.suppressed = 0

    def __call__(self, level: int, msg: str, *args: object) -> None:
        if self._left > 0:
            self._left -= 1
            self._log.log(level, msg, *args)
        else:
            self.suppressed += 1

    def flush(self) -> None:
        if self.suppressed:
            self._log.warning("%d similar connection messages suppressed", self.suppressed)
        self.suppressed = 0
        self._left = self._budget


def rss_bytes() -> int | None:
    """Resident memory of this process, cheaply, for /stats (None where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
