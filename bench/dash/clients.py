"""The benchmark's measuring client: asyncio connections that parse chunked responses and timestamp
progress inside `data_received`, so that a reading includes no scheduling delay of the client.

The same code reads the relay, the baseline server and a direct loopback socket (headless mode,
chunk frames without an HTTP head), so whatever differs between rows is the server.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Callable
from time import perf_counter

_CR = re.compile(b"\r")


def payload(size: int, seed: int = 0) -> bytes:
    """Random bytes without CR, so the baseline can spot the end of an upload without parsing."""
    return _CR.sub(b"r", random.Random(seed).randbytes(size))


def frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Conn(asyncio.Protocol):
    """One client connection: responses are parsed, payload bytes counted, progress timestamped."""

    def __init__(self, headless: bool = False):
        self.headless = headless
        self.in_body = headless
        self.head = bytearray()
        self.remaining = 0  # payload bytes left in the current chunk
        self.skip = 0  # CRLF bytes to skip
        self.line = bytearray()
        self.total = 0  # payload bytes received over the connection's life
        self.heads: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
        self.done: asyncio.Queue[float] = asyncio.Queue()  # end of each chunked response
        self.target: tuple[int, asyncio.Future] | None = None
        self.on_progress: Callable[[int, float], None] | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def drain(self) -> None:
        await self.writable.wait()

    def wait_total(self, total: int) -> asyncio.Future:
        """A future resolved with the perf_counter() time at which `total` payload bytes were in."""
        fut = asyncio.get_running_loop().create_future()
        self.target = (total, fut)
        self._check(perf_counter())
        return fut

    def _check(self, t: float) -> None:
        if self.target is not None and self.total >= self.target[0]:
            self.target[1].set_result(t)
            self.target = None

    def data_received(self, data: bytes) -> None:
        t = perf_counter()
        pos, n = 0, len(data)
        while pos < n:
            if self.skip:
                step = min(self.skip, n - pos)
                pos += step
                self.skip -= step
            elif not self.in_body:
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    self.head += data[pos:]
                    break
                self.head += data[pos:end]
                head, pos = bytes(self.head).lstrip(b"\r\n"), end + 4
                self.head.clear()
                self.heads.put_nowait((int(head[9:12]), t))
                self.in_body = head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower()
            elif self.remaining:
                step = min(self.remaining, n - pos)
                pos += step
                self.remaining -= step
                self.total += step
                if not self.remaining:
                    self.skip = 2
            else:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self.line += data[pos:]
                    break
                self.line += data[pos:nl]
                pos = nl + 1
                size = int(bytes(self.line).strip().split(b";")[0], 16)
                self.line.clear()
                if size:
                    self.remaining = size
                else:
                    self.skip, self.in_body = 2, self.headless
                    self.done.put_nowait(t)
        if self.on_progress is not None:
            self.on_progress(self.total, t)
        self._check(t)


async def connect(port: int, headless: bool = False) -> Conn:
    _, conn = await asyncio.get_running_loop().create_connection(lambda: Conn(headless), "127.0.0.1", port)
    return conn


async def get_json(port: int, path: str) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


class Direct:
    """A loopback socket pair with no server in between: the floor of every latency."""

    async def open(self) -> tuple[Conn, Conn]:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[Conn] = loop.create_future()

        def factory() -> Conn:
            conn = Conn(headless=True)
            accepted.set_result(conn)
            return conn

        self.server = await loop.create_server(factory, "127.0.0.1", 0)
        writer = await connect(self.server.sockets[0].getsockname()[1])
        return writer, await accepted

    def close(self) -> None:
        self.server.close()
