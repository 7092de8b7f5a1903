"""Event-loop lag and garbage-collector pauses: the two things that make every client wait at once."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any


class LoopWatch:
    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.lag_s = 0.0  # the latest measurement
        self.max_lag_s = 0.0  # the largest since start
        self.gc_pause_s_total = 0.0
        self.gc_collections = 0
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.gc_pause_s_total += time.perf_counter() - self._gc_started
            self.gc_collections += 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.lag_s = max(0.0, loop.time() - expected)
            self.max_lag_s = max(self.max_lag_s, self.lag_s)

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._run(), name="loop-watch")

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
