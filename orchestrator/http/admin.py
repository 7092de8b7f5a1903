"""The operator page and its JSON API under /admin.

Routes:
    GET  /admin  (or /admin/)                the page (HTML); its script polls the API below
    GET  /admin/static/<file>                the page's script and style sheet (public: they hold no data)
    GET  /admin/api/state                    App.admin_state(): sessions, users, workers, stats
    GET  /admin/api/logs?after=SEQ           log lines with seq > SEQ (default 0), oldest first
    POST /admin/api/sessions/<id>/close      close a session (its members get SessionClosed)
    POST /admin/api/workers/<name>/restart   restart a stream worker now

Everything but the static files needs operator rights, as for operator commands: with an operator
token configured, the token (`Authorization: Bearer <token>`, or `?token=` on the page's URL, which
the page's script forwards as that header); without one, a peer in the trusted networks. Refusals
are 401 (token missing or wrong) or 403 (untrusted peer). A POST whose Origin header names another
site is refused (403), so that a page in the operator's browser cannot act through it. Unknown
paths are 404, known paths with another method 405. Every answer forbids framing and any script
or style from elsewhere; the page has no inline script, so that policy holds.
"""

from __future__ import annotations

import functools
import json
import mimetypes
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..asgi import Receive, Scope, Send
from .responses import query, respond

if TYPE_CHECKING:
    from ..server import App

STATIC_DIR = Path(__file__).parent / "static"
MAX_LOG_LINES = 500  # per /admin/api/logs answer; the page asks again at once while it gets this many
SECURITY_HEADERS = [(b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'"),
                    (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer")]

Action = Callable[["App", Scope, dict[str, str]], Awaitable[tuple[int, Any]]]


async def _send(send: Send, status: int, body: bytes, content_type: str,
                extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await respond(send, status, body, content_type, [*SECURITY_HEADERS, *(extra or [])])


async def _send_json(send: Send, status: int, payload: Any,
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _send(send, status, json.dumps(payload, default=str).encode(), "application/json", extra)


@functools.cache
def _assets() -> dict[str, tuple[bytes, str]]:
    """The static files by bare name, read once: a request can only name one of these, never a path."""
    assets = {}
    for path in STATIC_DIR.iterdir() if STATIC_DIR.is_dir() else ():
        if path.is_file() and not path.name.startswith("."):
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind.endswith("javascript"):
                kind += "; charset=utf-8"
            assets[path.name] = (path.read_bytes(), kind)
    return assets


def _token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            return credentials.strip() if scheme.lower() == "bearer" else None
    return query(scope).get("token")


def _header(scope: Scope, wanted: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == wanted), None)


def _cross_site(scope: Scope) -> bool:
    """True when a browser says the request comes from a page of another origin than this server."""
    origin = _header(scope, b"origin")
    if origin is None:
        return False  # not sent by a browser page (curl, scripts): the token or network rules decide
    return urlsplit(origin).netloc.lower() != (_header(scope, b"host") or "").lower()


async def _state(app: App, scope: Scope, params: dict[str, str]) -> tuple[int, Any]:
    return 200, app.admin_state()


async def _logs(app: App, scope: Scope, params: dict[str, str]) -> tuple[int, Any]:
    after = query(scope).get("after", "0")
    if not after.isdigit():
        return 400, {"error": "after must be a non-negative integer"}
    return 200, {"lines": app.logtail.since(int(after), MAX_LOG_LINES)}


async def _close_session(app: App, scope: Scope, params: dict[str, str]) -> tuple[int, Any]:
    if await app.close_session(params["id"]):
        return 200, {"closed": True, "sessionId": params["id"]}
    return 404, {"error": "no such session", "sessionId": params["id"]}


async def _restart_worker(app: App, scope: Scope, params: dict[str, str]) -> tuple[int, Any]:
    if await app.streams.restart_worker(params["name"]):
        return 200, {"restarted": True, "worker": params["name"]}
    return 404, {"error": "no such worker (or it is stopping)", "worker": params["name"]}


API: list[tuple[re.Pattern[str], str, Action]] = [
    (re.compile(r"/admin/api/state"), "GET", _state),
    (re.compile(r"/admin/api/logs"), "GET", _logs),
    (re.compile(r"/admin/api/sessions/(?P<id>[^/]+)/close"), "POST", _close_session),
    (re.compile(r"/admin/api/workers/(?P<name>[^/]+)/restart"), "POST", _restart_worker),
]


async def handle(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        await send({"type": "websocket.close", "code": 1008})
        return
    path, method = scope["path"], scope["method"]
    if path.startswith("/admin/static/"):
        asset = _assets().get(path.removeprefix("/admin/static/"))
        if asset is None:
            await _send_json(send, 404, {"error": "not found"})
        elif method != "GET":
            await _send_json(send, 405, {"error": "method not allowed"}, [(b"allow", b"GET")])
        else:
            await _send(send, 200, *asset)
        return
    if not app.operator_allowed((scope.get("client") or ("", 0))[0], _token(scope)):
        if app.settings.operator_token:
            await _send_json(send, 401, {"error": "operator token required"},
                             [(b"www-authenticate", b'Bearer realm="orchestrator"')])
        else:
            await _send_json(send, 403, {"error": "operator page: peer not in the trusted networks"})
        return
    if path in ("/admin", "/admin/"):
        page = _assets().get("admin.html")
        if method != "GET":
            await _send_json(send, 405, {"error": "method not allowed"}, [(b"allow", b"GET")])
        elif page is None:
            await _send_json(send, 500, {"error": "operator page not installed"})
        else:
            await _send(send, 200, *page)
        return
    for pattern, allowed, action in API:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        if method != allowed:
            await _send_json(send, 405, {"error": "method not allowed"}, [(b"allow", allowed.encode())])
        elif method == "POST" and _cross_site(scope):
            await _send_json(send, 403, {"error": "cross-site request refused"})
        else:
            status, payload = await action(app, scope, match.groupdict())
            await _send_json(send, status, payload)
        return
    await _send_json(send, 404, {"error": "not found"})
