"""The forwarding data plane: decrypted RTP in, rewritten 20-byte-header RTP out.

Runs synchronously inside the datagram callback, so it is written for speed: slots, local
variables, one struct unpack per packet, no allocation besides the outgoing bytes. Quality
switching happens only at frame boundaries (the app header says where frames start and end), so a
receiver never sees half a frame from either quality.
"""

from __future__ import annotations

import random
from collections import Counter

from .internals import RtpLink
from .packet import AUDIO_HEADER, OUT_HEADER, PT_AUDIO, PT_VIDEO, VIDEO_HEADER, twcc_ext_byte

TS_STEP_ON_SWITCH = 3000  # one 30 fps frame at 90 kHz, so a switched stream keeps increasing
MAX_STALLS = 2  # frames of the wanted quality skipped while the old one never completes: then switch
DROP_REASONS = (
    "malformed_rtp",
    "bad_payload_type",
    "unknown_ssrc",
    "foreign_client",
    "bad_app_header",
    "srtp",
    "receiver_not_ready",
    "send_backlog",
)


class Output:
    """One republished track (``audio_<C>`` or ``video_<C>_<tile>``) towards one receiver."""

    __slots__ = (
        "active",
        "ep",
        "last_ts",
        "live",
        "mid_frame",
        "name",
        "seq",
        "source_id",
        "ssrc",
        "stalls",
        "tile",
        "transceiver",
        "ts_off",
        "want",
    )

    def __init__(
        self, ep: Endpoint, ssrc: int, name: str, source_id: int, tile: int | None, transceiver: object
    ) -> None:
        self.ep = ep
        self.ssrc = ssrc
        self.seq = random.randrange(0, 32768)
        self.ts_off = 0
        self.last_ts: int | None = None
        self.want = 0  # quality the receiver asked for; -1 = stopped
        self.active = 0  # quality being forwarded; -1 = idle, waiting for ``want`` to start a frame
        self.mid_frame = False  # the last forwarded packet did not end a frame
        self.stalls = 0  # wanted-quality frames skipped waiting for the current frame to end
        self.live = False  # set once the answer that negotiated this track is applied
        self.name = name
        self.transceiver = transceiver
        self.source_id = source_id
        self.tile = tile

    def send(self, marker_pt: int, ts: int, payload: bytes) -> None:
        ep = self.ep
        if not self.live:
            ep.drops["receiver_not_ready"] += 1
            return
        seq = self.seq = (self.seq + 1) & 0xFFFF
        ts = (ts + self.ts_off) & 0xFFFFFFFF
        self.last_ts = ts
        twcc = ep.twcc = (ep.twcc + 1) & 0xFFFF
        data = OUT_HEADER.pack(0x90, marker_pt, seq, ts, self.ssrc, 0xBEDE, 1, ep.ext_byte, twcc, 0) + payload
        if ep.link.send(data):
            ep.packets_out += 1
            ep.bytes_out += len(data)
        elif not ep.link.sending:
            ep.drops["receiver_not_ready"] += 1  # (a full send queue is counted by the link)

    def switch_to(self, quality: int, ts: int) -> None:
        self.active = quality
        self.stalls = 0
        if self.last_ts is not None:
            self.ts_off = (self.last_ts + TS_STEP_ON_SWITCH - ts) & 0xFFFFFFFF


class Inbound:
    """One incoming RTP stream of a peer: its audio, or one (tile, quality) of its point cloud."""

    __slots__ = ("outs", "quality", "tile", "video")

    def __init__(self, video: bool, tile: int, quality: int, outs: list[Output]) -> None:
        self.video = video
        self.tile = tile
        self.quality = quality
        self.outs = outs  # shared with the other qualities of the same tile


class Endpoint:
    """Data plane of one peer: parses what it sends, fans out to Outputs of other peers."""

    def __init__(self, client_id: int, ntiles: int, nqualities: int, max_frame_bytes: int) -> None:
        self.client_id = client_id
        self.ntiles = ntiles
        self.nqualities = nqualities
        self.max_frame_bytes = max_frame_bytes
        self.audio_outs: list[Output] = []
        self.tile_outs: list[list[Output]] = [[] for _ in range(ntiles)]
        self.streams: dict[int, Inbound] = {}
        self.link: RtpLink = _NO_LINK  # type: ignore[assignment]
        self.twcc = random.randrange(0, 65536)
        self.ext_byte = 0
        self.packets_in = self.bytes_in = self.packets_out = self.bytes_out = 0
        self.drops: Counter[str] = Counter()

    def set_ext_id(self, ext_id: int) -> None:
        self.ext_byte = twcc_ext_byte(ext_id)

    def map_ssrc(self, ssrc: int, video: bool, tile: int = 0, quality: int = 0) -> bool:
        """Bind an SSRC to a track of this peer; False if out of the announced tiles/qualities."""
        if video and not (0 <= tile < self.ntiles and 0 <= quality < self.nqualities):
            return False
        if len(self.streams) >= 2 * (1 + self.ntiles * self.nqualities) and ssrc not in self.streams:
            return False
        outs = self.tile_outs[tile] if video else self.audio_outs
        self.streams[ssrc] = Inbound(video, tile, quality, outs)
        return True

    def _learn(self, ssrc: int, pt: int, data: bytes, start: int, end: int) -> Inbound | None:
        """Fallback when the answer did not declare an SSRC: trust the app header's tile/quality."""
        if pt == PT_AUDIO:
            ok = self.map_ssrc(ssrc, False)
        elif pt == PT_VIDEO and end - start >= VIDEO_HEADER.size:
            _, _, _, _, _, tile, quality = VIDEO_HEADER.unpack_from(data, start)
            ok = self.map_ssrc(ssrc, True, tile, quality)
        else:
            ok = False
        return self.streams.get(ssrc) if ok else None

    def on_rtp(self, data: bytes) -> None:
        """Hot path: one decrypted RTP packet from this peer."""
        n = len(data)
        self.packets_in += 1
        self.bytes_in += n
        drops = self.drops
        b0 = data[0]
        if n < 12 or b0 & 0xC0 != 0x80:
            drops["malformed_rtp"] += 1
            return
        start = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            if start + 4 > n:
                drops["malformed_rtp"] += 1
                return
            start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
        end = n - data[-1] if b0 & 0x20 else n
        if start > end:
            drops["malformed_rtp"] += 1
            return
        marker_pt = data[1]
        pt = marker_pt & 0x7F
        ssrc = int.from_bytes(data[8:12], "big")
        stream = self.streams.get(ssrc)
        if stream is None:
            if pt != PT_VIDEO and pt != PT_AUDIO:
                drops["bad_payload_type"] += 1
                return
            stream = self._learn(ssrc, pt, data, start, end)
            if stream is None:
                drops["unknown_ssrc"] += 1
                return
        size = end - start
        ts = int.from_bytes(data[4:8], "big")
        if stream.video:
            if pt != PT_VIDEO or size < 28:
                drops["bad_payload_type" if pt != PT_VIDEO else "malformed_rtp"] += 1
                return
            client, _, flen, soff, slen, tile, _ = VIDEO_HEADER.unpack_from(data, start)
            if client != self.client_id:
                drops["foreign_client"] += 1
                return
            if slen != size - 28 or soff + slen > flen or flen > self.max_frame_bytes or tile != stream.tile:
                drops["bad_app_header"] += 1
                return
            payload = data[start:end]
            quality = stream.quality
            first = soff == 0
            last = soff + slen == flen
            for out in stream.outs:
                active = out.active
                if active == quality:
                    out.send(marker_pt, ts, payload)
                    out.mid_frame = not last
                    if last and out.want != quality:
                        out.active = -1  # frame done: idle until the wanted quality starts a frame
                elif first and out.want == quality:
                    if active < 0 or out.stalls >= MAX_STALLS:
                        out.switch_to(quality, ts)
                        out.send(marker_pt, ts, payload)
                        out.mid_frame = not last
                    else:
                        out.stalls += 1  # the current quality's frame is still open
        else:
            if pt != PT_AUDIO or size < 20:
                drops["bad_payload_type" if pt != PT_AUDIO else "malformed_rtp"] += 1
                return
            client, _, flen, soff, slen = AUDIO_HEADER.unpack_from(data, start)
            if client != self.client_id:
                drops["foreign_client"] += 1
                return
            if slen != size - 20 or soff + slen > flen or flen > self.max_frame_bytes:
                drops["bad_app_header"] += 1
                return
            payload = data[start:end]
            for out in stream.outs:
                out.send(marker_pt, ts, payload)

    def counters(self) -> dict[str, int]:
        drops = Counter(self.drops)
        drops["srtp"] += self.link.srtp_errors
        drops["send_backlog"] += self.link.send_failures
        return {
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "send_calls": self.link.send_calls,
            **{f"drop_{k}": v for k, v in drops.items()},
        }


class _NoLink:
    """Stand-in until the peer's transport exists: nothing is sent."""

    srtp_errors = 0
    send_failures = 0
    send_calls = 0
    sending = False

    def send(self, data: bytes) -> bool:
        return False

    def close(self) -> None:
        pass


_NO_LINK = _NoLink()


def set_quality(outs: dict[int, Output], qualities: list[int], nqualities: int) -> int:
    """Apply one client's per-tile decisions; returns how many values were out of range."""
    bad = 0
    for tile, quality in enumerate(qualities):
        out = outs.get(tile)
        if out is None or not -1 <= quality < nqualities:
            bad += 1
            continue
        out.want = quality
        out.stalls = 0
        if quality != out.active and not out.mid_frame:
            out.active = -1  # at a frame boundary: take effect at once
    return bad
