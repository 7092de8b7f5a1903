"""Fixtures for the operator page: real `orchestrator serve` processes, real clients, a screenshot log."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.client import OrchestratorClient

sys.path.insert(0, str(Path(__file__).parent))
from ops_server import TOKEN, start_server
from orchestrator_process import ROOT, Server, free_port

SCREENSHOTS = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Default settings: no token, loopback trusted (the tests' own peer address)."""
    srv = start_server(tmp_path_factory.mktemp("ops-default"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def untrusted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No token, and a trusted network that does not contain loopback."""
    srv = start_server(tmp_path_factory.mktemp("ops-untrusted"), "--trusted-networks", "192.0.2.0/24")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An operator token, and one real tcpreflector worker pool (from config/streams.yaml, free ports)."""
    tmp = tmp_path_factory.mktemp("ops-token")
    shipped = yaml.safe_load((ROOT / "config" / "streams.yaml").read_text(encoding="utf-8"))
    entry = {**shipped["workers"]["tcpreflector"], "ports": [free_port(), free_port()]}
    doc = {**shipped, "bind_host": "127.0.0.1", "workers": {"tcpreflector": entry}}
    config = tmp / "streams.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    srv = start_server(tmp, "--operator-token", TOKEN, config=config)
    yield srv
    srv.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Any]]:
    """`await clients(server, "alice", "bob")` → one connected, logged-in OrchestratorClient per name."""
    made: list[OrchestratorClient] = []

    async def make(srv: Server, *names: str) -> list[OrchestratorClient]:
        batch = []
        for name in names:
            client = OrchestratorClient(srv.url, timeout_s=5)
            made.append(client)
            await client.connect()
            await client.login(name)
            batch.append(client)
        return batch

    yield make
    for client in made:
        with contextlib.suppress(Exception):
            await client.disconnect()


@pytest.fixture
def record_screenshot(request: pytest.FixtureRequest) -> Callable[[Path], None]:
    """Print a screenshot's path and list it again in the terminal summary."""
    def record(path: Path) -> None:
        print(f"admin screenshot: {path}")
        request.config.stash.setdefault(SCREENSHOTS, []).append(str(path))
    return record


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for path in config.stash.get(SCREENSHOTS, []):
        terminalreporter.write_line(f"admin screenshot: {path}")
