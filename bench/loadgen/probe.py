"""The probe: one extra client timing acked commands and a message round trip while load runs.

It mirrors the published "round-trip delay on a test socket": a fixed schedule (not as fast as
possible), each operation alone on its own connection, so it measures how long an interactive
user waits while the background clients stream.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp

from .client import Client
from .generator import NS, session_spec, sleep_until

TIMEOUT_S = 5.0


class Probe:
    def __init__(self, http: aiohttp.ClientSession, url: str, interval: float = 0.1) -> None:
        self.client = Client(http, url, on_event=self._on_event)
        self.interval = interval
        self.command_ms: list[float] = []
        self.message_ms: list[float] = []
        self.timeouts = 0
        self.errors: list[str] = []
        self._waiting: dict[str, asyncio.Future] = {}
        self._serial = itertools.count()

    async def open(self) -> None:
        """Log in and sit alone in a session so GetSessionInfo and SendMessage-to-self work."""
        await self.client.open()
        await self.client.login("bench-probe")
        await self.client.call("AddSession", session_spec(-1))

    async def run(self, start_ns: int, end_ns: int) -> None:
        """One operation per tick, cycling command, command, message; late ticks are skipped."""
        operations = itertools.cycle((self._version, self._session_info, self._message))
        tick = 0
        while (due := start_ns + int(tick * self.interval * NS)) < end_ns:
            await sleep_until(due)
            operation = next(operations)
            try:
                async with asyncio.timeout(TIMEOUT_S):
                    await operation()
            except TimeoutError:
                self.timeouts += 1
            except Exception as exc:
                self.errors.append(f"{operation.__name__}: {exc!r}"[:160])
            tick = max(tick + 1, int((time.monotonic_ns() - start_ns) / (self.interval * NS)) + 1)

    async def _version(self) -> None:
        await self._timed(self.client.call("GetOrchestratorVersion", {}))

    async def _session_info(self) -> None:
        await self._timed(self.client.call("GetSessionInfo", {}))

    async def _timed(self, command) -> None:
        started = time.perf_counter()
        await command
        self.command_ms.append((time.perf_counter() - started) * 1000)

    async def _message(self) -> None:
        """SendMessage to ourselves: the time until MessageSent comes back (the ack is awaited too)."""
        text = f"probe-{next(self._serial)}"
        arrived = self._waiting[text] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        try:
            await self.client.call("SendMessage", {"userId": self.client.user_id, "message": text})
            self.message_ms.append((await arrived - started) * 1000)
        finally:
            self._waiting.pop(text, None)

    def _on_event(self, name: str, args: list) -> None:
        if name == "MessageSent" and args and isinstance(args[0], dict):
            future = self._waiting.get(args[0].get("message"))
            if future is not None and not future.done():
                future.set_result(time.perf_counter())
