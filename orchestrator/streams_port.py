"""What the orchestrator needs from stream workers, as one small interface.

`NoStreams` serves when no worker configuration is loaded: every session's data then flows through
the orchestrator itself and `sfuData` holds empty strings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class WorkerUnavailable(Exception):
    """No stream worker can take a new session (pool exhausted, workers failed)."""


class StreamsPort(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def acquire(self, session_id: str, protocol: str) -> None: ...
    async def release(self, session_id: str) -> None: ...
    def update_load(self, session_id: str, users: int) -> None: ...
    def sfu_data(self, session_id: str, user_id: str, public_host: str) -> dict[str, str]: ...
    def snapshot(self) -> dict[str, Any]: ...  # {"workers": [...], ...}
    def unready_reasons(self) -> list[str]: ...
    async def restart_worker(self, name: str) -> bool: ...
    def on_replaced(self, callback: Callable[[list[str]], Awaitable[None]]) -> None: ...


EMPTY_SFU_DATA = {"url_gen": "", "url_audio": "", "url_pcc": ""}


class NoStreams:
    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def acquire(self, session_id: str, protocol: str) -> None:
        pass

    async def release(self, session_id: str) -> None:
        pass

    def update_load(self, session_id: str, users: int) -> None:
        pass

    def sfu_data(self, session_id: str, user_id: str, public_host: str) -> dict[str, str]:
        return dict(EMPTY_SFU_DATA)

    def snapshot(self) -> dict[str, Any]:
        return {"workers": []}

    def unready_reasons(self) -> list[str]:
        return []

    async def restart_worker(self, name: str) -> bool:
        return False

    def on_replaced(self, callback: Callable[[list[str]], Awaitable[None]]) -> None:
        pass
