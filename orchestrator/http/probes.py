"""/livez and /readyz: the HTTP status code is the verdict, the JSON body says why."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..asgi import Receive, Scope, Send
from .responses import respond_json

if TYPE_CHECKING:
    from ..server import App


async def livez(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    await respond_json(send, 200, {"status": "alive"})


async def readyz(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    reasons = app.unready_reasons()
    await respond_json(send, 503 if reasons else 200,
                       {"status": "not ready" if reasons else "ready", "reasons": reasons})
