"""The supervisor behind the orchestrator's StreamsPort: config loading, SIGHUP reload, restarts.

A missing config file means no workers: every session's data then flows through the orchestrator
and sfuData holds empty strings. An invalid file stops start-up with its errors (file, key, problem).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .settings import Settings
from .streams.config import load_config
from .streams.supervisor import Supervisor

log = logging.getLogger("orchestrator.streams")

ReplacedCallback = Callable[[list[str]], Awaitable[None]]


class SupervisedStreams:
    def __init__(self, supervisor: Supervisor, config_path: Path, stop_grace_s: float = 3.0) -> None:
        self.supervisor = supervisor
        self.config_path = config_path
        self.stop_grace_s = stop_grace_s
        self._on_replaced: ReplacedCallback | None = None

    def on_replaced(self, callback: ReplacedCallback) -> None:
        self._on_replaced = callback

    async def _replaced(self, session_ids: list[str]) -> None:
        if self._on_replaced is not None:
            await self._on_replaced(session_ids)

    async def start(self) -> None:
        self.supervisor.on_worker_replaced = self._replaced
        await self.supervisor.start()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            log.debug("SIGHUP reload not available")

    async def reload(self) -> list[str]:
        log.info("SIGHUP: re-reading %s", self.config_path)
        return await self.supervisor.reload(self.config_path)

    async def stop(self) -> None:
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        await self.supervisor.stop(self.stop_grace_s)

    async def acquire(self, session_id: str, protocol: str) -> dict[str, Any] | None:
        await self.supervisor.acquire(session_id, protocol)
        return self.supervisor.describe(session_id)

    async def release(self, session_id: str) -> None:
        await self.supervisor.release(session_id)

    def update_load(self, session_id: str, users: int) -> None:
        self.supervisor.update_load(session_id, users)

    def sfu_data(self, session_id: str, user_id: str, public_host: str) -> dict[str, str]:
        return self.supervisor.sfu_data(session_id, user_id, public_host)

    def snapshot(self) -> dict[str, Any]:
        return self.supervisor.snapshot()

    def unready_reasons(self) -> list[str]:
        return self.supervisor.unready_reasons()

    async def restart_worker(self, name: str) -> bool:
        """Restart on the same port, keeping its sessions (they are told: STREAM_WORKER_CHANGED)."""
        return await self.supervisor.restart_worker(name)


def streams_for(settings: Settings) -> SupervisedStreams | None:
    """Raises streams.config.ConfigError (with every error) when the file is invalid."""
    config = load_config(settings.config)
    if config.missing:  # load_config has logged it
        return None
    supervisor = Supervisor(config, log_dir=settings.log_dir, run_dir=settings.run_dir)
    return SupervisedStreams(supervisor, settings.config)
