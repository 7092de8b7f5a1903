"""One test per private aiortc/aioice detail the SFU depends on (see workers/webrtc/README.md).

If aiortc or aioice change any of them, these fail with the name of the internal in the test id.
"""

from __future__ import annotations

import asyncio
import os
import threading

import aioice.ice
import aiortc.codecs
import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection
from aiortc.sdp import SessionDescription

from workers.webrtc import internals, packet
from workers.webrtc.peer import ForwardTrack
from workers.webrtc.sdp import candidates_in


def config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


async def connected_pair() -> tuple[RTCPeerConnection, RTCPeerConnection, list[bytes], list[bytes]]:
    """An SFU-like offerer (recvonly + one sendonly track) and a peer-like answerer, both with RtpLinks."""
    sfu, peer = RTCPeerConnection(config()), RTCPeerConnection(config())
    for tr in [
        sfu.addTransceiver("audio", "recvonly"),
        sfu.addTransceiver("video", "recvonly"),
        sfu.addTransceiver(ForwardTrack("video", "video_9_0"), "sendonly"),
        peer.addTransceiver(ForwardTrack("audio", "audio_1"), "sendonly"),
        peer.addTransceiver(ForwardTrack("video", "video_1_0_0"), "sendonly"),
    ]:
        tr.setCodecPreferences(internals.pcm_capability(tr.kind))
        internals.bypass_receiver(tr.receiver)
    got_sfu: list[bytes] = []
    got_peer: list[bytes] = []
    arrived = asyncio.Event()

    def collect(into: list[bytes]):  # type: ignore[no-untyped-def]
        def on_rtp(data: bytes) -> None:
            into.append(data)
            arrived.set()

        return on_rtp

    await sfu.setLocalDescription(await sfu.createOffer())
    sfu_link = internals.RtpLink(sfu, collect(got_sfu), 2**20, 2**22)
    await peer.setRemoteDescription(sfu.localDescription)
    for tr in peer.getTransceivers():
        internals.bypass_receiver(tr.receiver)
    await peer.setLocalDescription(await peer.createAnswer())
    peer_link = internals.RtpLink(peer, collect(got_peer), 2**20, 2**22)
    both = asyncio.Event()

    def check() -> None:
        if sfu.connectionState == peer.connectionState == "connected":
            both.set()

    sfu.on("connectionstatechange", check)
    peer.on("connectionstatechange", check)
    await sfu.setRemoteDescription(peer.localDescription)
    await asyncio.wait_for(both.wait(), 10)
    assert sfu_link.start_sending() and peer_link.start_sending()
    sfu.links, peer.links, sfu.arrived = sfu_link, peer_link, arrived  # type: ignore[attr-defined]
    return sfu, peer, got_sfu, got_peer


async def test_check_internals_accepts_the_installed_versions() -> None:
    internals.check_internals()


def test_check_internals_names_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    monkeypatch.delattr(aioice.ice, "get_host_addresses")
    with pytest.raises(RuntimeError) as err:
        internals.check_internals()
    assert "aiortc 1.17.0 is not a tested version" in str(err.value)
    assert "aioice.ice.get_host_addresses is gone" in str(err.value)


def test_codec_and_header_extension_tables() -> None:
    """aiortc.codecs.CODECS / HEADER_EXTENSIONS: module-level tables read when building offers."""
    assert {c.mimeType for c in aiortc.RTCRtpSender.getCapabilities("video").codecs} >= {"video/pcm"}
    assert [c.mimeType for c in internals.pcm_capability("audio")] == ["audio/pcm"]
    assert [e.uri for e in aiortc.codecs.HEADER_EXTENSIONS["video"]] == [packet.TWCC_URI]


async def test_offer_uses_registered_codecs_and_only_transport_cc() -> None:
    pc = RTCPeerConnection(config())
    try:
        for kind in ("audio", "video"):
            pc.addTransceiver(kind, "recvonly").setCodecPreferences(internals.pcm_capability(kind))
        offer = SessionDescription.parse((await pc.createOffer()).sdp)
        assert [[(c.mimeType, c.payloadType, c.clockRate) for c in m.rtp.codecs] for m in offer.media] == [
            [("audio/pcm", 6, 90000)],
            [("video/pcm", 5, 90000)],
        ]
        assert {(e.id, e.uri) for m in offer.media for e in m.rtp.headerExtensions} == {(3, packet.TWCC_URI)}
    finally:
        await pc.close()


async def test_rtp_link_raw_path_and_receiver_bypass() -> None:
    """Connection.data_received hook, _rx_srtp/_tx_srtp, _nominated, RTCRtpReceiver.receive bypass."""
    threads_before = {t.name for t in threading.enumerate()}
    sfu, peer, got_sfu, got_peer = await connected_pair()
    try:
        payload = os.urandom(1172)
        peer_ssrc = internals.sender_ssrc(peer.getTransceivers()[1].sender)
        sent = [packet.build_header(packet.PT_VIDEO, i, 2, peer_ssrc, 0x31, i) + payload for i in range(200)]
        for data in sent:  # more than aiortc's 128-packet jitter buffer would hold as one frame
            assert peer.links.send(data)  # type: ignore[attr-defined]
        back = (
            packet.build_header(
                packet.PT_VIDEO, 7, 8, internals.sender_ssrc(sfu.getTransceivers()[2].sender), 0x31, 9
            )
            + payload
        )
        assert sfu.links.send(back)  # type: ignore[attr-defined]

        async def until_all_arrived() -> None:
            while len(got_sfu) < 200 or not got_peer:
                sfu.arrived.clear()  # type: ignore[attr-defined]
                await sfu.arrived.wait()  # type: ignore[attr-defined]

        await asyncio.wait_for(until_all_arrived(), 5)
        assert got_sfu == sent and got_peer == [back]
        assert peer.links.send_calls == 4  # type: ignore[attr-defined]  # 200 packets, GSO runs of 53
        decoders = {t.name for t in threading.enumerate()} - threads_before
        assert not {n for n in decoders if "decoder" in n}, decoders
        assert sfu.links.local_port() in {c.port for c in candidates_in(sfu.localDescription.sdp)}  # type: ignore
    finally:
        sfu.links.close()  # type: ignore[attr-defined]
        await asyncio.gather(sfu.close(), peer.close())


async def test_sender_ssrc_is_the_one_in_the_sdp() -> None:
    """RTCRtpSender._ssrc: what the SFU writes into forwarded packets must match a=ssrc."""
    pc = RTCPeerConnection(config())
    try:
        tr = pc.addTransceiver(ForwardTrack("video", "video_3_1"), "sendonly")
        tr.setCodecPreferences(internals.pcm_capability("video"))
        media = SessionDescription.parse((await pc.createOffer()).sdp).media[0]
        assert media.ssrc[0].ssrc == internals.sender_ssrc(tr.sender)
        assert media.msid.split()[-1] == "video_3_1"
    finally:
        await pc.close()


async def gathered_ports(count: int) -> list[list[tuple[str, int]]]:
    pcs = [RTCPeerConnection(config()) for _ in range(count)]
    try:
        result = []
        for pc in pcs:
            pc.addTransceiver("audio", "recvonly").setCodecPreferences(internals.pcm_capability("audio"))
            await pc.setLocalDescription(await pc.createOffer())
            result.append([(c.ip, c.port) for c in candidates_in(pc.localDescription.sdp)])
        return result
    finally:
        await asyncio.gather(*(pc.close() for pc in pcs))


def test_host_addresses_override() -> None:
    """aioice.ice.get_host_addresses: replaced to gather on exactly the configured addresses."""
    assert asyncio.run(gathered_ports(1)) == [[("127.0.0.1", pytest.approx(0, abs=65535))]]
    internals.set_host_addresses(None)
    try:
        assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)
    finally:
        internals.set_host_addresses(["127.0.0.1"])


@pytest.mark.parametrize("use_uvloop", [True, False])
def test_port_slice_on_create_datagram_endpoint(use_uvloop: bool) -> None:
    """aioice binds host candidates with loop.create_datagram_endpoint(local_addr=(address, 0))."""
    import random

    low = random.randrange(20000, 60000, 100)
    slice_ = internals.PortSlice(low, low + 2)
    with asyncio.Runner(loop_factory=internals.loop_factory(slice_, use_uvloop)) as runner:
        ports = runner.run(gathered_ports(4))
    assert [len(c) for c in ports] == [1, 1, 1, 0]  # the fourth finds the slice exhausted: no candidate
    assert {p for cands in ports for _, p in cands} <= set(range(low, low + 3))
    assert len({p for cands in ports for _, p in cands}) == 3
