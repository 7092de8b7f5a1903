"""Fixtures: the SFU as a real subprocess on 127.0.0.1, and aiortc test peers in this process."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from workers.webrtc import internals
from workers.webrtc.testpeer import TestPeer

ROOT = Path(__file__).resolve().parents[3]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SfuProcess:
    proc: subprocess.Popen
    port: int
    udp: tuple[int, int]
    stderr_path: Path
    peers: list[TestPeer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(self.url + path) as r:
            return r.status, await r.text()

    async def stats(self) -> dict:
        status, body = await self.get("/stats")
        assert status == 200
        return json.loads(body)

    async def wait_stats(self, predicate, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
        """Poll /stats (another process: there is no event to await) until ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached; last stats: {json.dumps(stats)[:2000]}")
            await asyncio.sleep(0.02)

    async def wait_settled(self, npeers: int, timeout: float = 10.0) -> dict:
        """All peers connected and every offer answered, so every republished track is live."""
        return await self.wait_stats(
            lambda s: (
                s["peers"] == npeers
                and all(
                    p["connection"] == "connected"
                    and p["signaling"] == "stable"
                    and p["offers"] == p["answers"]
                    for p in s["peer_list"]
                )
            ),
            timeout,
        )

    async def peer(self, client_id: int, ntiles: int = 1, nqualities: int = 1, **kw: object) -> TestPeer:
        p = await TestPeer.connect(self.url, client_id, ntiles, nqualities, **kw)
        self.peers.append(p)
        return p

    async def connected_peers(self, *specs: tuple[int, int, int], **kw: object) -> list[TestPeer]:
        peers = [await self.peer(*spec, **kw) for spec in specs]
        for p in peers:
            await p.wait_connected()
        await self.wait_settled(len(peers))
        return peers

    async def raw_ws(self, query: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"{self.url.replace('http', 'ws')}/websocket?{query}")
        return session, ws

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def start_sfu(tmp_path: Path, settings: dict | None = None, extra: list[str] | None = None) -> SfuProcess:
    port = free_tcp_port()
    base = random.randrange(20000, 60000, 100)
    udp = (base, base + 39)
    cfg = {"ice_addresses": ["127.0.0.1"], "connect_timeout": 10.0, "answer_timeout": 5.0, **(settings or {})}
    settings_file = tmp_path / f"sfu-{port}.json"
    settings_file.write_text(json.dumps(cfg))
    stderr_path = tmp_path / f"sfu-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "workers.webrtc",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--udp-ports",
        f"{udp[0]}:{udp[1]}",
        "--settings",
        str(settings_file),
        *(extra or []),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=stderr_path.open("w"))
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                if b" 200 " in s.recv(100):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"SFU did not start: {stderr_path.read_text()}")
        time.sleep(0.02)
    return SfuProcess(proc, port, udp, stderr_path)


def stop_sfu(sfu: SfuProcess) -> int:
    if sfu.proc.poll() is None:
        sfu.proc.send_signal(signal.SIGTERM)
        try:
            return sfu.proc.wait(5)
        except subprocess.TimeoutExpired:
            sfu.proc.kill()
            sfu.proc.wait()
            return -9
    return sfu.proc.returncode


@pytest.fixture(autouse=True, scope="session")
def _aiortc_dialect() -> Iterator[None]:
    """The test peers speak the SFU's dialect (pcm codecs, transport-cc) and bind loopback."""
    internals.register_media()
    internals.set_host_addresses(["127.0.0.1"])
    yield
    internals.set_host_addresses(None)


@pytest.fixture
async def sfu(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[SfuProcess]:
    marker = request.node.get_closest_marker("sfu_settings")
    proc = start_sfu(
        tmp_path, marker.args[0] if marker else None, marker.kwargs.get("extra") if marker else None
    )
    try:
        yield proc
    finally:
        await asyncio.gather(*(p.close() for p in proc.peers), return_exceptions=True)
        code = stop_sfu(proc)
        assert code == 0, f"SFU exited with {code}: {proc.stderr()[-3000:]}"
        assert "Traceback" not in proc.stderr(), proc.stderr()[-3000:]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sfu_settings(dict, extra=[...]): settings for the sfu fixture")
