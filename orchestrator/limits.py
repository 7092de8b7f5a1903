"""Per-connection flood control: token buckets and an abuse counter.

Each connection gets its own buckets, so one flooding client is slowed and then cut off while
every other client keeps its full rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # bucket size
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def take(self, amount: float = 1.0) -> bool:
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens = self.burst
        else:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False


@dataclass(slots=True)
class AbuseCounter:
    """Counts refused inputs in a sliding window; `hit` says when the limit is crossed."""

    limit: int
    window_s: float
    count: int = 0
    window_start: float = field(default_factory=time.monotonic)

    def hit(self) -> bool:
        now = time.monotonic()
        if now - self.window_start > self.window_s:
            self.window_start = now
            self.count = 0
        self.count += 1
        return self.count == self.limit
