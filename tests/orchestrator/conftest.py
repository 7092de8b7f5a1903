"""Fixtures: a real `orchestrator serve` process on a free loopback port, real clients."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.client import OrchestratorClient

sys.path.insert(0, str(Path(__file__).parent))
from orchestrator_process import Server, http_get, start_server
from rawclient import RawClient


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def factory(*args: str, env: dict[str, str] | None = None) -> Server:
        srv = start_server(tmp_path, *args, env=env)
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture
async def clients(server: Server) -> AsyncIterator[Callable[..., Any]]:
    """`await clients(n)` → n connected OrchestratorClients, logged in as u0..u(n-1) unless login=False."""
    made: list[OrchestratorClient] = []

    async def make(n: int = 1, *, login: bool = True, url: str | None = None, **kw: Any) -> Any:
        batch = []
        for i in range(n):
            client = OrchestratorClient(url or server.url, timeout_s=5, **kw)
            await client.connect()
            made.append(client)
            if login:
                await client.login(f"u{i}")
            batch.append(client)
        return batch[0] if n == 1 else batch

    yield make
    for client in made:
        with contextlib.suppress(Exception):
            await client.disconnect()


@pytest.fixture
async def raw(server: Server) -> AsyncIterator[Callable[..., Any]]:
    made: list[RawClient] = []

    async def make(url: str | None = None) -> RawClient:
        client = await RawClient.connect(url or server.ws_url)
        made.append(client)
        return client

    yield make
    for client in made:
        with contextlib.suppress(Exception):
            await client.close()


@pytest.fixture
def http() -> Callable[[str], tuple[int, Any]]:
    return http_get
