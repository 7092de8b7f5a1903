"""RTP header handling for the forwarding path, without aiortc's per-packet objects.

Every packet the SFU sends carries exactly a 20-byte header: the 12 fixed bytes plus one RFC 8285
one-byte extension block holding the transport-wide sequence number. The Go peer strips exactly 20
bytes before reading the payload header, so this length is part of the wire contract.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

PT_VIDEO = 5
PT_AUDIO = 6
CLOCK_RATE = 90000
TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
TWCC_EXT_ID = 3

HEADER_SIZE = 20
VIDEO_HEADER = struct.Struct("<7I")  # ClientNr, FrameNr, FrameLen, SeqOffset, SeqLen, TileNr, Quality
AUDIO_HEADER = struct.Struct("<5I")  # ClientNr, FrameNr, FrameLen, SeqOffset, SeqLen
VIDEO_DATA_MAX = 1144
AUDIO_DATA_MAX = 1152

# V=2, X=1 | M+PT | seq | timestamp | ssrc | 0xBEDE | length 1 word | id/len | twcc seq | pad
OUT_HEADER = struct.Struct("!BBHIIHHBHB")
FIXED = struct.Struct("!HII")
EXT_PROFILE_ONE_BYTE = 0xBEDE
assert OUT_HEADER.size == HEADER_SIZE


def twcc_ext_byte(ext_id: int) -> int:
    """The one-byte extension element header for a 2-byte value."""
    return (ext_id << 4) | 1


def build_header(marker_pt: int, seq: int, ts: int, ssrc: int, ext_byte: int, twcc_seq: int) -> bytes:
    return OUT_HEADER.pack(0x90, marker_pt, seq, ts, ssrc, EXT_PROFILE_ONE_BYTE, 1, ext_byte, twcc_seq, 0)


class Rtp(NamedTuple):
    marker_pt: int
    seq: int
    ts: int
    ssrc: int
    payload_start: int
    payload_end: int


def parse(data: bytes) -> Rtp | None:
    """Locate the payload of an RTP packet; None when the header is inconsistent."""
    n = len(data)
    if n < 12:
        return None
    b0 = data[0]
    if b0 & 0xC0 != 0x80:
        return None
    start = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if start + 4 > n:
            return None
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    end = n - data[-1] if b0 & 0x20 else n
    if start > end:
        return None
    seq, ts, ssrc = FIXED.unpack_from(data, 2)
    return Rtp(data[1], seq, ts, ssrc, start, end)


def header_length(data: bytes) -> int:
    """Length of the RTP header including CSRCs and the extension block (for assertions)."""
    b0 = data[0]
    start = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    return start


def twcc_sequence(data: bytes, ext_id: int) -> int | None:
    """The transport-wide sequence number in a one-byte extension block, if present."""
    if not data[0] & 0x10:
        return None
    pos = 12 + 4 * (data[0] & 0x0F)
    if (data[pos] << 8 | data[pos + 1]) != EXT_PROFILE_ONE_BYTE:
        return None
    end = pos + 4 + 4 * ((data[pos + 2] << 8) | data[pos + 3])
    pos += 4
    while pos < end:
        b = data[pos]
        if b == 0:
            pos += 1
            continue
        length = (b & 0x0F) + 1
        if b >> 4 == ext_id and length == 2:
            return (data[pos + 1] << 8) | data[pos + 2]
        pos += 1 + length
    return None


def video_fragments(client: int, frame_nr: int, tile: int, quality: int, data: bytes) -> list[bytes]:
    """Split one point-cloud frame into payloads the way the Go peer does (used by test peers)."""
    total = len(data)
    return [
        VIDEO_HEADER.pack(client, frame_nr, total, off, len(data[off : off + VIDEO_DATA_MAX]), tile, quality)
        + data[off : off + VIDEO_DATA_MAX]
        for off in range(0, max(total, 1), VIDEO_DATA_MAX)
    ]


def audio_fragments(client: int, frame_nr: int, data: bytes) -> list[bytes]:
    total = len(data)
    return [
        AUDIO_HEADER.pack(client, frame_nr, total, off, len(data[off : off + AUDIO_DATA_MAX]))
        + data[off : off + AUDIO_DATA_MAX]
        for off in range(0, max(total, 1), AUDIO_DATA_MAX)
    ]
