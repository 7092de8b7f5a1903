"""The session's reflector: the set of connections, fan-out, timeouts and the /stats snapshot.

One process serves one session on one port (clients send no session id), so everything here is
per session. Timeouts are checked by one periodic sweep instead of a timer per connection and
event, which keeps the per-frame path free of timer bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from fnmatch import fnmatchcase
from time import perf_counter
from typing import Any

from workers.tcp import heap
from workers.tcp.connection import Connection
from workers.tcp.outbox import Frame
from workers.tcp.settings import Settings
from workers.tcp.stats import CLOSE_REASONS, DROP_REASONS, LatencyWindow, LogLimiter, rss_bytes

log = logging.getLogger("workers.tcp")
_COUNTERS = ("frames_in", "bytes_in", "frames_out", "bytes_out")
_MAX_LISTED = 256  # clients itemised in /stats


class Reflector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.drops = dict.fromkeys(DROP_REASONS, 0)
        self.closed = dict.fromkeys(CLOSE_REASONS, 0)
        self.latency = LatencyWindow()
        self.accepted = 0
        self._conns: dict[Connection, None] = {}  # insertion-ordered set
        self._fanout: tuple[Connection, ...] = ()
        self._departed = dict.fromkeys(_COUNTERS, 0)  # counters of connections that are gone
        self._prio_cache: dict[str, bool] = {}
        self._events = LogLimiter(log, budget=20)  # connects and disconnects
        self._faults = LogLimiter(log, budget=50)  # closes for a reason, one line per connection
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._started = time.monotonic()
        self._last_summary = perf_counter()
        self._summarised_drops = dict(self.drops)
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), host, port, backlog=128)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)

    async def stop(self) -> None:
        """Stop accepting, drop every connection, and let their connection_lost callbacks run."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._conns):
            conn.closing, conn.aborted, conn.reason = True, True, "shutdown"
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)

    # -- membership ---------------------------------------------------------------------------

    def admit(self, conn: Connection) -> bool:
        self.accepted += 1
        if len(self._conns) >= self.settings.max_connections:
            self._faults(logging.WARNING, "%s refused: %d connections already (max_connections)",
                          conn.peer, len(self._conns))
            return False
        self._conns[conn] = None
        self._fanout = tuple(self._conns)
        self._events(logging.INFO, "%s connected (%d connections)", conn.peer, len(self._conns))
        return True

    def release(self, conn: Connection) -> None:
        self.closed[conn.reason] += 1
        if conn in self._conns:
            del self._conns[conn]
            self._fanout = tuple(self._conns)
            if not self._conns:
                asyncio.get_running_loop().call_soon(heap.trim)  # once its buffers are gone too
            for key in _COUNTERS:
                self._departed[key] += getattr(conn, key)
            if conn.reason == "peer":
                self._events(logging.INFO, "%s disconnected (%d connections)", conn.peer, len(self._conns))

    def log_close(self, conn: Connection, reason: str, detail: str) -> None:
        if reason != "shutdown":
            self._faults(logging.WARNING, "%s closed: %s: %s", conn.peer, reason, detail)

    # -- frames -------------------------------------------------------------------------------

    def dispatch(self, sender: Connection, frames: list[Frame], nbytes: int) -> None:
        """Every other connection gets the frames, whole and in order; the sender never gets its own."""
        bufs = frames[0].bufs if len(frames) == 1 else [b for f in frames for b in f.bufs]
        for conn in self._fanout:
            if conn is not sender:
                conn.offer(frames, bufs, nbytes)

    def is_priority(self, stream: str) -> bool:
        prio = self._prio_cache.get(stream)
        if prio is None:
            if len(self._prio_cache) >= 4096:  # stream names come from clients: keep the cache bounded
                self._prio_cache.clear()
            prio = any(fnmatchcase(stream, glob) for glob in self.settings.priority_streams)
            self._prio_cache[stream] = prio
        return prio

    # -- housekeeping -------------------------------------------------------------------------

    def _sweep_interval(self) -> float:
        s = self.settings
        limits = [t for t in (s.header_timeout_s, s.idle_timeout_s, s.lag_disconnect_s) if t > 0]
        return min([1.0, s.summary_interval_s, *(t / 4 for t in limits)])

    def _sweep(self) -> None:
        try:
            self._check(perf_counter())
        finally:  # whatever happens, timeouts keep being enforced
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_interval(), self._sweep)

    def _check(self, now: float) -> None:
        s = self.settings
        for conn in self._fanout:
            if conn.aborted:
                continue
            if s.lag_disconnect_s and conn.paused and now - conn.paused_since > s.lag_disconnect_s:
                conn.close("lagging", f"took nothing for {now - conn.paused_since:.1f}s with "
                           f"{conn.outbox.frames} frames queued")
            elif s.header_timeout_s and conn.header_since and now - conn.header_since > s.header_timeout_s:
                conn.close("header_timeout", f"header incomplete after {s.header_timeout_s}s")
            elif s.idle_timeout_s:
                last = conn.last_rx if conn.mid_frame else max(conn.last_rx, conn.last_tx)
                if now - last > s.idle_timeout_s:
                    conn.close("idle_timeout", f"no traffic for {now - last:.1f}s")
        if now - self._last_summary >= s.summary_interval_s:
            self._summarise(now)

    def _summarise(self, now: float) -> None:
        before = self._summarised_drops
        delta = {k: v - before[k] for k, v in self.drops.items() if v != before[k]}
        if delta:
            detail = ", ".join(f"{k}={v}" for k, v in delta.items())
            log.warning("dropped %d frames in the last %.0fs (%s)", sum(delta.values()),
                        now - self._last_summary, detail)
        self._summarised_drops = dict(self.drops)
        self._last_summary = now
        self._events.flush()
        self._faults.flush()

    # -- reporting ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "port": self.port, "connections": len(self._conns)}

    def stats(self) -> dict[str, Any]:
        totals = dict(self._departed)
        clients = []
        for conn in self._conns:
            for key in _COUNTERS:
                totals[key] += getattr(conn, key)
            if len(clients) < _MAX_LISTED:
                transport = conn.transport
                clients.append({
                    "peer": conn.peer, **{key: getattr(conn, key) for key in _COUNTERS},
                    "queued_frames": conn.outbox.frames, "queued_bytes": conn.outbox.nbytes,
                    "write_buffer_bytes": transport.get_write_buffer_size() if transport else 0,
                    "paused": conn.paused, "dropped": conn.outbox.dropped,
                    "partial_bytes": conn.partial_bytes,
                })
        queued = [(c.outbox.frames, c.outbox.nbytes) for c in self._conns]
        return {
            "port": self.port,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "connections": len(self._conns),
            "connections_total": self.accepted,
            **totals,
            "drops": dict(self.drops),
            "drops_total": sum(self.drops.values()),
            "closed": dict(self.closed),
            "queued_frames": sum(f for f, _ in queued),
            "queued_bytes": sum(b for _, b in queued),
            "max_queued_bytes": max((b for _, b in queued), default=0),
            "latency_ms": self.latency.summary(),
            "rss_bytes": rss_bytes(),
            "clients": clients,
        }
