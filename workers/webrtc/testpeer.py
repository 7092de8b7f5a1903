"""A WebRTCSFU peer on aiortc, speaking what the Go ``WebRTCSFU-peer`` speaks (tests and benchmark).

It connects to ``/websocket``, answers the SFU's offers with one audio and T*Q video send tracks
(``audio_<C>``, ``video_<C>_<t>_<q>``, added in the Go peer's order), trickles its candidates as
bare ``@4@`` lines, and sends/receives frames fragmented with the VR2Gather payload header. Every
received packet's RTP header length is recorded, since the real peer strips exactly 20 bytes.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import aiohttp
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from . import internals, packet
from . import signalling as sig
from .peer import ForwardTrack
from .sdp import candidates_in


@dataclass
class Frame:
    kind: str  # "audio" or "video"
    client: int
    tile: int
    quality: int
    frame_nr: int
    data: bytes
    track: str  # track id the SFU announced for the SSRC it came on


@dataclass
class _Partial:
    total: int
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class TestPeer:
    """One emulated client. Use ``await TestPeer.connect(...)``, then ``send_*`` / ``wait_*``."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        base_url: str,
        client_id: int,
        ntiles: int = 1,
        nqualities: int = 1,
        *,
        room: str | None = None,
        trickle_early: bool = False,
        collect: bool = True,
        auto_answer: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.ntiles = ntiles
        self.nqualities = nqualities
        self.room = room
        self.trickle_early = trickle_early
        self.collect = collect
        self.auto_answer = auto_answer
        self.held_offers: list[str] = []
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pc.addTransceiver(ForwardTrack("audio", f"audio_{client_id}"), direction="sendonly")
        for t in range(ntiles):
            for q in range(nqualities):
                self.pc.addTransceiver(
                    ForwardTrack("video", f"video_{client_id}_{t}_{q}"), direction="sendonly"
                )
        for tr in self.pc.getTransceivers():
            tr.setCodecPreferences(internals.pcm_capability(tr.kind))
            internals.bypass_receiver(tr.receiver)
        self.link: internals.RtpLink | None = None
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.offers: list[str] = []
        self.sfu_candidates: list[str] = []
        self.track_by_ssrc: dict[int, str] = {}
        self.frames: list[Frame] = []
        self.header_lengths: Counter[int] = Counter()
        self.seq_by_ssrc: dict[int, list[int]] = defaultdict(list)
        self.twcc_seen: list[int] = []
        self.packets = 0
        self.bytes = 0
        self.latencies_ns: list[int] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.last_answer = ""
        self._partials: dict[tuple, _Partial] = {}
        self._frame_nr: Counter[tuple] = Counter()
        self._seq: dict[int, int] = {}
        self._twcc = random.randrange(0, 65536)
        self._pending: list = []
        self._have_remote = False
        self._changed = asyncio.Event()
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.pc.on("connectionstatechange", self._on_state)

    # -- connection ----------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls, base_url: str, client_id: int, ntiles: int = 1, nqualities: int = 1, **kwargs: object
    ) -> TestPeer:
        peer = cls(base_url, client_id, ntiles, nqualities, **kwargs)  # type: ignore[arg-type]
        await peer.open()
        return peer

    def ws_url(self, **override: object) -> str:
        params = {
            "ntiles": self.ntiles,
            "nqualities": self.nqualities,
            "clientid": self.client_id,
            **override,
        }
        if self.room is not None:
            params.setdefault("room", self.room)
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return self.base_url.replace("http", "ws", 1) + "/websocket?" + query

    async def open(self) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.ws_url(), max_msg_size=16 * 2**20)
        self._reader = asyncio.create_task(self._read())

    async def wait_connected(self, timeout: float = 10) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def wait_closed(self, timeout: float = 10) -> None:
        await asyncio.wait_for(self._closed.wait(), timeout)

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.link is not None:
            self.link.close()
        await self.pc.close()
        if self.session is not None:
            await self.session.close()

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected" and self.link is not None and self.link.start_sending():
            self._connected.set()

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    self.close_code, self.close_reason = msg.data, msg.extra or ""
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                mtype, payload = sig.parse_message(msg.data)
                if mtype == sig.OFFER:
                    sdp_text = json.loads(payload)["sdp"]
                    self.offers.append(sdp_text)
                    if self.auto_answer:
                        await self._on_offer(sdp_text)
                    else:
                        self.held_offers.append(sdp_text)
                        self._changed.set()
                elif mtype == sig.CANDIDATE:
                    self.sfu_candidates.append(payload)
                    candidate = sig.parse_candidate(payload)
                    if self._have_remote:
                        await self.pc.addIceCandidate(candidate)
                    else:
                        self._pending.append(candidate)
        finally:
            if self.close_code is None:
                self.close_code = self.ws.close_code
            self._closed.set()
            self._changed.set()

    async def answer_held(self) -> None:
        """Answer the offers held back with ``auto_answer=False``, oldest first."""
        while self.held_offers:
            await self._on_offer(self.held_offers.pop(0))

    async def _on_offer(self, sdp_text: str) -> None:
        session = SessionDescription.parse(sdp_text)
        for media in session.media:
            if media.ssrc and media.msid:
                self.track_by_ssrc[media.ssrc[0].ssrc] = media.msid.split()[-1]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp_text, type="offer"))
        for tr in self.pc.getTransceivers():
            internals.bypass_receiver(tr.receiver)  # before aiortc's connect task starts them
        self._have_remote = True
        for candidate in self._pending:
            await self.pc.addIceCandidate(candidate)
        self._pending.clear()
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        first = self.link is None
        if first:
            self.link = internals.RtpLink(self.pc, self._on_rtp, 2**20, 4 * 2**20)
        local = self.pc.localDescription
        # like pion, the answer carries no candidates: they are trickled as bare lines
        stripped = SessionDescription.parse(local.sdp)
        for media in stripped.media:
            media.ice_candidates = []
            media.ice_candidates_complete = False
        stripped.type = "answer"
        lines = [sig.format_candidate(c) for c in candidates_in(local.sdp)] if first else []
        assert self.ws is not None
        if self.trickle_early:
            for line in lines:
                await self.ws.send_str(f"1@4@{line}")
        self.last_answer = "1@3@" + json.dumps({"type": "answer", "sdp": str(stripped)})
        await self.ws.send_str(self.last_answer)
        if not self.trickle_early:
            for line in lines:
                await self.ws.send_str(f"1@4@{line}")
        self._changed.set()

    # -- sending -------------------------------------------------------------------------------

    def _ssrc_of(self, track_id: str) -> int:
        for tr in self.pc.getTransceivers():
            if tr.sender.track is not None and tr.sender.track.id == track_id:
                return internals.sender_ssrc(tr.sender)
        raise KeyError(track_id)

    def _send_payloads(self, ssrc: int, pt: int, ts: int, payloads: list[bytes], stamp_at: int = 0) -> int:
        """Send fragments; with ``stamp_at`` each carries its send time (ns) at that payload offset."""
        assert self.link is not None, "not connected"
        seq = self._seq.get(ssrc, random.randrange(0, 32768))
        sent = 0
        ext = packet.twcc_ext_byte(packet.TWCC_EXT_ID)
        for i, payload in enumerate(payloads):
            seq = (seq + 1) & 0xFFFF
            self._twcc = (self._twcc + 1) & 0xFFFF
            marker_pt = pt | (0x80 if i == len(payloads) - 1 else 0)
            hdr = packet.build_header(marker_pt, seq, ts, ssrc, ext, self._twcc)
            if stamp_at:
                payload = (
                    payload[:stamp_at] + time.monotonic_ns().to_bytes(8, "little") + payload[stamp_at + 8 :]
                )
            sent += self.link.send(hdr + payload)
        self._seq[ssrc] = seq
        return sent

    def video_frame(
        self, tile: int, quality: int, data: bytes, *, client: int | None = None
    ) -> tuple[int, int, list[bytes]]:
        """(ssrc, timestamp, payloads) of the next frame of a tile at a quality, not yet sent."""
        key = ("video", tile, quality)
        frame_nr = self._frame_nr[key]
        self._frame_nr[key] += 1
        client = self.client_id if client is None else client
        payloads = packet.video_fragments(client, frame_nr, tile, quality, data)
        return (
            self._ssrc_of(f"video_{self.client_id}_{tile}_{quality}"),
            (frame_nr * 3000) & 0xFFFFFFFF,
            payloads,
        )

    def send_video_payloads(self, ssrc: int, ts: int, payloads: list[bytes], stamp: bool = False) -> int:
        return self._send_payloads(ssrc, packet.PT_VIDEO, ts, payloads, 28 if stamp else 0)

    def send_video_frame(
        self, tile: int, quality: int, data: bytes, *, client: int | None = None, stamp: bool = False
    ) -> int:
        """Send one point-cloud frame of a tile at a quality; returns packets handed to the socket."""
        return self.send_video_payloads(*self.video_frame(tile, quality, data, client=client), stamp=stamp)

    def send_audio_frame(self, data: bytes) -> int:
        frame_nr = self._frame_nr["audio"]
        self._frame_nr["audio"] += 1
        payloads = packet.audio_fragments(self.client_id, frame_nr, data)
        return self._send_payloads(
            self._ssrc_of(f"audio_{self.client_id}"), packet.PT_AUDIO, (frame_nr * 960) & 0xFFFFFFFF, payloads
        )

    def send_raw(self, data: bytes) -> bool:
        """Send an arbitrary (plain) RTP packet, for malformed-media tests."""
        assert self.link is not None
        return self.link.send(data)

    async def send_text(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(text)

    async def send_quality(self, decisions: str, pad: int = 0) -> None:
        await self.send_text("0@7@" + decisions + "\x00" * pad)

    # -- receiving -----------------------------------------------------------------------------

    def _on_rtp(self, data: bytes) -> None:
        self.packets += 1
        self.bytes += len(data)
        hlen = packet.header_length(data)
        self.header_lengths[hlen] += 1
        if not self.collect:
            if len(data) >= hlen + 36:
                self.latencies_ns.append(
                    time.monotonic_ns() - int.from_bytes(data[hlen + 28 : hlen + 36], "little")
                )
            return
        rtp = packet.parse(data)
        if rtp is None:
            return
        self.seq_by_ssrc[rtp.ssrc].append(rtp.seq)
        self._changed.set()
        twcc = packet.twcc_sequence(data, packet.TWCC_EXT_ID)
        if twcc is not None:
            self.twcc_seen.append(twcc)
        payload = data[rtp.payload_start : rtp.payload_end]
        if (rtp.marker_pt & 0x7F) == packet.PT_VIDEO:
            client, nr, total, off, _, tile, quality = packet.VIDEO_HEADER.unpack_from(payload)
            kind, body = "video", payload[28:]
        else:
            client, nr, total, off, _ = packet.AUDIO_HEADER.unpack_from(payload)
            tile = quality = 0
            kind, body = "audio", payload[20:]
        key = (kind, client, tile, quality, nr, rtp.ssrc)
        part = self._partials.setdefault(key, _Partial(total))
        if off not in part.parts:
            part.parts[off] = body
            part.size += len(body)
        if part.size >= part.total:
            del self._partials[key]
            blob = b"".join(part.parts[k] for k in sorted(part.parts))
            self.frames.append(
                Frame(kind, client, tile, quality, nr, blob, self.track_by_ssrc.get(rtp.ssrc, "?"))
            )
            self._changed.set()

    async def wait_for(self, predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        """Wait until ``predicate(self)`` holds, re-checking on every frame or signalling change."""

        async def loop() -> None:
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def frames_from(self, client: int, kind: str = "video", tile: int | None = None) -> list[Frame]:
        return [
            f
            for f in self.frames
            if f.client == client and f.kind == kind and (tile is None or f.tile == tile)
        ]
