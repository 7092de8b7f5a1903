"""RTP header helpers: the 20-byte output header and tolerant parsing of what peers send."""

import struct

from workers.webrtc import packet


def test_built_header_is_exactly_20_bytes_with_one_twcc_element() -> None:
    hdr = packet.build_header(
        0x80 | packet.PT_VIDEO, 65535, 2**32 - 1, 0xDEADBEEF, packet.twcc_ext_byte(3), 513
    )
    assert len(hdr) == packet.HEADER_SIZE == 20
    assert hdr[0] == 0x90  # V=2, X=1, no padding, no CSRC
    assert hdr[1] == 0x80 | 5
    assert struct.unpack("!HII", hdr[2:12]) == (65535, 2**32 - 1, 0xDEADBEEF)
    assert hdr[12:16] == b"\xbe\xde\x00\x01"
    assert packet.header_length(hdr + b"payload") == 20
    assert packet.twcc_sequence(hdr + b"x", 3) == 513
    assert packet.twcc_sequence(hdr + b"x", 4) is None


def test_parse_skips_csrcs_extensions_and_padding() -> None:
    csrc = struct.pack("!II", 1, 2)
    ext = struct.pack("!HH", 0xBEDE, 2) + bytes([0x22, 1, 2, 3, 0x10, 9, 0, 0])
    body = b"abcdef"
    pad = b"\x00\x00\x03"
    data = bytes([0xB2, 0x05]) + struct.pack("!HII", 7, 8, 9) + csrc + ext + body + pad
    rtp = packet.parse(data)
    assert rtp is not None
    assert (rtp.seq, rtp.ts, rtp.ssrc) == (7, 8, 9)
    assert data[rtp.payload_start : rtp.payload_end] == body


def test_parse_rejects_short_or_inconsistent_packets() -> None:
    assert packet.parse(b"\x80\x05") is None
    assert packet.parse(b"\x40" + bytes(15)) is None  # version 1
    assert packet.parse(bytes([0x90, 5]) + bytes(10) + b"\xbe\xde\x00\x09") is None  # extension past end
    assert packet.parse(bytes([0xA0, 5]) + bytes(10) + b"\x20") is None  # padding longer than packet


def test_fragments_follow_the_peer_layout() -> None:
    data = bytes(range(256)) * 10  # 2560 bytes -> 1144 + 1144 + 272
    frags = packet.video_fragments(3, 7, 1, 2, data)
    assert [len(f) - 28 for f in frags] == [1144, 1144, 272]
    fields = [packet.VIDEO_HEADER.unpack_from(f) for f in frags]
    assert fields[1] == (3, 7, 2560, 1144, 1144, 1, 2)
    assert b"".join(f[28:] for f in frags) == data
    audio = packet.audio_fragments(4, 9, b"x" * 1200)
    assert [packet.AUDIO_HEADER.unpack_from(f) for f in audio] == [
        (4, 9, 1200, 0, 1152),
        (4, 9, 1200, 1152, 48),
    ]
