"""Fixtures for the DASH relay tests: real worker processes on ephemeral ports and a raw HTTP client.

Helpers are handed to tests through fixtures because test modules are imported in importlib mode.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT = 10.0


@dataclass
class Worker:
    proc: subprocess.Popen
    port: int = 0
    lines: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    settings_path: Path | None = None
    drainer: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_log(self, pattern: str, timeout: float = 5.0, start: int = 0) -> re.Match:
        """Block until a stderr line matches `pattern` (an event, not a sleep)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[start:]:
                    if m := rx.search(line):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.drainer is not None and not self.drainer.is_alive()):
                    raise AssertionError(f"no log line matching {pattern!r}; got {self.lines}")
                self.cond.wait(min(left, 0.5))

    def stats(self) -> dict:
        return httpx.get(self.base + "/stats", timeout=5).json()

    def wait_stats(self, pred: Callable[[dict], bool], timeout: float = 5.0) -> dict:
        """Poll /stats until `pred` holds: for server-side conditions no client can observe."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if pred(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"stats condition not reached: {s}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def launch(tmp: Path, settings: dict | None = None, args: tuple[str, ...] = (), wait: bool = True) -> Worker:
    cmd = [sys.executable, "-m", "workers.dash", "--host", "127.0.0.1"]
    if "--port" not in args:
        cmd += ["--port", "0"]
    path = None
    if settings is not None:
        path = tmp / f"dash-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(settings))
        cmd += ["--settings", str(path)]
    cmd += list(args)
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    w = Worker(proc, settings_path=path)
    w.drainer = threading.Thread(target=w._drain, daemon=True)
    w.drainer.start()
    if wait:
        m = w.wait_log(r"listening on 127\.0\.0\.1:(\d+)", START_TIMEOUT)
        w.port = int(m.group(1))
    return w


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start a worker with the given settings; every worker is killed at teardown."""
    workers: list[Worker] = []

    def start(settings: dict | None = None, args: tuple[str, ...] = (), wait: bool = True) -> Worker:
        w = launch(tmp_path, settings, args, wait)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


# Shared by most tests; every test uses its own session id, so they do not see each other's data.
SHARED_SETTINGS = {"long_poll_ms": 400, "reader_buffer_bytes": 65536}


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = launch(tmp_path_factory.mktemp("dash"), SHARED_SETTINGS)
    yield w
    w.stop()


@pytest.fixture
def ns() -> str:
    """A fresh `/<session>/<user>/` prefix."""
    return f"/s{uuid.uuid4().hex[:10]}/u1/"


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    complete: bool  # False: the connection ended before the body did


class Raw:
    """A blocking raw-socket HTTP/1.1 client, for framing cases real clients hide."""

    def __init__(self, port: int, timeout: float = 5.0, rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.eof = False

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise EOFError(f"closed before {marker!r}; buffered {self.buf[:200]!r}")
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"closed after {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self) -> tuple[int, str, dict[str, str]]:
        lines = self.read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        _, status, reason = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        return int(status), reason, headers

    def chunk(self) -> bytes | None:
        """One chunk of a chunked body; None at the terminating chunk."""
        size = int(self.read_until(b"\r\n")[:-2].split(b";")[0], 16)
        if size == 0:
            self.read_until(b"\r\n")
            return None
        data = self.read_exact(size)
        assert self.read_exact(2) == b"\r\n"
        return data

    def response(self, head_only: bool = False) -> Response:
        status, reason, headers = self.head()
        body, complete = b"", True
        if head_only or status in (100, 204, 304):
            pass
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            try:
                while (c := self.chunk()) is not None:
                    parts.append(c)
            except EOFError:
                complete = False
                parts.append(self.buf)
                self.buf = b""
            body = b"".join(parts)
        elif "content-length" in headers:
            try:
                body = self.read_exact(int(headers["content-length"]))
            except EOFError:
                complete, body, self.buf = False, self.buf, b""
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return Response(status, reason, headers, body, complete)

    def closed(self) -> bool:
        """True once the server has closed the connection (data already sent is discarded)."""
        while self._fill():
            self.buf = b""
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw() -> Iterator[Callable[..., Raw]]:
    conns: list[Raw] = []

    def connect(port: int, **kw) -> Raw:
        c = Raw(port, **kw)
        conns.append(c)
        return c

    yield connect
    for c in conns:
        c.close()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@pytest.fixture
def encode_chunks() -> Callable[..., bytes]:
    return chunked


@pytest.fixture
def sigterm() -> Callable[[Worker], float]:
    """Send SIGTERM and return how long the process took to exit."""

    def stop(w: Worker) -> float:
        t0 = time.monotonic()
        w.proc.send_signal(signal.SIGTERM)
        w.proc.wait(5)
        return time.monotonic() - t0

    return stop
