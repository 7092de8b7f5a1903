"""The DASH benchmark's baseline: the least a Python relay on the same stack (asyncio + uvloop) can do.

No store, no HTTP parsing beyond the request line, no limits: a chunked upload's bytes are piped
unparsed to whoever is subscribed to the same path at that moment (`GET <path>` subscribes), and
`GET /blob?size=S&chunk=C` streams a pre-framed body from memory with the same flow control the
relay uses. Upload payloads in the benchmark contain no CR byte, so `\\r\\n\\r\\n` marks the end.

    python -m bench.dash.baseline --port 0      # prints "listening on 127.0.0.1:PORT" on stderr
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

import uvloop

HEAD_200_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
HEAD_200_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
BATCH = 1 << 20
subscribers: dict[str, set[Pipe]] = defaultdict(set)
_blobs: dict[tuple[int, int], list[bytes]] = {}


def blob(size: int, chunk: int) -> list[bytes]:
    if (size, chunk) not in _blobs:
        frames = []
        for off in range(0, size, chunk):
            n = min(chunk, size - off)
            frames.append(b"%x\r\n" % n + b"b" * n + b"\r\n")
        _blobs[(size, chunk)] = [*frames, b"0\r\n\r\n"]
    return _blobs[(size, chunk)]


class Pipe(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.upload: str | None = None
        self.tail = b""
        self.frames: list[bytes] = []
        self.pos = 0
        self.paused = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=BATCH, low=BATCH // 4)

    def connection_lost(self, exc) -> None:
        for subs in subscribers.values():
            subs.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.upload is not None:
            self._forward(data)
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        method, target = bytes(self.buf[:end]).split(b" ", 2)[:2]
        rest = bytes(self.buf[end + 4:])
        self.buf.clear()
        url = urlsplit(target.decode())
        if method in (b"POST", b"PUT"):
            self.upload, self.tail = url.path, b""
            if rest:
                self._forward(rest)
        elif url.path == "/blob":
            q = parse_qs(url.query)
            self.frames, self.pos = blob(int(q["size"][0]), int(q["chunk"][0])), 0
            self.transport.write(HEAD_200_CHUNKED)
            self.resume_writing()
        else:
            subscribers[url.path].add(self)
            self.transport.write(HEAD_200_CHUNKED)

    def _forward(self, data: bytes) -> None:
        for sub in subscribers.get(self.upload, ()):
            sub.transport.write(data)
        if b"\r\n\r\n" in self.tail + data[:4] or b"\r\n\r\n" in data:
            subscribers.pop(self.upload, None)
            self.upload = None
            self.transport.write(HEAD_200_EMPTY)
        else:
            self.tail = data[-4:]

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        frames = self.frames
        while self.pos < len(frames) and not self.paused:
            size, parts = 0, []
            while self.pos < len(frames) and size < BATCH:
                parts.append(frames[self.pos])
                size += len(frames[self.pos])
                self.pos += 1
            self.transport.writelines(parts)


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Pipe, host, port)
    h, p = server.sockets[0].getsockname()[:2]
    print(f"listening on {h}:{p}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    try:
        uvloop.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
