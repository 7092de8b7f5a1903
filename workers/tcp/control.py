"""The control endpoint: a minimal HTTP/1.1 responder for /healthz and /stats.

The supervisor polls it every few seconds and operators curl it; a full web framework would cost
start-up time and memory in every per-session worker for two JSON routes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_HEAD_LIMIT = 8192
_TIMEOUT_S = 5.0


Routes = dict[str, Callable[[], dict[str, Any]]]


async def start_control(host: str, port: int, routes: Routes) -> asyncio.Server:
    """Serve ``GET path`` → JSON of ``routes[path]()``; one request per connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _TIMEOUT_S)
            status, body, method = _respond(head, routes)
            head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            await asyncio.wait_for(writer.drain(), _TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=_HEAD_LIMIT)


def _respond(head: bytes, routes: Routes) -> tuple[int, bytes, str]:
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return 400, b'{"error": "bad request"}', ""
    method, path = parts[0], parts[1].split("?", 1)[0]
    if path not in routes:
        return 404, b'{"error": "not found"}', method
    if method not in ("GET", "HEAD"):
        return 405, b'{"error": "method not allowed"}', method
    return 200, json.dumps(routes[path]()).encode(), method
