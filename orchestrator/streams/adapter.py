"""The supervisor as the orchestrator's StreamsPort: built from server Settings, reloaded on SIGHUP.

`supervisor_for(settings)` validates the config before anything listens: an invalid file stops start-up
with its "file: key: problem" lines (exit code 2); a missing one means no workers (None → NoStreams).
Worker replacements reach the server through `on_worker_replaced`, which it may set after construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .config import ConfigError, load_config
from .supervisor import Placement, Supervisor

log = logging.getLogger("orchestrator.streams")


class StreamsAdapter:
    """StreamsPort over a Supervisor; see supervisor.py for the semantics of each call."""

    def __init__(self, supervisor: Supervisor, config_path: Path, stop_grace_s: float = 2.0):
        self.supervisor = supervisor
        self.config_path = config_path
        self.stop_grace_s = stop_grace_s
        #: async or plain callable(session_ids), set by the server to send members their new sfuData.
        self.on_worker_replaced: Callable[[list[str]], Awaitable[None] | None] | None = None
        self._sighup = False

    async def _replaced(self, session_ids: list[str]) -> None:
        if self.on_worker_replaced is None:
            log.warning("worker of sessions %s replaced; nobody to tell their members", session_ids)
            return
        result = self.on_worker_replaced(session_ids)
        if inspect.isawaitable(result):
            await result

    async def start(self) -> None:
        await self.supervisor.start()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._sighup = True

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading %s", self.config_path)
        asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> list[str]:
        return await self.supervisor.reload(self.config_path)

    async def stop(self) -> None:
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        await self.supervisor.stop(self.stop_grace_s)

    async def acquire(self, session_id: str, protocol: str) -> Placement | None:
        return await self.supervisor.acquire(session_id, protocol)

    async def release(self, session_id: str) -> None:
        await self.supervisor.release(session_id)

    def update_load(self, session_id: str, users: int) -> None:
        self.supervisor.update_load(session_id, users)

    def sfu_data(self, session_id: str, user_id: str, public_host: str) -> dict[str, str]:
        return self.supervisor.sfu_data(session_id, user_id, public_host)

    def snapshot(self) -> list[dict[str, Any]]:
        """The workers (DumpData "workers"); the supervisor's snapshot() has placements and kinds too."""
        return self.supervisor.snapshot()["workers"]

    async def restart_worker(self, name: str) -> bool:
        return await self.supervisor.restart_worker(name)

    def unready_reasons(self) -> list[str]:
        return self.supervisor.unready_reasons()


def supervisor_for(settings: Any) -> StreamsAdapter | None:
    """The adapter for `settings.config` (run_dir/workers for pid files, log_dir for worker logs).

    None when the file does not exist (logged once by load_config); SystemExit(2) when it is invalid.
    """
    path = Path(settings.config)
    try:
        config = load_config(path)
    except ConfigError as e:
        for line in e.errors:
            log.error("%s", line)
        raise SystemExit(2) from None
    if config.missing:
        return None
    adapter: StreamsAdapter
    supervisor = Supervisor(config, log_dir=getattr(settings, "log_dir", None),
                            run_dir=Path(settings.run_dir) / "workers",
                            on_worker_replaced=lambda ids: adapter._replaced(ids))
    adapter = StreamsAdapter(supervisor, path)
    return adapter
