"""Fixtures: a real redis-server for the session, real orchestrator processes sharing it, real clients."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.client import OrchestratorClient

sys.path.insert(0, str(Path(__file__).parent))
import cluster_harness as harness


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Redis]:
    try:
        srv = harness.start_redis(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError:
        pytest.skip("redis-server is not installed (scripts/install --test installs it)")
    yield srv
    srv.stop()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., harness.Node]]:
    """`nodes(state, *args)` → a ready orchestrator process; all are stopped at teardown."""
    started: list[harness.Node] = []

    def start(state: str, *args: str, ready: bool = True) -> harness.Node:
        node = harness.spawn_node(tmp_path, state, *args)
        started.append(node)
        return harness.wait_ready(node) if ready else node

    yield start
    for node in started:
        node.stop()


@pytest.fixture(scope="module")
def pair(redis_server: harness.Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Two processes of one cluster, shared by a module's tests (each test makes its own users)."""
    tmp = tmp_path_factory.mktemp("pair")
    state = redis_server.new_db()
    started = [harness.spawn_node(tmp, state) for _ in range(2)]
    try:
        a, b = (harness.wait_ready(n) for n in started)
        yield SimpleNamespace(a=a, b=b, state=state)
    finally:
        for node in started:
            node.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """`await connect(url, name)` → a connected OrchestratorClient, logged in unless name is None."""
    made: list[OrchestratorClient] = []

    async def make(url: str, name: str | None = "user", **kw: Any) -> OrchestratorClient:
        client = OrchestratorClient(url, timeout_s=kw.pop("timeout_s", 8), **kw)
        await client.connect()
        made.append(client)
        if name is not None:
            await client.login(name)
        return client

    yield make
    for client in made:
        with contextlib.suppress(Exception):
            await client.disconnect()


@pytest.fixture
def h() -> SimpleNamespace:
    """Helpers for tests (a fixture, since test modules cannot import from this directory)."""
    return SimpleNamespace(harness=harness)
