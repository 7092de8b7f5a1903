"""The WebRTCSFU text protocol: ``"<clientId>@<type>@<payload>"`` messages, strictly parsed.

Parsing is separate from the peer so every malformed case can be named and tested; a
``ProtocolError`` closes only the offending peer's socket.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiortc import RTCIceCandidate, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp

HELLO, OFFER, ANSWER, CANDIDATE, QUALITY = 1, 2, 3, 4, 7
SFU_ID = 0

_UINT = re.compile(r"[0-9]{1,10}")
_ROOM = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_QUALITY_ENTRY = re.compile(r"[0-9]{1,10}(,-?[0-9]{1,10})*")


class ProtocolError(ValueError):
    """The peer broke the protocol; the message is the close reason."""


@dataclass(frozen=True)
class JoinParams:
    ntiles: int
    nqualities: int
    client_id: int
    room: str


def parse_query(
    query: Mapping[str, str],
    getall: dict[str, list[str]],
    *,
    max_tiles: int,
    max_qualities: int,
    max_video_tracks: int,
    max_client_id: int,
) -> JoinParams:
    """Validate the upgrade's query string; all three numbers are required and bounded."""

    def number(name: str, low: int, high: int) -> int:
        values = getall.get(name, [])
        if not values:
            raise ProtocolError(f"missing {name}")
        if len(values) > 1:
            raise ProtocolError(f"repeated {name}")
        if not _UINT.fullmatch(values[0]):
            raise ProtocolError(f"{name} must be a decimal integer")
        value = int(values[0])
        if not low <= value <= high:
            raise ProtocolError(f"{name} must be within {low}..{high}")
        return value

    ntiles = number("ntiles", 1, max_tiles)
    nqualities = number("nqualities", 1, max_qualities)
    client_id = number("clientid", 1, max_client_id)
    if ntiles * nqualities > max_video_tracks:
        raise ProtocolError(f"ntiles*nqualities must be at most {max_video_tracks}")
    rooms = getall.get("room", [""])
    if len(rooms) > 1 or (rooms[0] and not _ROOM.fullmatch(rooms[0])):
        raise ProtocolError("room must be 1-64 characters of [A-Za-z0-9_.-]")
    return JoinParams(ntiles, nqualities, client_id, rooms[0])


def parse_message(text: str) -> tuple[int, str]:
    """Split ``id@type@payload``; the id is checked for form only (peers always send 0 or 1)."""
    sender, sep1, rest = text.partition("@")
    mtype, sep2, payload = rest.partition("@")
    if not sep1 or not sep2:
        raise ProtocolError("message is not <id>@<type>@<payload>")
    if not _UINT.fullmatch(sender) or not _UINT.fullmatch(mtype):
        raise ProtocolError("message id and type must be decimal integers")
    return int(mtype), payload


def format_message(mtype: int, payload: str) -> str:
    return f"{SFU_ID}@{mtype}@{payload}"


def parse_description(payload: str, expected: str) -> RTCSessionDescription:
    try:
        obj = json.loads(payload)
    except ValueError:
        raise ProtocolError(f"{expected} is not JSON") from None
    if not isinstance(obj, dict) or obj.get("type") != expected or not isinstance(obj.get("sdp"), str):
        raise ProtocolError(f'{expected} must be {{"type": "{expected}", "sdp": "..."}}')
    return RTCSessionDescription(sdp=obj["sdp"], type=expected)


def format_description(description: RTCSessionDescription) -> str:
    return json.dumps({"type": description.type, "sdp": description.sdp})


def parse_candidate(payload: str) -> RTCIceCandidate | None:
    """A bare ``candidate:`` line for m-line 0 (BUNDLE); None for an empty end-of-candidates."""
    line = payload.strip().removeprefix("a=")
    if not line:
        return None
    if not line.startswith("candidate:"):
        raise ProtocolError("candidate must start with 'candidate:'")
    try:
        candidate = candidate_from_sdp(line[len("candidate:") :])
    except (AssertionError, ValueError, IndexError):
        raise ProtocolError("malformed candidate") from None
    if not 0 < candidate.port < 65536 or candidate.component not in (1, 2):
        raise ProtocolError("candidate port or component out of range")
    candidate.sdpMLineIndex = 0
    return candidate


def is_usable_candidate(candidate: RTCIceCandidate) -> bool:
    """UDP candidates with a literal address; others (TCP, mDNS names) are skipped, not fatal."""
    if candidate.protocol.lower() != "udp" or candidate.component != 1:
        return False
    try:
        ipaddress.ip_address(candidate.ip)
    except ValueError:
        return False
    return True


def format_candidate(candidate: RTCIceCandidate) -> str:
    return "candidate:" + candidate_to_sdp(candidate)


def parse_quality_decisions(payload: str, max_entries: int) -> tuple[list[tuple[int, list[int]]], int]:
    """``"<client>,<q_tile0>,<q_tile1>…;…"`` with NUL padding; returns (decisions, junk entries)."""
    decisions: list[tuple[int, list[int]]] = []
    junk = 0
    for raw in payload.replace("\x00", "").split(";"):
        entry = raw.strip()
        if not entry:
            continue
        if len(decisions) >= max_entries or not _QUALITY_ENTRY.fullmatch(entry):
            junk += 1
            continue
        numbers = [int(x) for x in entry.split(",")]
        decisions.append((numbers[0], numbers[1:]))
    return decisions, junk
