"""HTTP + WebSocket front of the SFU: liveness, health, stats, and room membership."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from collections import Counter

from aiohttp import web

from . import signalling as sig
from .forward import DROP_REASONS
from .peer import CLOSE_FULL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_REPLACED, Peer
from .settings import Settings

log = logging.getLogger(__name__)

COUNTERS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "send_calls")


class Sfu:
    """Rooms of peers. A room is the unit of visibility: peers only see tracks of their room.

    The supervisor runs one SFU per session, so normally there is one (unnamed) room; the
    optional ``room`` query parameter isolates several sessions sharing one process.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rooms: dict[str, dict[int, Peer]] = {}
        self.peers: set[Peer] = set()
        self.retired: Counter[str] = Counter()
        self.closed_reasons: Counter[str] = Counter()
        self.joined = 0
        self.started = time.monotonic()
        self._summary_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._empty = asyncio.Event()
        self._alive: weakref.WeakSet[Peer] = weakref.WeakSet()

    # -- membership ------------------------------------------------------------------------

    def peer_in_room(self, room: str, client_id: int) -> Peer | None:
        return self.rooms.get(room, {}).get(client_id)

    def admit(self, peer: Peer) -> None:
        """Join ``peer`` to its room; a peer with the same client id there is replaced."""
        members = self.rooms.setdefault(peer.room, {})
        old = members.get(peer.client_id)
        if old is not None:
            log.info("%s: replaced by a newer connection", old)
            old.request_close("replaced by a newer connection with the same client id", CLOSE_REPLACED)
        for other in members.values():
            other.add_outputs_for(peer)
            peer.add_outputs_for(other)
        members[peer.client_id] = peer
        self.peers.add(peer)
        self._alive.add(peer)
        self._empty.clear()
        self.joined += 1
        log.info(
            "%s joined (%d tiles x %d qualities), %d in room",
            peer,
            peer.ntiles,
            peer.nqualities,
            len(members),
        )

    def detach(self, peer: Peer) -> None:
        """Remove ``peer`` from forwarding at once; the others drop its tracks and re-offer."""
        members = self.rooms.get(peer.room, {})
        if members.get(peer.client_id) is peer:
            del members[peer.client_id]
            for other in members.values():
                other.drop_outputs_for(peer)
            peer.unlink_outputs(self.rooms.get(peer.room, {}))
            if not members:
                self.rooms.pop(peer.room, None)
            log.info("%s left: %s", peer, peer.close_reason)

    def retire(self, peer: Peer) -> None:
        """Fold a finished peer's counters into the totals."""
        if peer in self.peers:
            self.peers.discard(peer)
            self.retired.update(self._peer_counters(peer))
            self.closed_reasons[peer.close_reason] += 1
            if not self.peers:
                self._empty.set()

    @staticmethod
    def _peer_counters(peer: Peer) -> Counter[str]:
        c = Counter(peer.endpoint.counters())
        c.update(
            {
                "offers": peer.offers,
                "answers": peer.answers,
                "junk_quality_entries": peer.junk_quality_entries,
                "skipped_candidates": peer.skipped_candidates,
            }
        )
        return c

    # -- HTTP ------------------------------------------------------------------------------

    def totals(self) -> Counter[str]:
        total = Counter(self.retired)
        for peer in self.peers:
            total.update(self._peer_counters(peer))
        return total

    def stats(self) -> dict[str, object]:
        total = self.totals()
        return {
            "status": "ok",
            "connections": len(self.peers),
            "peers": len(self.peers),
            "rooms": len(self.rooms),
            "tasks": len(asyncio.all_tasks()),
            "peer_objects": len(self._alive),
            "uptime_s": round(time.monotonic() - self.started, 3),
            **{k: total[k] for k in COUNTERS},
            "drops": {r: total[f"drop_{r}"] for r in DROP_REASONS},
            "offers": total["offers"],
            "answers": total["answers"],
            "renegotiations": max(0, total["offers"] - self.joined),
            "joined": self.joined,
            "closed": dict(self.closed_reasons),
            "junk_quality_entries": total["junk_quality_entries"],
            "skipped_candidates": total["skipped_candidates"],
            "peer_list": [p.info() for p in sorted(self.peers, key=lambda p: (p.room, p.client_id))],
        }

    async def handle_root(self, request: web.Request) -> web.Response:
        return web.Response(text="VR2Gather WebRTC SFU\n")

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "peers": len(self.peers)})

    async def handle_stats(self, request: web.Request) -> web.Response:
        if request.query.get("gc") == "1":  # collect cycles first, so leak checks see only live objects
            gc.collect()
        return web.json_response(self.stats())

    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
        s = self.settings
        ws = web.WebSocketResponse(max_msg_size=s.max_message_bytes, timeout=2.0)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="WebSocket upgrade required\n")
        await ws.prepare(request)
        query = request.rel_url.query
        try:
            params = sig.parse_query(
                query,
                {k: query.getall(k) for k in query},
                max_tiles=s.max_tiles,
                max_qualities=s.max_qualities,
                max_video_tracks=s.max_video_tracks,
                max_client_id=s.max_client_id,
            )
        except sig.ProtocolError as exc:
            await ws.close(code=CLOSE_POLICY, message=str(exc).encode()[:120])
            return ws
        if self._stopping:
            await ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")
            return ws
        replacing = self.peer_in_room(params.room, params.client_id) is not None
        if len(self.peers) >= s.max_peers and not replacing:
            await ws.close(code=CLOSE_FULL, message=b"server full")
            return ws
        peer = Peer(self, ws, params)
        self.admit(peer)
        await peer.run()
        return ws

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.handle_root)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/stats", self.handle_stats)
        app.router.add_get("/websocket", self.handle_websocket)
        app.on_startup.append(self._start_summary)
        return app

    # -- housekeeping ----------------------------------------------------------------------

    async def _start_summary(self, app: web.Application) -> None:
        self._summary_task = asyncio.create_task(self._summarise())

    async def _summarise(self) -> None:
        """One log line per interval for repeated conditions (drops), never one per packet."""
        last: Counter[str] = Counter()
        while True:
            await asyncio.sleep(self.settings.log_summary_interval)
            now = self.totals()
            delta = {r: now[f"drop_{r}"] - last[f"drop_{r}"] for r in DROP_REASONS}
            delta = {k: v for k, v in delta.items() if v > 0}
            if delta:
                log.warning(
                    "dropped packets in the last %.0f s: %s",
                    self.settings.log_summary_interval,
                    ", ".join(f"{k}={v}" for k, v in sorted(delta.items())),
                )
            last = now

    async def shutdown(self) -> None:
        """Close every peer (1001) and wait briefly for their teardown."""
        self._stopping = True
        if self._summary_task:
            self._summary_task.cancel()
        peers = list(self.peers)
        for peer in peers:
            peer.request_close("server shutting down", CLOSE_GOING_AWAY)
        if self.peers:
            try:
                await asyncio.wait_for(self._empty.wait(), 0.7)
            except TimeoutError:
                log.warning("%d peers still closing at shutdown", len(self.peers))
