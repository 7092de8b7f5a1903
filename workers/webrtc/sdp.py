"""The offer as sent: aiortc's local description, made conservative and NAT-aware.

- aiortc embeds the host candidates it gathered. Behind a 1:1 NAT (a cloud VM) those are
  private; when ``public_ip`` is configured every host candidate of the same IP version is also
  advertised as a server-reflexive candidate on the public address with the same port.
- aiortc lists sha-256, sha-384 and sha-512 fingerprints; only sha-256 is sent, which every
  WebRTC stack (including older pion) verifies.
"""

from __future__ import annotations

import ipaddress

from aioice.candidate import candidate_foundation, candidate_priority
from aiortc import RTCIceCandidate
from aiortc.sdp import SessionDescription


def public_candidates(local: list[RTCIceCandidate], public_ip: str) -> list[RTCIceCandidate]:
    version = ipaddress.ip_address(public_ip).version
    return [
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
        for c in local
        if c.type == "host" and ipaddress.ip_address(c.ip).version == version
    ]


def outgoing_offer(sdp_text: str, public_ip: str | None) -> tuple[str, list[RTCIceCandidate]]:
    """Return the offer to send and the candidates to trickle as ``@4@`` lines."""
    session = SessionDescription.parse(sdp_text)
    session.type = "offer"
    local = list(session.media[0].ice_candidates) if session.media else []
    extra = public_candidates(local, public_ip) if public_ip else []
    for media in session.media:
        media.ice_candidates.extend(extra)
        if media.dtls is not None:
            media.dtls.fingerprints = [f for f in media.dtls.fingerprints if f.algorithm == "sha-256"]
    return str(session), local + extra


def candidates_in(sdp_text: str) -> list[RTCIceCandidate]:
    session = SessionDescription.parse(sdp_text)
    return list(session.media[0].ice_candidates) if session.media else []
