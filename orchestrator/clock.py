"""Server time for GetNTPTime: an NTP offset refreshed in the background, never awaited by a command.

Clients synchronise their playout to this clock, so a GetNTPTime must answer at once: the offset
from the first answering source in the configured list is cached and applied to the local clock.
`localtime` in the list is a source that always answers with offset 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import ntplib

log = logging.getLogger("orchestrator.clock")

LOCALTIME = "localtime"


@dataclass(frozen=True, slots=True)
class Reading:
    offset_s: float
    source: str
    taken_at: float  # monotonic


def parse_source(entry: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 literal → (host, port)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 123
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, 123


class NtpClock:
    def __init__(self, sources: list[str], *, timeout_s: float = 1.0, refresh_s: float = 300.0,
                 max_age_s: float = 3600.0) -> None:
        self.sources = list(sources)
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self.max_age_s = max_age_s
        self.reading: Reading | None = None
        self._task: asyncio.Task[None] | None = None

    def now_ms(self) -> int | None:
        """Milliseconds since the epoch by the best known source, or None when no source works."""
        reading = self.reading
        if reading is not None and time.monotonic() - reading.taken_at <= self.max_age_s:
            return int((time.time() + reading.offset_s) * 1000)
        if self._localtime_first_resort():
            return int(time.time() * 1000)
        return None

    def _localtime_first_resort(self) -> bool:
        # Until the network sources have been asked, `localtime` stands in (if configured).
        return LOCALTIME in self.sources

    def query_once(self) -> Reading | None:
        """Ask the sources in order (blocking); the first that answers wins."""
        client = ntplib.NTPClient()
        for entry in self.sources:
            if entry == LOCALTIME:
                return Reading(0.0, LOCALTIME, time.monotonic())
            try:
                host, port = parse_source(entry)
                response = client.request(host, port=port, version=3, timeout=self.timeout_s)
            except (ntplib.NTPException, OSError, ValueError) as exc:
                log.debug("NTP source %s failed: %s", entry, exc)
                continue
            return Reading(response.offset, entry, time.monotonic())
        return None

    async def refresh(self) -> None:
        reading = await asyncio.to_thread(self.query_once)
        if reading is None:
            log.warning("no NTP source answered (%s)", ", ".join(self.sources) or "none configured")
            return
        if self.reading is None or self.reading.source != reading.source:
            log.info("time source %s, offset %.3f s", reading.source, reading.offset_s)
        self.reading = reading

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.refresh_s)

    def start(self) -> None:
        if self._task is None and self.sources:
            self._task = asyncio.create_task(self._run(), name="ntp-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
