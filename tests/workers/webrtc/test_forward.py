"""The data plane alone: validation, fan-out, sequence/timestamp rewriting, quality switching."""

from __future__ import annotations

import itertools

from workers.webrtc import packet
from workers.webrtc.forward import MAX_STALLS, Endpoint, Output, set_quality


class Recorder:
    """Receiving end of an Endpoint: keeps what would have been protected and sent."""

    srtp_errors = 0
    send_failures = 0
    send_calls = 0
    sending = True

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> bool:
        self.sent.append(data)
        return True

    def close(self) -> None:
        pass


def receiver(client: int) -> tuple[Endpoint, Recorder]:
    ep = Endpoint(client, 1, 1, 2**20)
    ep.set_ext_id(packet.TWCC_EXT_ID)
    ep.link = Recorder()  # type: ignore[assignment]
    return ep, ep.link  # type: ignore[return-value]


def source(ntiles: int = 1, nqualities: int = 3) -> Endpoint:
    src = Endpoint(1, ntiles, nqualities, 2**20)
    for q in range(nqualities):
        for t in range(ntiles):
            assert src.map_ssrc(100 + 10 * t + q, True, t, q)
    assert src.map_ssrc(99, False)
    return src


def subscribe(src: Endpoint, ep: Endpoint, tile: int | None = 0) -> Output:
    out = Output(ep, 5000 + ep.client_id, "x", src.client_id, tile, None)
    out.live = True
    (src.audio_outs if tile is None else src.tile_outs[tile]).append(out)
    return out


def rtp(ssrc: int, payload: bytes, seq: int = 1, ts: int = 1000, pt: int = packet.PT_VIDEO) -> bytes:
    # the sender's own header: CSRC-free, with a two-element extension block (24 bytes)
    ext = b"\xbe\xde\x00\x02" + bytes([0x31, 0, 7, 0x10, 1, 0, 0, 0])
    return (
        bytes([0x90, pt])
        + seq.to_bytes(2, "big")
        + ts.to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + ext
        + payload
    )


def frame(src: Endpoint, q: int, size: int, nr: int = 0, tile: int = 0) -> list[bytes]:
    ts = 90000 * (nr + 1) + q
    return [
        rtp(100 + 10 * tile + q, p, i, ts)
        for i, p in enumerate(packet.video_fragments(1, nr, tile, q, bytes(size)))
    ]


def qualities(rec: Recorder) -> list[int]:
    """Quality of each forwarded frame (first fragment), in order."""
    out = []
    for d in rec.sent:
        _, _, _, off, _, _, q = packet.VIDEO_HEADER.unpack_from(d, 20)
        if off == 0:
            out.append(q)
    return out


def test_forwarded_packets_have_20_byte_headers_and_the_payload_unchanged() -> None:
    src = source()
    (ep2, rec2), (ep3, rec3) = receiver(2), receiver(3)
    subscribe(src, ep2)
    subscribe(src, ep3)
    pkts = frame(src, 0, 3000)
    for p in pkts:
        src.on_rtp(p)
    for rec, ssrc in ((rec2, 5002), (rec3, 5003)):
        assert [packet.header_length(d) for d in rec.sent] == [20, 20, 20]
        assert [d[20:] for d in rec.sent] == [p[24:] for p in pkts]
        parsed = [packet.parse(d) for d in rec.sent]
        assert {r.ssrc for r in parsed if r} == {ssrc}
        seqs = [r.seq for r in parsed if r]
        assert [(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)] == [1, 1]
    assert ep2.packets_out == 3 and src.packets_in == 3


def test_validation_drops_and_counts() -> None:
    src = source()
    ep, rec = receiver(2)
    subscribe(src, ep)
    good = packet.video_fragments(1, 0, 0, 0, b"abc")[0]
    src.on_rtp(rtp(100, packet.video_fragments(7, 0, 0, 0, b"abc")[0]))  # foreign ClientNr
    src.on_rtp(rtp(100, good + b"x"))  # SeqLen does not match
    src.on_rtp(rtp(100, packet.video_fragments(1, 0, 2, 0, b"abc")[0]))  # wrong tile for the SSRC
    src.on_rtp(rtp(100, good[:20]))  # shorter than the video header
    src.on_rtp(rtp(100, good, pt=packet.PT_AUDIO))  # audio PT on a video stream
    src.on_rtp(rtp(555, good, pt=96))  # unknown SSRC, foreign PT
    src.on_rtp(b"\x80\x05\x00")  # truncated
    assert rec.sent == []
    assert dict(src.drops) == {
        "foreign_client": 1,
        "bad_app_header": 2,
        "malformed_rtp": 2,
        "bad_payload_type": 2,
    }
    src.on_rtp(rtp(100, good))
    assert len(rec.sent) == 1


def test_undeclared_ssrc_is_learnt_within_announced_tracks() -> None:
    src = Endpoint(1, 2, 2, 2**20)
    ep, rec = receiver(2)
    subscribe(src, ep, tile=1).want = 1
    set_quality({1: src.tile_outs[1][0]}, [-1, 1], 2)  # tile 1 -> quality 1 (tile 0 unknown: counted bad)
    src.on_rtp(rtp(777, packet.video_fragments(1, 0, 1, 1, b"hello")[0]))
    src.on_rtp(rtp(778, packet.video_fragments(1, 0, 5, 0, b"hello")[0]))  # tile 5 was never announced
    assert len(rec.sent) == 1 and dict(src.drops) == {"unknown_ssrc": 1}


def test_switch_at_boundary_mid_frame_and_stop() -> None:
    src = source()
    ep, rec = receiver(2)
    out = subscribe(src, ep)
    q0 = frame(src, 0, 5000, nr=0)
    for p in q0[:2]:
        src.on_rtp(p)
    assert set_quality({0: out}, [2], 3) == 0  # requested mid-frame
    for p in frame(src, 2, 3000, nr=0):  # a whole q2 frame while q0 is open: skipped
        src.on_rtp(p)
    for p in q0[2:]:  # q0 completes
        src.on_rtp(p)
    for p in frame(src, 1, 3000, nr=0) + frame(src, 2, 3000, nr=1) + frame(src, 0, 2000, nr=1):
        src.on_rtp(p)
    assert qualities(rec) == [0, 2]
    set_quality({0: out}, [-1], 3)  # at a boundary: stops at once
    for p in frame(src, 2, 3000, nr=2):
        src.on_rtp(p)
    assert qualities(rec) == [0, 2]
    set_quality({0: out}, [1], 3)
    for p in frame(src, 1, 100, nr=5):
        src.on_rtp(p)
    assert qualities(rec) == [0, 2, 1]
    seqs = [packet.parse(d).seq for d in rec.sent]  # type: ignore[union-attr]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    stamps = [packet.parse(d).ts for d in rec.sent]  # type: ignore[union-attr]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3  # rebased per frame, increasing


def test_switch_is_forced_when_the_open_frame_never_completes() -> None:
    src = source()
    ep, rec = receiver(2)
    out = subscribe(src, ep)
    src.on_rtp(frame(src, 0, 5000)[0])  # q0 opens a frame whose tail is lost
    set_quality({0: out}, [1], 3)
    for nr in range(MAX_STALLS + 1):
        for p in frame(src, 1, 100, nr=nr):
            src.on_rtp(p)
    assert qualities(rec) == [0, 1]


def test_audio_fans_out_unchanged_and_is_never_switched() -> None:
    src = source()
    ep, rec = receiver(2)
    subscribe(src, ep, tile=None)
    for i, p in enumerate(packet.audio_fragments(1, 0, bytes(2000))):
        src.on_rtp(rtp(99, p, seq=i, pt=packet.PT_AUDIO))
    assert [d[20:] for d in rec.sent] == packet.audio_fragments(1, 0, bytes(2000))
    assert rec.sent[0][1] == packet.PT_AUDIO


def test_not_yet_negotiated_outputs_drop() -> None:
    src = source()
    ep, rec = receiver(2)
    subscribe(src, ep).live = False
    src.on_rtp(frame(src, 0, 10)[0])
    assert rec.sent == [] and dict(ep.drops) == {"receiver_not_ready": 1}
