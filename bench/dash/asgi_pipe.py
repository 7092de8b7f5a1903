"""The server-choice candidate: the same store-less pipe as baseline.py, as a raw ASGI app on
uvicorn + httptools (the orchestrator's own stack). Measured by `dash_bench.py --candidates`
to show what the framework path costs per chunk compared with a hand-written asyncio protocol.

    python -m bench.dash.asgi_pipe --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections import defaultdict
from urllib.parse import parse_qs

import uvicorn

subscribers: dict[str, set[asyncio.Queue]] = defaultdict(set)


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if method in ("POST", "PUT"):
        while True:
            msg = await receive()
            body = msg.get("body", b"")
            for q in subscribers.get(path, ()):
                q.put_nowait(body)
            if not msg.get("more_body"):
                break
        for q in subscribers.pop(path, ()):
            q.put_nowait(None)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})  # chunked by uvicorn
    if path == "/blob":
        q = parse_qs(scope["query_string"].decode())
        size, chunk = int(q["size"][0]), int(q["chunk"][0])
        data = b"b" * chunk
        for off in range(0, size, chunk):
            piece = data[:min(chunk, size - off)]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    else:
        queue: asyncio.Queue = asyncio.Queue()
        subscribers[path].add(queue)
        while (piece := await queue.get()) is not None:
            if piece:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    print(f"listening on 127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, http="httptools", loop="uvloop", lifespan="off", log_level="warning",
                            access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
