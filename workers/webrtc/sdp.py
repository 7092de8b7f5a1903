"""Candidate advertisement: the SFU's offer plus an optional public-address candidate.

aiortc embeds the host candidates it gathered in the offer. Behind a 1:1 NAT (a cloud VM) those
are private; when ``public_ip`` is configured every IPv4 host candidate is also advertised as a
server-reflexive candidate on the public address with the same port.
"""

from __future__ import annotations

import ipaddress

from aioice.candidate import candidate_foundation, candidate_priority
from aiortc import RTCIceCandidate
from aiortc.sdp import SessionDescription


def advertise_candidates(sdp_text: str, public_ip: str | None) -> tuple[str, list[RTCIceCandidate]]:
    """Return the offer to send and the candidates to trickle as ``@4@`` lines."""
    session = SessionDescription.parse(sdp_text)
    session.type = "offer"
    local = list(session.media[0].ice_candidates) if session.media else []
    extra = []
    if public_ip:
        for c in local:
            if (
                c.type == "host"
                and ipaddress.ip_address(c.ip).version == ipaddress.ip_address(public_ip).version
            ):
                extra.append(
                    RTCIceCandidate(
                        component=c.component,
                        foundation=candidate_foundation("srflx", "udp", public_ip),
                        ip=public_ip,
                        port=c.port,
                        priority=candidate_priority(c.component, "srflx"),
                        protocol="udp",
                        type="srflx",
                        relatedAddress=c.ip,
                        relatedPort=c.port,
                    )
                )
    if extra:
        for media in session.media:
            media.ice_candidates.extend(extra)
        sdp_text = str(session)
    return sdp_text, local + extra


def candidates_in(sdp_text: str) -> list[RTCIceCandidate]:
    session = SessionDescription.parse(sdp_text)
    return list(session.media[0].ice_candidates) if session.media else []
