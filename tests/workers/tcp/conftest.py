"""Fixtures for the TCP reflector: the real worker process on free ports, and raw TCP clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from workers.tcp.framing import HEADER_SIZE, build_header

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get_sync(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class Worker:
    """A running ``python -m workers.tcp`` and its ports."""

    def __init__(self, settings: dict[str, Any] | None, extra: list[str], tmp: Path) -> None:
        self.port, self.control_port = free_port(), free_port()
        args = [sys.executable, "-m", "workers.tcp", "--host", "127.0.0.1", "--port", str(self.port),
                "--control-port", str(self.control_port), *extra]
        if settings is not None:
            path = tmp / f"settings-{self.port}.json"
            path.write_text(json.dumps(settings))
            args += ["--settings", str(path)]
        self.log_path = tmp / f"worker-{self.port}.log"
        with self.log_path.open("wb") as log:  # a file, not a pipe nobody drains
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout: float = 10.0) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}: {self.log()}")
            with contextlib.suppress(OSError):
                if http_get_sync(self.control_port, "/healthz", 0.5)[0] == 200:
                    return self
            time.sleep(0.02)
        raise AssertionError("worker did not become healthy")

    def stats(self) -> dict[str, Any]:
        status, body = http_get_sync(self.control_port, "/stats")
        assert status == 200
        return json.loads(body)

    async def astats(self) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.control_port)
        writer.write(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return json.loads(data.partition(b"\r\n\r\n")[2])

    async def until(self, predicate: Callable[[dict], bool], timeout: float = 5.0) -> dict[str, Any]:
        """Poll /stats until ``predicate`` holds (the worker's state is another process's)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.astats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached; last /stats: {json.dumps(stats)[:1500]}")
            await asyncio.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text()

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


class Client:
    """One raw TCP connection speaking the reflector's framing, as a Unity client would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, stream: str, payload: bytes, timestamp: int = 0) -> None:
        self.writer.write(build_header(stream, timestamp, len(payload)) + payload)
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv_frame(self, timeout: float = 5.0) -> tuple[bytes, bytes]:
        header = await asyncio.wait_for(self.reader.readexactly(HEADER_SIZE), timeout)
        length = int(header.split(b",")[3])
        return header, await asyncio.wait_for(self.reader.readexactly(length), timeout)

    async def recv_payload(self, timeout: float = 5.0) -> bytes:
        return (await self.recv_frame(timeout))[1]

    async def closed_by_peer(self, timeout: float = 5.0) -> bytes:
        """Read until the worker closes the connection; returns what arrived before that."""
        data = b""
        try:
            while chunk := await asyncio.wait_for(self.reader.read(1 << 20), timeout):
                data += chunk
        except ConnectionError:
            pass
        return data

    def close(self) -> None:
        self.writer.close()


def _spawner(tmp: Path):
    workers: list[Worker] = []

    def start(settings: dict[str, Any] | None = None, *extra: str) -> Worker:
        worker = Worker(settings, list(extra), tmp)
        workers.append(worker)
        return worker.wait_ready()

    return start, workers


@pytest.fixture
def spawn(tmp_path: Path):
    """Start a worker (settings dict → JSON file) and wait for /healthz; killed at teardown."""
    start, workers = _spawner(tmp_path)
    yield start
    for worker in workers:
        worker.kill()


@pytest.fixture(scope="module")
def spawn_shared(tmp_path_factory: pytest.TempPathFactory):
    """Like ``spawn``, for one worker that a module's cases share (start-up costs time)."""
    start, workers = _spawner(tmp_path_factory.mktemp("tcp"))
    yield start
    for worker in workers:
        worker.kill()


@pytest.fixture
def run_worker(tmp_path: Path):
    """Run the worker to completion (for start-up failures): returns (exit code, stderr)."""

    def run(*args: str, settings: str | None = None, suffix: str = ".yaml") -> tuple[int, str]:
        cmd = [sys.executable, "-m", "workers.tcp", *args]
        if settings is not None:
            path = tmp_path / f"settings{suffix}"
            path.write_text(settings)
            cmd += ["--settings", str(path)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=10)
        return proc.returncode, proc.stderr

    return run


class Clients:
    """Opens clients (optionally with a small receive buffer) and closes them all at teardown."""

    def __init__(self) -> None:
        self.opened: list[Client] = []

    async def __call__(self, port: int, rcvbuf: int | None = None) -> Client:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = Client(*await asyncio.open_connection(sock=sock, limit=1 << 16))
        self.opened.append(client)
        return client

    async def session(self, worker: Worker, n: int, **kwargs: Any) -> list[Client]:
        """``n`` clients, returned once the worker has registered all of them."""
        before = (await worker.astats())["connections_total"]
        clients = [await self(worker.port, **kwargs) for _ in range(n)]
        await worker.until(lambda s: s["connections_total"] >= before + n)
        return clients


@pytest.fixture
async def connect():
    clients = Clients()
    yield clients
    for client in clients.opened:
        client.close()


@pytest.fixture
def free_ports() -> Callable[[], int]:
    return free_port

