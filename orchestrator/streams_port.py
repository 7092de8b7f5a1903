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
    # A description of the worker (kind, worker, port, public_host, urls) or None without one.
    async def acquire(self, session_id: str, protocol: str) -> dict[str, Any] | None: ...
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

    async def acquire(self, session_id: str, protocol: str) -> dict[str, Any] | None:
        return None

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


def render_remote_sfu_data(worker: dict[str, Any], session_id: str, user: Any) -> dict[str, str]:
    """sfuData for a session whose worker another orchestrator process owns (from its description)."""
    from .streams.urls import render_sfu_data
    host = user.host if worker.get("public_host", "auto") == "auto" else worker["public_host"]
    try:
        return render_sfu_data(worker["urls"], public_host=host, port=worker["port"],
                               session_id=session_id, user_id=user.user_id)
    except (KeyError, ValueError):
        return dict(EMPTY_SFU_DATA)


class ClusterUnavailable(RuntimeError):
    """The shared state store cannot be reached at start-up (the message says which and why)."""


class ClusterPort(Protocol):
    """Several orchestrator processes acting as one: a shared, ordered log of operations."""

    node_id: str

    async def start(self, app: Any) -> None: ...
    async def stop(self) -> None: ...
    # Append the operation to the shared log; every process applies it (App.apply_local) in log
    # order; returns this process's result, or raises its CommandError.
    async def execute(self, op: str, args: dict[str, Any], *, defer: bool = False) -> Any: ...
    # Data frames for users connected to other processes (recipients not attached here).
    def forward_data(self, recipients: list[str], sender_id: str, kind: str,
                     payload: bytes | str) -> None: ...
    def unready_reasons(self) -> list[str]: ...
