"""The operator page and its JSON API under /admin (placeholder until the page lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..asgi import Receive, Scope, Send
from .responses import respond_json

if TYPE_CHECKING:
    from ..server import App


async def handle(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        await send({"type": "websocket.close", "code": 1008})
        return
    await respond_json(send, 404, {"error": "not found"})
