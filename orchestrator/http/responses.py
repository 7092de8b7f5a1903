"""Tiny ASGI response helpers: the HTTP side of the orchestrator is a handful of fixed routes."""

from __future__ import annotations

import json
from typing import Any

from ..asgi import Receive, Scope, Send


async def respond(send: Send, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, payload: Any) -> None:
    await respond(send, status, json.dumps(payload).encode(), "application/json")


async def read_body(receive: Receive, limit: int = 1 << 20) -> bytes | None:
    """The request body, or None when it exceeds `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def query(scope: Scope) -> dict[str, str]:
    from urllib.parse import parse_qsl
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
