"""One client: its WebSocket, its peer connection, and the offers the SFU sends it.

The SFU is always the offerer. Track changes only mark the peer dirty; a single negotiator task
per peer turns any number of changes into one offer, sent from ``stable`` only, and waits for the
answer before the next one (serialised and coalesced renegotiation).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
)
from aiortc.sdp import SessionDescription

from . import signalling as sig
from .forward import Endpoint, Output, set_quality
from .internals import RtpLink, bypass_receiver, pcm_capability, sender_ssrc
from .packet import TWCC_EXT_ID
from .sdp import outgoing_offer

if TYPE_CHECKING:
    from .server import Sfu

log = logging.getLogger(__name__)

_TRACK_ID = re.compile(r"(?:audio_(\d+)|video_(\d+)_(\d+)_(\d+))")

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_FULL = 1000, 1001, 1008, 1011, 1013
CLOSE_REPLACED, CLOSE_TIMEOUT, CLOSE_MEDIA_FAILED = 4001, 4002, 4003


class ForwardTrack(MediaStreamTrack):
    """Names a republished track in the SDP; media never flows through aiortc's sender loop."""

    def __init__(self, kind: str, track_id: str) -> None:
        super().__init__()
        self.kind = kind
        self._id = track_id

    async def recv(self) -> None:  # type: ignore[override]
        await asyncio.get_running_loop().create_future()  # until the sender is stopped


class Peer:
    def __init__(self, sfu: Sfu, ws: web.WebSocketResponse, params: sig.JoinParams) -> None:
        s = sfu.settings
        self.sfu = sfu
        self.ws = ws
        self.client_id = params.client_id
        self.ntiles = params.ntiles
        self.nqualities = params.nqualities
        self.room = params.room
        self.endpoint = Endpoint(params.client_id, params.ntiles, params.nqualities, s.max_frame_bytes)
        self.endpoint.set_ext_id(TWCC_EXT_ID)
        servers = [RTCIceServer(url) for url in s.stun_servers]
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.outputs: dict[tuple[int, int | None], Output] = {}
        self._inbound: dict[str, tuple[bool, int, int]] = {}  # mid -> (video, tile, quality)
        self._recv = [self._transceiver("audio", "recvonly")]
        self._recv += [
            self._transceiver("video", "recvonly") for _ in range(params.ntiles * params.nqualities)
        ]
        self._stale: list[RTCRtpTransceiver] = []
        self._dirty = asyncio.Event()
        self._answer: asyncio.Future[None] | None = None
        self._pending_candidates: list = []
        self._have_remote = False
        self._negotiator: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._connect_timer: asyncio.TimerHandle | None = None
        self.connected = False
        self.closing = False
        self.close_code = CLOSE_NORMAL
        self.close_reason = "connection closed"
        self.offers = 0
        self.answers = 0
        self.junk_quality_entries = 0
        self.quality_messages = 0
        self.skipped_candidates = 0
        self.pc.on("connectionstatechange", self._on_connection_state)

    def __repr__(self) -> str:
        return f"peer {self.client_id}" + (f" in room {self.room!r}" if self.room else "")

    # -- tracks ------------------------------------------------------------------------------

    def _transceiver(
        self, kind: str, direction: str, track: MediaStreamTrack | None = None
    ) -> RTCRtpTransceiver:
        transceiver = self.pc.addTransceiver(track or kind, direction=direction)
        transceiver.setCodecPreferences(pcm_capability(kind))
        bypass_receiver(transceiver.receiver)
        return transceiver

    def add_outputs_for(self, source: Peer) -> None:
        """Republish every track of ``source`` to this peer (one audio, one video per tile)."""
        src = source.endpoint
        for tile in [None, *range(source.ntiles)]:
            name = f"audio_{source.client_id}" if tile is None else f"video_{source.client_id}_{tile}"
            kind = "audio" if tile is None else "video"
            transceiver = self._transceiver(kind, "sendonly", ForwardTrack(kind, name))
            out = Output(
                self.endpoint, sender_ssrc(transceiver.sender), name, source.client_id, tile, transceiver
            )
            self.outputs[(source.client_id, tile)] = out
            (src.audio_outs if tile is None else src.tile_outs[tile]).append(out)
        self._dirty.set()

    def drop_outputs_for(self, source: Peer) -> None:
        """Stop republishing ``source`` here: its m-lines go inactive in the next offer."""
        for key in [k for k in self.outputs if k[0] == source.client_id]:
            out = self.outputs.pop(key)
            _discard(source.endpoint.audio_outs if key[1] is None else source.endpoint.tile_outs[key[1]], out)
            out.transceiver.direction = "inactive"  # type: ignore[attr-defined]
            self._stale.append(out.transceiver)  # type: ignore[arg-type]
        self._dirty.set()

    def unlink_outputs(self, members: dict[int, Peer]) -> None:
        """On leaving: stop every source in ``members`` from feeding this peer's outputs."""
        for (source_id, tile), out in self.outputs.items():
            source = members.get(source_id)
            if source is not None:
                _discard(source.endpoint.audio_outs if tile is None else source.endpoint.tile_outs[tile], out)
        self.outputs.clear()

    def set_qualities(self, payload: str) -> None:
        decisions, junk = sig.parse_quality_decisions(payload, self.sfu.settings.max_quality_entries)
        for client_id, qualities in decisions:
            source = self.sfu.peer_in_room(self.room, client_id)
            if source is None or source is self:
                junk += 1
                continue
            outs = {k[1]: o for k, o in self.outputs.items() if k[0] == client_id and k[1] is not None}
            junk += set_quality(outs, qualities, source.nqualities)  # type: ignore[arg-type]
        self.junk_quality_entries += junk
        self.quality_messages += 1

    # -- life cycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the WebSocket until it closes; always leaves the peer fully torn down."""
        self._negotiator = asyncio.create_task(self._negotiate())
        self._dirty.set()
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        await self._handle(msg.data)
                    except sig.ProtocolError as exc:
                        self.request_close(str(exc), CLOSE_POLICY)
                elif msg.type == WSMsgType.BINARY:
                    self.request_close("binary messages are not supported", CLOSE_POLICY)
                elif msg.type == WSMsgType.ERROR:  # aiohttp has already closed, e.g. 1009 too big
                    code = getattr(msg.data, "code", CLOSE_POLICY)
                    self.request_close(
                        "message too big" if code == 1009 else f"websocket error: {msg.data}", code
                    )
                if self.closing:
                    break
        except Exception:
            log.exception("%s: unexpected error", self)
            self.request_close("internal error", CLOSE_INTERNAL)
        finally:
            self.request_close(self.close_reason, self.close_code)
            await self._teardown()

    def request_close(self, reason: str, code: int = CLOSE_NORMAL) -> None:
        """Detach from the room now (synchronously) and close the socket; idempotent."""
        if self.closing:
            return
        self.closing = True
        self.close_reason, self.close_code = reason, code
        self.sfu.detach(self)
        if not self.ws.closed:
            self._closer = asyncio.create_task(self.ws.close(code=code, message=reason.encode()[:120]))

    async def _teardown(self) -> None:
        if self._connect_timer:
            self._connect_timer.cancel()
        if self._negotiator and not self._negotiator.done():
            self._negotiator.cancel()
        if self._closer:
            await asyncio.wait([self._closer], timeout=2)
        tasks = [t for t in (self._negotiator, self._closer) if t and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        self.endpoint.link.close()
        try:
            async with asyncio.timeout(5):
                await self.pc.close()
        except Exception:  # a half-failed aiortc close must not keep the peer registered
            log.warning("%s: peer connection close failed", self, exc_info=True)
        if not self.ws.closed:
            await self.ws.close(code=self.close_code, message=self.close_reason.encode()[:120])
        self.sfu.retire(self)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self.connected:
            self.connected = self.endpoint.link.start_sending()
            if self._connect_timer:
                self._connect_timer.cancel()
            log.info("%s: media connected", self)
        elif state in ("failed", "closed"):
            self.request_close(f"media connection {state}", CLOSE_MEDIA_FAILED)

    def _connect_timeout(self) -> None:
        if not self.connected:
            self.request_close("media connection not established in time", CLOSE_TIMEOUT)

    # -- signalling --------------------------------------------------------------------------

    async def _handle(self, text: str) -> None:
        mtype, payload = sig.parse_message(text)
        if mtype == sig.ANSWER:
            await self._on_answer(sig.parse_description(payload, "answer"))
        elif mtype == sig.CANDIDATE:
            await self._on_candidate(sig.parse_candidate(payload))
        elif mtype == sig.QUALITY:
            self.set_qualities(payload)
        # hello (1), offers from peers and unknown types are ignored, as by the Go SFU

    async def _on_answer(self, answer: object) -> None:
        if self._answer is None or self._answer.done():
            raise sig.ProtocolError("answer without a pending offer")
        try:
            await self.pc.setRemoteDescription(answer)  # type: ignore[arg-type]
        except Exception as exc:  # aiortc reports bad SDP with many exception types
            raise sig.ProtocolError(f"bad SDP answer ({type(exc).__name__})") from None
        self._map_inbound(answer.sdp)  # type: ignore[attr-defined]
        self.answers += 1
        self._have_remote = True
        pending, self._pending_candidates = self._pending_candidates, []
        for candidate in pending:
            await self._add_candidate(candidate)
        self._answer.set_result(None)

    async def _on_candidate(self, candidate: object) -> None:
        if candidate is None:
            return
        if not sig.is_usable_candidate(candidate):  # type: ignore[arg-type]
            self.skipped_candidates += 1
            return
        if not self._have_remote:
            if len(self._pending_candidates) >= self.sfu.settings.max_pending_candidates:
                raise sig.ProtocolError("too many candidates before the answer")
            self._pending_candidates.append(candidate)
            return
        await self._add_candidate(candidate)

    async def _add_candidate(self, candidate: object) -> None:
        try:
            await self.pc.addIceCandidate(candidate)  # type: ignore[arg-type]
        except Exception as exc:
            raise sig.ProtocolError(f"bad candidate ({type(exc).__name__})") from None

    def _map_inbound(self, sdp_text: str) -> None:
        """SSRC -> (tile, quality) from the answer: msid track ids, else m-line order."""
        session = SessionDescription.parse(sdp_text)
        for media in session.media:
            slot = self._inbound.get(media.rtp.muxId)
            if slot is None or media.direction not in ("sendonly", "sendrecv") or not media.ssrc:
                continue
            video, tile, quality = slot
            msid = media.msid or media.ssrc[0].msid or ""
            m = _TRACK_ID.fullmatch(msid.split()[-1] if msid.split() else "")
            if m and video and m.group(2) and int(m.group(2)) == self.client_id:
                t, q = int(m.group(3)), int(m.group(4))
                if t < self.ntiles and q < self.nqualities:
                    tile, quality = t, q
            self.endpoint.map_ssrc(media.ssrc[0].ssrc, video, tile, quality)

    async def _negotiate(self) -> None:
        try:
            await self._negotiate_loop()
        except (ConnectionError, RuntimeError) as exc:  # socket gone under us: the read loop ends too
            log.debug("%s: negotiation stopped: %s", self, exc)
            self.request_close("connection closed")
        except Exception:
            log.exception("%s: negotiation failed", self)
            self.request_close("internal error", CLOSE_INTERNAL)

    async def _negotiate_loop(self) -> None:
        """The only place offers are made: one at a time, from ``stable``, coalescing changes."""
        settings = self.sfu.settings
        first = True
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self.closing:
                return
            for transceiver in self._stale:
                await transceiver.sender.stop()
            self._stale.clear()
            offered = [o for o in self.outputs.values() if not o.live]
            await self.pc.setLocalDescription(await self.pc.createOffer())
            if first:
                if not self.pc.localDescription or "a=candidate:" not in self.pc.localDescription.sdp:
                    self.request_close(
                        "no ICE candidate could be gathered (UDP ports exhausted?)", CLOSE_FULL
                    )
                    return
                self._inbound = {
                    t.mid: (
                        i > 0,
                        (i - 1) // self.nqualities if i else 0,
                        (i - 1) % self.nqualities if i else 0,
                    )
                    for i, t in enumerate(self._recv)
                    if t.mid is not None
                }
                self.endpoint.link = RtpLink(
                    self.pc,
                    self.endpoint.on_rtp,
                    settings.send_backlog_bytes,
                    settings.socket_buffer_bytes,
                    settings.udp_gso,
                )
                self._connect_timer = asyncio.get_running_loop().call_later(
                    settings.connect_timeout, self._connect_timeout
                )
            sdp_text, candidates = outgoing_offer(self.pc.localDescription.sdp, settings.public_ip)
            self._answer = asyncio.get_running_loop().create_future()
            await self.ws.send_str(
                sig.format_message(
                    sig.OFFER,
                    sig.format_description(type(self.pc.localDescription)(sdp=sdp_text, type="offer")),
                )
            )
            if first:
                for candidate in candidates:
                    await self.ws.send_str(sig.format_message(sig.CANDIDATE, sig.format_candidate(candidate)))
            self.offers += 1
            first = False
            try:  # not wait_for: on 3.11 it can swallow a cancel that races with the answer
                async with asyncio.timeout(settings.answer_timeout):
                    await self._answer
            except TimeoutError:
                self.request_close("no answer to the offer in time", CLOSE_TIMEOUT)
                return
            for out in offered:
                out.live = True

    def info(self) -> dict[str, object]:
        return {
            "client_id": self.client_id,
            "room": self.room,
            "ntiles": self.ntiles,
            "nqualities": self.nqualities,
            "connection": self.pc.connectionState,
            "signaling": self.pc.signalingState,
            "outputs": len(self.outputs),
            "offers": self.offers,
            "answers": self.answers,
            "quality_messages": self.quality_messages,
            "local_port": self.endpoint.link.local_port()
            if isinstance(self.endpoint.link, RtpLink)
            else None,
        }


def _discard(items: list[Output], out: Output) -> None:
    if out in items:
        items.remove(out)
