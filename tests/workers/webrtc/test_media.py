"""End to end through the SFU subprocess with real aiortc peers: media, tracks, rooms, ICE."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from aiortc.sdp import SessionDescription

from workers.webrtc.testpeer import TestPeer

from .conftest import SfuProcess


def assert_wire_contract(peer: TestPeer) -> None:
    """Every packet had a 20-byte header, and sequence numbers run without gaps per SSRC."""
    assert peer.packets > 0
    assert dict(peer.header_lengths) == {20: peer.packets}
    for ssrc, seqs in peer.seq_by_ssrc.items():
        steps = {(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)}
        assert steps <= {1}, f"sequence gap on {ssrc}: {steps}"
    assert len(set(peer.twcc_seen)) == len(peer.twcc_seen)  # transport-wide numbers are unique


def offer_tracks(sdp_text: str) -> dict[str, str]:
    """msid track id -> direction of every m-line in an offer."""
    return {m.msid.split()[-1]: m.direction for m in SessionDescription.parse(sdp_text).media if m.msid}


async def test_two_peers_exchange_audio_and_tiles_byte_exactly(sfu: SfuProcess) -> None:
    a, b = await sfu.connected_peers((1, 2, 1), (2, 1, 1))
    big, small, voice = os.urandom(600_000), os.urandom(50_000), [os.urandom(n) for n in (100, 1152, 3000)]
    assert (
        a.send_video_frame(0, 0, big) == 525
    )  # 600 000 / 1144 fragments, >= 128: past aiortc's jitter buffer
    a.send_video_frame(1, 0, small)
    for v in voice:
        a.send_audio_frame(v)
    back = os.urandom(20_000)
    b.send_video_frame(0, 0, back)
    b.send_audio_frame(b"b-audio")
    await b.wait_for(lambda p: len(p.frames) == 5)
    await a.wait_for(lambda p: len(p.frames) == 2)
    got = {(f.kind, f.tile, f.frame_nr): f for f in b.frames}
    assert got["video", 0, 0].data == big and got["video", 0, 0].track == "video_1_0"
    assert got["video", 1, 0].data == small and got["video", 1, 0].track == "video_1_1"
    assert [got["audio", 0, n].data for n in range(3)] == voice
    assert {got["audio", 0, n].track for n in range(3)} == {"audio_1"}
    assert sorted((f.kind, f.client, f.data) for f in a.frames) == [
        ("audio", 2, b"b-audio"),
        ("video", 2, back),
    ]
    assert_wire_contract(a)
    assert_wire_contract(b)
    # the offer negotiates only the pcm codecs and the transport-cc extension (hence 20-byte headers)
    offer = SessionDescription.parse(b.offers[-1])
    assert {c.mimeType for m in offer.media for c in m.rtp.codecs} == {"audio/pcm", "video/pcm"}
    assert {(c.mimeType, c.payloadType) for m in offer.media for c in m.rtp.codecs} == {
        ("audio/pcm", 6),
        ("video/pcm", 5),
    }
    assert {e.uri for m in offer.media for e in m.rtp.headerExtensions} == {
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
    }
    assert [m.direction for m in offer.media[:2]] == ["recvonly", "recvonly"]  # 1 audio + 1x1 video
    assert {c.type for c in offer.media[0].ice_candidates} == {"host"}  # no STUN by default
    assert {f.algorithm for m in offer.media for f in m.dtls.fingerprints} == {"sha-256"}
    assert (
        offer_tracks(b.offers[-1]).items()
        >= {"audio_1": "sendonly", "video_1_0": "sendonly", "video_1_1": "sendonly"}.items()
    )
    stats = await sfu.stats()
    assert stats["packets_out"] == stats["packets_in"] == a.packets + b.packets
    assert not any(stats["drops"].values())


async def test_four_peers_receive_everyone_else(sfu: SfuProcess) -> None:
    peers = [
        await sfu.peer(c, t, q, trickle_early=c % 2 == 0)
        for c, t, q in [(1, 1, 1), (2, 2, 1), (3, 1, 2), (4, 3, 1)]
    ]
    for p in peers:  # peers 2 and 4 trickle candidates before their answer: the SFU queues them
        await p.wait_connected()
    await sfu.wait_settled(4)
    sent: dict[tuple[int, str, int], bytes] = {}
    for p in peers:
        for tile in range(p.ntiles):
            sent[p.client_id, "video", tile] = data = os.urandom(5_000 + 40_000 * tile + p.client_id)
            p.send_video_frame(tile, 0, data)
        sent[p.client_id, "audio", 0] = voice = os.urandom(400)
        p.send_audio_frame(voice)
    for p in peers:
        expected = {k: v for k, v in sent.items() if k[0] != p.client_id}
        want = len(expected)
        await p.wait_for(lambda q, n=want: len(q.frames) >= n)
        assert {(f.client, f.kind, f.tile): f.data for f in p.frames} == expected
        assert_wire_contract(p)


async def test_quality_switching_per_receiver_at_frame_boundaries(sfu: SfuProcess) -> None:
    a, b, c = await sfu.connected_peers((1, 2, 3), (2, 1, 1), (3, 1, 1))

    async def round_() -> None:
        before = len(b.frames), len(c.frames)
        for tile in range(2):
            for q in range(3):
                a.send_video_frame(tile, q, os.urandom(3000 + 1000 * q))
        a.send_audio_frame(b"tick")  # audio goes last: when it arrives, the round is through
        await b.wait_for(
            lambda p: p.frames[-1:] and p.frames[-1].kind == "audio" and len(p.frames) > before[0]
        )
        await c.wait_for(
            lambda p: p.frames[-1:] and p.frames[-1].kind == "audio" and len(p.frames) > before[1]
        )

    def video(p: TestPeer, start: int) -> list[tuple[int, int]]:
        return [(f.tile, f.quality) for f in p.frames[start:] if f.kind == "video"]

    await round_()
    assert video(b, 0) == video(c, 0) == [(0, 0), (1, 0)]  # quality 0 by default

    await b.send_quality("1,2,-1", pad=900)  # tile 0 -> quality 2, tile 1 stopped; NUL padded like the peer
    await sfu.wait_stats(lambda s: [p["quality_messages"] for p in s["peer_list"]] == [0, 1, 0])
    mark_b, mark_c = len(b.frames), len(c.frames)
    await round_()
    assert video(b, mark_b) == [(0, 2)]
    assert video(c, mark_c) == [(0, 0), (1, 0)]  # decisions are per receiver

    await b.send_quality("1,1,0;7,1;junk")  # unknown client and junk are ignored
    await sfu.wait_stats(lambda s: [p["quality_messages"] for p in s["peer_list"]] == [0, 2, 0])
    mark_b = len(b.frames)
    await round_()
    assert video(b, mark_b) == [(0, 1), (1, 0)]
    # one republished track per tile: the same SSRC carried every quality, numbered without gaps
    assert {f.track for f in b.frames if f.kind == "video"} == {"video_1_0", "video_1_1"}
    assert_wire_contract(b)
    stats = await sfu.stats()
    assert stats["junk_quality_entries"] == 2


async def test_switch_requested_mid_frame_completes_the_frame_first(sfu: SfuProcess) -> None:
    a, b = await sfu.connected_peers((1, 1, 2), (2, 1, 1))
    data0 = os.urandom(10_000)
    ssrc, ts, payloads = a.video_frame(0, 0, data0)
    a.send_video_payloads(ssrc, ts, payloads[:4])
    await b.wait_for(lambda p: sum(len(s) for s in p.seq_by_ssrc.values()) == 4)
    await b.send_quality("1,1")
    await sfu.wait_stats(lambda s: s["peer_list"][1]["quality_messages"] == 1)
    data1 = os.urandom(10_000)
    a.send_video_frame(0, 1, data1)  # whole q1 frame while q0 is mid-frame: not forwarded
    a.send_video_payloads(ssrc, ts, payloads[4:])  # q0 frame completes
    data1b = os.urandom(7_000)
    a.send_video_frame(0, 1, data1b)  # the next q1 frame starts: switch
    await b.wait_for(lambda p: len(p.frames) == 2)
    assert [(f.quality, f.data) for f in b.frames] == [(0, data0), (1, data1b)]
    assert_wire_contract(b)


async def test_departed_peer_tracks_are_removed_and_others_renegotiated(sfu: SfuProcess) -> None:
    a, b, c = await sfu.connected_peers((1, 1, 1), (2, 1, 1), (3, 2, 1))
    offers_a = len(a.offers)
    assert offer_tracks(a.offers[-1])["video_3_1"] == "sendonly"
    await c.close()
    stats = await sfu.wait_settled(2)
    assert stats["closed"] == {"connection closed": 1}
    await a.wait_for(lambda p: len(p.offers) > offers_a)
    tracks = offer_tracks(a.offers[-1])
    assert {k: tracks[k] for k in ("audio_3", "video_3_0", "video_3_1")} == dict.fromkeys(
        ("audio_3", "video_3_0", "video_3_1"), "inactive"
    )
    assert tracks["video_2_0"] == "sendonly"
    data = os.urandom(30_000)
    b.send_video_frame(0, 0, data)
    await a.wait_for(lambda p: any(f.data == data for f in p.frames))
    assert stats["renegotiations"] >= 3


async def test_renegotiation_is_serialised_and_coalesced(sfu: SfuProcess) -> None:
    slow = await sfu.peer(1, auto_answer=False)
    await slow.wait_for(lambda p: len(p.offers) == 1)
    others = [await sfu.peer(c) for c in (2, 3, 4)]  # three track changes while slow's offer is pending
    for p in others:
        await p.wait_connected()
    await sfu.wait_stats(lambda s: sum(p["connection"] == "connected" for p in s["peer_list"]) == 3)
    assert len(slow.offers) == 1  # nothing is offered while an offer is outstanding
    await slow.answer_held()
    await slow.wait_for(lambda p: len(p.offers) == 2)
    await slow.answer_held()
    await slow.wait_connected()
    await sfu.wait_settled(4)
    assert len(slow.offers) == 2  # one offer carried all three joins
    assert {"audio_2", "audio_3", "audio_4"} <= set(offer_tracks(slow.offers[1]))
    assert not {"audio_2", "audio_3", "audio_4"} & set(offer_tracks(slow.offers[0]))


async def test_duplicate_client_id_newer_connection_replaces_older(sfu: SfuProcess) -> None:
    old, b = await sfu.connected_peers((1, 1, 1), (2, 1, 1))
    new = await sfu.peer(1)
    await old.wait_closed()
    assert (old.close_code, old.close_reason) == (
        4001,
        "replaced by a newer connection with the same client id",
    )
    await new.wait_connected()
    await sfu.wait_settled(2)
    data = os.urandom(20_000)
    new.send_video_frame(0, 0, data)
    await b.wait_for(lambda p: any(f.data == data for f in p.frames))
    stats = await sfu.stats()
    assert [p["client_id"] for p in stats["peer_list"]] == [1, 2]
    assert stats["closed"] == {"replaced by a newer connection with the same client id": 1}


async def test_rooms_isolate_peers_with_the_same_client_ids(sfu: SfuProcess) -> None:
    a1 = await sfu.peer(1, room="red")
    a2 = await sfu.peer(2, room="red")
    b1 = await sfu.peer(1, room="blue")
    for p in (a1, a2, b1):
        await p.wait_connected()
    await sfu.wait_settled(3)
    data = os.urandom(10_000)
    a1.send_video_frame(0, 0, data)
    b1.send_video_frame(0, 0, os.urandom(100))
    await a2.wait_for(lambda p: len(p.frames) == 1)
    assert a2.frames[0].data == data
    stats = await sfu.stats()
    assert stats["rooms"] == 2 and stats["peers"] == 3
    assert set(offer_tracks(b1.offers[-1]).values()) == {"recvonly"}  # nothing from room "red"
    assert "audio_2" in offer_tracks(a1.offers[-1])
    assert b1.frames == [] and b1.packets == 0


@pytest.mark.sfu_settings({"public_ip": "203.0.113.7"})
async def test_candidates_stay_in_the_udp_slice_and_public_ip_is_advertised(sfu: SfuProcess) -> None:
    peers = await sfu.connected_peers((1, 1, 1), (2, 1, 1), (3, 1, 1))
    low, high = sfu.udp
    ports = set()
    for p in peers:
        in_sdp = SessionDescription.parse(p.offers[0]).media[0].ice_candidates
        trickled = [line.split() for line in p.sfu_candidates]
        assert len(trickled) == len(in_sdp) == 2
        for c in in_sdp:
            assert low <= c.port <= high
            assert (c.type, c.ip) in {("host", "127.0.0.1"), ("srflx", "203.0.113.7")}
        host = next(c for c in in_sdp if c.type == "host")
        srflx = next(c for c in in_sdp if c.type == "srflx")
        assert (srflx.port, srflx.relatedAddress, srflx.relatedPort) == (host.port, "127.0.0.1", host.port)
        assert {(t[4], int(t[5]), t[7]) for t in trickled} == {(c.ip, c.port, c.type) for c in in_sdp}
        ports.add(host.port)
    stats = await sfu.stats()
    assert {p["local_port"] for p in stats["peer_list"]} == ports and len(ports) == 3


ONE_PORT = random.randrange(20000, 60000)


@pytest.mark.sfu_settings({}, extra=["--udp-ports", f"{ONE_PORT}:{ONE_PORT}"])
async def test_exhausted_udp_slice_refuses_the_peer_cleanly(sfu: SfuProcess) -> None:
    a = await sfu.peer(1)
    await a.wait_connected()
    b = await sfu.peer(2)
    await b.wait_closed()
    assert (b.close_code, b.close_reason) == (
        1013,
        "no ICE candidate could be gathered (UDP ports exhausted?)",
    )
    stats = await sfu.wait_settled(1)
    assert stats["peer_list"][0]["local_port"] == ONE_PORT


async def test_join_leave_cycles_return_tasks_and_peers_to_baseline(sfu: SfuProcess) -> None:
    baseline = await sfu.stats()
    rss = []
    for cycle in range(4):
        a, b = await sfu.connected_peers((1, 2, 2), (2, 1, 1))
        a.send_video_frame(1, 0, os.urandom(200_000))
        await b.wait_for(lambda p: len(p.frames) == 1)
        for p in (a, b):
            await p.close()
        sfu.peers.clear()
        stats = await sfu.wait_stats(lambda s: s["peers"] == 0 and s["tasks"] == baseline["tasks"])
        rss.append(_rss(sfu))
        assert stats["joined"] == 2 * (cycle + 1)
    stats = await sfu.stats()
    assert stats["tasks"] == baseline["tasks"] and stats["rooms"] == 0
    _, body = await sfu.get("/stats?gc=1")
    assert '"peer_objects": 0' in body
    assert rss[-1] - rss[1] < 8 * 2**20, rss  # steady state: no growth per cycle


def _rss(sfu: SfuProcess) -> int:
    import psutil

    return psutil.Process(sfu.proc.pid).memory_info().rss


async def test_malformed_media_is_dropped_and_counted(sfu: SfuProcess) -> None:
    a, b = await sfu.connected_peers((1, 1, 1), (2, 1, 1))
    a.send_video_frame(0, 0, os.urandom(500), client=9)  # spoofed ClientNr
    ssrc, ts, payloads = a.video_frame(0, 0, os.urandom(3000))
    payloads[1] = payloads[1][:100]  # SeqLen no longer matches the fragment
    a.send_video_payloads(ssrc, ts, payloads)
    a.send_raw(bytes([0x80, 96]) + os.urandom(10) + b"x" * 50)  # unknown SSRC, foreign payload type
    a.send_raw(bytes([0xA0, 5]) + bytes(10) + b"x" * 40 + b"\xff")  # padding longer than the packet
    good = os.urandom(4000)
    a.send_video_frame(0, 0, good)
    await b.wait_for(lambda p: any(f.data == good for f in p.frames))
    stats = await sfu.wait_stats(lambda s: s["drops"]["malformed_rtp"] == 1)
    assert {k: v for k, v in stats["drops"].items() if v} == {
        "foreign_client": 1,
        "bad_app_header": 1,
        "bad_payload_type": 1,
        "malformed_rtp": 1,
    }
    assert [f.data for f in b.frames] == [good]  # nothing partial or spoofed was delivered
