"""The relay server: listening socket, connection registry, auth, housekeeping and stats."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time
from urllib.parse import unquote

from . import settings as settings_mod
from .connection import BODY, Connection
from .http1 import Request
from .settings import Settings
from .stats import Stats
from .store import Store, session_of

log = logging.getLogger("workers.dash")

TICK_S = 0.25  # timeout resolution
SUMMARY_S = 5.0  # at most one summary log line per this period


class Server:
    def __init__(self, settings: Settings, settings_path: str | None = None):
        self.settings = settings
        self.settings_path = settings_path
        self.stats = Stats()
        self.store = Store(settings, self.stats)
        self.connections: set[Connection] = set()
        self.started = time.monotonic()
        self._server: asyncio.AbstractServer | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._last_summary = (time.monotonic(), self._summary_counts())

    async def start(self, host: str, port: int) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), host, port, backlog=1024)
        self._tick = loop.call_later(TICK_S, self._housekeeping)
        return [s.getsockname()[:2] for s in self._server.sockets]

    async def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        self.store.clear()

    # --- connections ---------------------------------------------------------------------------
    def admit(self, conn: Connection) -> bool:
        if len(self.connections) >= self.settings.max_connections:
            return False
        self.connections.add(conn)
        return True

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)

    def authorize(self, req: Request) -> tuple[str, int]:
        """Return the resource key and 0, or 401/403. The token never becomes part of the key."""
        s = self.settings
        if not s.auth_enabled:
            return req.target, 0
        path, _, query = req.target.partition("?")
        token, kept = None, []
        for part in query.split("&") if query else ():
            if part.startswith("token="):
                token = unquote(part[6:])
            else:
                kept.append(part)
        key = f"{path}?{'&'.join(kept)}" if kept else path
        auth = req.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        if not token:
            return key, 401
        expected = s.session_tokens.get(session_of(path), s.token)
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            return key, 403
        return key, 0

    def reload_auth(self) -> None:
        """SIGHUP: re-read the settings file and apply its tokens (other limits need a restart)."""
        try:
            fresh = settings_mod.load(self.settings_path)
        except settings_mod.SettingsError as exc:
            log.error("reload ignored: %s", exc)
            return
        self.settings = dataclasses.replace(
            self.settings, token=fresh.token, session_tokens=fresh.session_tokens)
        log.info("tokens reloaded: %d session tokens, shared token %s",
                 len(fresh.session_tokens), "set" if fresh.token else "unset")

    # --- housekeeping --------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            conn.check(now)
        self.store.expire(now)
        if now - self._last_summary[0] >= SUMMARY_S:
            counts = self._summary_counts()
            previous = self._last_summary[1]
            delta = {k: v - previous.get(k, 0) for k, v in counts.items() if v != previous.get(k, 0)}
            if delta:
                log.info("last %.0f s: %s", now - self._last_summary[0],
                         ", ".join(f"{k}={v}" for k, v in sorted(delta.items())))
            self._last_summary = (now, counts)
        self._tick = asyncio.get_running_loop().call_later(TICK_S, self._housekeeping)

    def _summary_counts(self) -> dict[str, int]:
        s = self.stats
        return {"aborted_uploads": s.aborted_uploads, "evictions": s.evictions, "expired": s.expired,
                **{f"drop.{k}": v for k, v in s.drops.items()}}

    # --- observability -------------------------------------------------------------------------
    def health(self) -> dict[str, object]:
        return {"status": "ok", "kind": "dash", "uptime_s": round(time.monotonic() - self.started, 3)}

    def snapshot(self) -> dict[str, object]:
        conns = self.connections
        return {
            "connections": len(conns),
            "readers": sum(1 for c in conns if c.res is not None),
            "uploads": sum(1 for c in conns if c.state == BODY),
            "long_poll_waiters": self.store.waiter_count,
            "resources": len(self.store.resources),
            "namespaces": len(self.store.namespaces),
            "bytes_stored": self.store.total,
            **self.stats.counters(),
        }
