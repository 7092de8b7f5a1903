"""Strict parsing of the WebRTCSFU text protocol and the upgrade query."""

import json

import pytest

from workers.webrtc import signalling as sig

LIMITS = {"max_tiles": 16, "max_qualities": 8, "max_video_tracks": 64, "max_client_id": 65535}


def query(**kw: str | list[str]) -> sig.JoinParams:
    getall = {k: v if isinstance(v, list) else [v] for k, v in kw.items()}
    return sig.parse_query({}, getall, **LIMITS)


def test_query_accepts_bounded_integers() -> None:
    assert query(ntiles="4", nqualities="3", clientid="2") == sig.JoinParams(4, 3, 2, "")
    assert query(ntiles="1", nqualities="1", clientid="1", room="s-1.a").room == "s-1.a"


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"nqualities": "1", "clientid": "1"}, "missing ntiles"),
        ({"ntiles": "x", "nqualities": "1", "clientid": "1"}, "ntiles must be a decimal integer"),
        ({"ntiles": "-1", "nqualities": "1", "clientid": "1"}, "ntiles must be a decimal integer"),
        ({"ntiles": " 1", "nqualities": "1", "clientid": "1"}, "ntiles must be a decimal integer"),
        ({"ntiles": "0", "nqualities": "1", "clientid": "1"}, "ntiles must be within 1..16"),
        ({"ntiles": "17", "nqualities": "1", "clientid": "1"}, "ntiles must be within 1..16"),
        ({"ntiles": "1", "nqualities": "9", "clientid": "1"}, "nqualities must be within 1..8"),
        ({"ntiles": "1", "nqualities": "1", "clientid": "0"}, "clientid must be within 1..65535"),
        ({"ntiles": "1", "nqualities": "1", "clientid": "99999999999"}, "clientid must be a decimal integer"),
        ({"ntiles": ["1", "2"], "nqualities": "1", "clientid": "1"}, "repeated ntiles"),
        ({"ntiles": "16", "nqualities": "8", "clientid": "1"}, "ntiles*nqualities must be at most 64"),
        ({"ntiles": "1", "nqualities": "1", "clientid": "1", "room": "a b"}, "room must be"),
    ],
)
def test_query_rejections_name_the_problem(params: dict, reason: str) -> None:
    with pytest.raises(sig.ProtocolError, match=reason.replace("*", r"\*")):
        query(**params)


def test_message_framing() -> None:
    assert sig.parse_message("1@3@{}") == (3, "{}")
    assert sig.parse_message("0@7@2,1@x") == (7, "2,1@x")  # payload may contain '@'
    for bad in ("hello", "1@3", "a@3@x", "1@b@x", "@3@x", "1@@x", "-1@3@x"):
        with pytest.raises(sig.ProtocolError):
            sig.parse_message(bad)
    assert sig.format_message(2, "x") == "0@2@x"


def test_description_must_be_json_of_the_expected_type() -> None:
    good = json.dumps({"type": "answer", "sdp": "v=0\r\n"})
    assert sig.parse_description(good, "answer").sdp == "v=0\r\n"
    for bad in (
        "{",
        "[]",
        json.dumps({"type": "offer", "sdp": "x"}),
        json.dumps({"type": "answer", "sdp": 3}),
    ):
        with pytest.raises(sig.ProtocolError):
            sig.parse_description(bad, "answer")


def test_candidates_are_bare_lines_for_mline_zero() -> None:
    c = sig.parse_candidate("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host")
    assert c is not None and (c.ip, c.port, c.sdpMLineIndex) == ("127.0.0.1", 5000, 0)
    assert sig.is_usable_candidate(c)
    assert sig.parse_candidate("  ") is None
    tcp = sig.parse_candidate("candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype active")
    mdns = sig.parse_candidate("candidate:1 1 udp 1 abc.local 9 typ host")
    assert tcp is not None and mdns is not None
    assert not sig.is_usable_candidate(tcp) and not sig.is_usable_candidate(mdns)
    for bad in (
        "1 1 udp 1 127.0.0.1 9 typ host",
        "candidate:1 1 udp",
        "candidate:1 x udp 1 h 9 typ host",
        "candidate:1 1 udp 1 127.0.0.1 70000 typ host",
    ):
        with pytest.raises(sig.ProtocolError):
            sig.parse_candidate(bad)


def test_quality_decisions_tolerate_padding_and_junk() -> None:
    decisions, junk = sig.parse_quality_decisions("2,1,0;3,-1\x00\x00\x00", 10)
    assert (decisions, junk) == ([(2, [1, 0]), (3, [-1])], 0)
    decisions, junk = sig.parse_quality_decisions("2,x;;3,1;garbage;4", 10)
    assert (decisions, junk) == ([(3, [1]), (4, [])], 2)
    decisions, junk = sig.parse_quality_decisions(";".join(["2,1"] * 5), 3)
    assert (len(decisions), junk) == (3, 2)
