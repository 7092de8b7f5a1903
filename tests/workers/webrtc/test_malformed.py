"""Malformed signalling closes only the offending socket; the process and other peers carry on."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from workers.webrtc import internals

from .conftest import SfuProcess, start_sfu, stop_sfu

SETTINGS = {"max_message_bytes": 65536, "max_pending_candidates": 4}
CANDIDATE = "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"


@pytest.fixture(scope="module")
def shared_sfu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SfuProcess]:
    sfu = start_sfu(tmp_path_factory.mktemp("sfu"), SETTINGS)
    yield sfu
    assert stop_sfu(sfu) == 0
    assert "Traceback" not in sfu.stderr(), sfu.stderr()[-3000:]


@pytest.fixture(autouse=True)
async def _close_peers(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    if "shared_sfu" in request.fixturenames:
        sfu = request.getfixturevalue("shared_sfu")
        for peer in sfu.peers:
            await peer.close()
        sfu.peers.clear()


async def close_of(sfu: SfuProcess, query: str, *messages: str | bytes) -> tuple[int | None, str]:
    """Connect, read the offer (if any), send ``messages``, return the close code and reason."""
    session, ws = await sfu.raw_ws(query)
    try:
        if messages:
            first = await ws.receive(timeout=10)
            assert first.type == aiohttp.WSMsgType.TEXT and first.data.startswith("0@2@"), first
        for message in messages:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return msg.data, msg.extra or ""
    finally:
        await ws.close()
        await session.close()


Q = "ntiles=1&nqualities=1&clientid="

CASES = {
    "no @": ("hello", 1008, "message is not <id>@<type>@<payload>"),
    "bad type": ("1@answer@{}", 1008, "message id and type must be decimal integers"),
    "bad json": ("1@3@{not json", 1008, "answer is not JSON"),
    "wrong shape": (
        '1@3@{"type": "offer", "sdp": "v=0"}',
        1008,
        'answer must be {"type": "answer", "sdp": "..."}',
    ),
    "bad sdp": (
        '1@3@{"type": "answer", "sdp": "v=0\\r\\nm=nonsense\\r\\n"}',
        1008,
        "bad SDP answer (AssertionError)",
    ),
    "bad candidate": ("1@4@candidate:1 one udp", 1008, "malformed candidate"),
    "not a candidate": ("1@4@hello", 1008, "candidate must start with 'candidate:'"),
    "binary": (b"\x00\x01", 1008, "binary messages are not supported"),
    "oversize": ("1@7@" + "1," * 40000, 1009, ""),  # aiohttp closes with the code alone
    "early candidate flood": (*[f"1@4@{CANDIDATE}"] * 5, 1008, "too many candidates before the answer"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_malformed_message_closes_that_socket_with_a_reason(shared_sfu: SfuProcess, case: str) -> None:
    *messages, code, reason = CASES[case]
    assert await close_of(shared_sfu, Q + "1", *messages) == (code, reason)
    status, _ = await shared_sfu.get("/healthz")
    assert status == 200
    stats = await shared_sfu.wait_stats(lambda s: s["peers"] == 0)
    assert stats["closed"][reason or "message too big"] >= 1


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("ntiles=1&nqualities=1", "missing clientid"),
        ("ntiles=one&nqualities=1&clientid=1", "ntiles must be a decimal integer"),
        ("ntiles=1&nqualities=0&clientid=1", "nqualities must be within 1..8"),
        ("ntiles=1&nqualities=1&clientid=1&clientid=2", "repeated clientid"),
        ("ntiles=16&nqualities=8&clientid=1", "ntiles*nqualities must be at most 64"),
    ],
)
async def test_bad_query_closes_before_any_peer_is_created(
    shared_sfu: SfuProcess, query: str, reason: str
) -> None:
    joined = (await shared_sfu.stats())["joined"]
    assert await close_of(shared_sfu, query) == (1008, reason)
    assert (await shared_sfu.stats())["joined"] == joined


async def test_answer_without_pending_offer_and_unknown_types(shared_sfu: SfuProcess) -> None:
    peer = await shared_sfu.peer(5)
    await peer.wait_connected()
    await peer.send_text("1@1@hello")  # hello and unknown types are ignored, as by the Go SFU
    await peer.send_text("1@9@whatever")
    await peer.send_text(peer.last_answer)
    await peer.wait_closed()
    assert (peer.close_code, peer.close_reason) == (1008, "answer without a pending offer")


async def test_bystanders_carry_on_through_every_malformed_case(shared_sfu: SfuProcess) -> None:
    a, b = await shared_sfu.connected_peers((21, 1, 1), (22, 1, 1))
    for n, case in enumerate(CASES.values(), start=30):
        *messages, code, reason = case
        assert await close_of(shared_sfu, Q + str(n), *messages) == (code, reason)
    stats = await shared_sfu.wait_settled(2)
    data = os.urandom(100_000)
    a.send_video_frame(0, 0, data)
    await b.wait_for(lambda p: any(f.data == data for f in p.frames))
    assert [p["client_id"] for p in stats["peer_list"]] == [21, 22]


async def test_unanswered_offer_times_out(tmp_path: Path) -> None:
    sfu = start_sfu(tmp_path, {"answer_timeout": 0.3})
    try:
        assert await close_of(sfu, Q + "1") == (4002, "no answer to the offer in time")
    finally:
        assert stop_sfu(sfu) == 0


async def test_media_that_never_connects_times_out(tmp_path: Path) -> None:
    """A syntactically good answer from a peer that then vanishes: ICE never completes."""
    sfu = start_sfu(tmp_path, {"connect_timeout": 0.5})
    session, ws = await sfu.raw_ws(Q + "1")
    pc = RTCPeerConnection()
    try:
        msg = await ws.receive(timeout=5)
        offer = json.loads(msg.data.split("@", 2)[2])
        await pc.setRemoteDescription(RTCSessionDescription(**offer))
        for t in pc.getTransceivers():
            internals.bypass_receiver(t.receiver)
        await pc.setLocalDescription(await pc.createAnswer())
        answer = SessionDescription.parse(pc.localDescription.sdp)
        for m in answer.media:
            m.ice_candidates, m.ice_candidates_complete = [], False
        answer.type = "answer"
        await pc.close()
        await ws.send_str("1@3@" + json.dumps({"type": "answer", "sdp": str(answer)}))
        while (msg := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
            pass
        assert (msg.data, msg.extra) == (4002, "media connection not established in time")
    finally:
        await ws.close()
        await session.close()
        assert stop_sfu(sfu) == 0


async def test_server_full(tmp_path: Path) -> None:
    sfu = start_sfu(tmp_path, {"max_peers": 1})
    try:
        first = await sfu.peer(1)
        await first.wait_connected()
        assert await close_of(sfu, Q + "2") == (1013, "server full")
        await sfu.wait_settled(1)
    finally:
        for p in sfu.peers:
            await p.close()
        assert stop_sfu(sfu) == 0
