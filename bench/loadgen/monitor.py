"""What the server costs: CPU and RSS of its process tree (psutil), and its event-loop lag when
it publishes one on /metrics (any Prometheus series whose name contains `loop_lag`)."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import psutil

LAG_SERIES = re.compile(r"^(\w*loop_lag\w*)(?:\{[^}]*\})? ([-+0-9.eE]+|NaN)$", re.MULTILINE)


class ProcessTree:
    """A server pid and its children: workers it spawns count as the server's cost too."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def _members(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_s(self) -> float:
        total = 0.0
        for proc in self._members():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for proc in self._members():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total


class LagScraper:
    """Reads the server's own loop-lag series from /metrics; off once it answers without them."""

    def __init__(self, http: aiohttp.ClientSession, server_url: str) -> None:
        self.http, self.url = http, server_url.rstrip("/") + "/metrics"
        self.series: dict[str, list[float]] = {}
        self.available = True

    async def sample(self) -> None:
        if not self.available:
            return
        try:
            async with self.http.get(self.url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                text = await response.text() if response.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError):
            return  # a saturated server answers late: that is no reason to stop asking
        found = LAG_SERIES.findall(text)
        if not found and not self.series:
            self.available = False
        for name, value in found:
            self.series.setdefault(name, []).append(float(value))


async def sample(tree: ProcessTree, into: list[tuple[float, float, int]], period: float = 1.0) -> None:
    """(monotonic s, CPU s, RSS bytes) every period: the CPU slope shows when the server saturated."""
    while True:
        into.append((time.monotonic(), tree.cpu_s(), tree.rss_bytes()))
        await asyncio.sleep(period)
