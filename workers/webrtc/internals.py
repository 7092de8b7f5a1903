"""Every private aiortc / aioice detail the SFU relies on, in one place.

aiortc has no public raw-RTP API, no way to add codecs or choose header extensions per connection,
and aioice cannot restrict ICE ports or bind loopback. The SFU therefore reaches into a small,
named set of internals, listed in README.md ("aiortc internals") and checked by
``check_internals()`` at start-up and by tests/workers/webrtc/test_internals.py.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.metadata
import inspect
import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import aioice.ice
import aiortc
import aiortc.codecs
import pylibsrtp
from aiortc import RTCPeerConnection, RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtcpFeedback
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from . import packet
from .udpsend import BatchSender

log = logging.getLogger(__name__)

SUPPORTED_AIORTC = ("1.16.",)
SUPPORTED_AIOICE = ("0.13.",)

VIDEO_CODEC = RTCRtpCodecParameters(
    mimeType="video/pcm",
    clockRate=packet.CLOCK_RATE,
    payloadType=packet.PT_VIDEO,
    rtcpFeedback=[
        RTCRtcpFeedback(type="nack"),
        RTCRtcpFeedback(type="nack", parameter="pli"),
        RTCRtcpFeedback(type="goog-remb"),
        RTCRtcpFeedback(type="ccm", parameter="fir"),
        RTCRtcpFeedback(type="transport-cc"),
    ],
)
AUDIO_CODEC = RTCRtpCodecParameters(
    mimeType="audio/pcm", clockRate=packet.CLOCK_RATE, payloadType=packet.PT_AUDIO, rtcpFeedback=[]
)


def check_internals() -> None:
    """Raise RuntimeError naming the first internal that is missing (run before serving)."""
    problems = []
    if not aiortc.__version__.startswith(SUPPORTED_AIORTC):
        problems.append(f"aiortc {aiortc.__version__} is not a tested version {SUPPORTED_AIORTC}")
    aioice_version = importlib.metadata.version("aioice")
    if not aioice_version.startswith(SUPPORTED_AIOICE):
        problems.append(f"aioice {aioice_version} is not a tested version {SUPPORTED_AIOICE}")
    codecs = aiortc.codecs
    if not isinstance(getattr(codecs, "CODECS", None), dict) or not isinstance(
        getattr(codecs, "HEADER_EXTENSIONS", None), dict
    ):
        problems.append("aiortc.codecs.CODECS / HEADER_EXTENSIONS tables are gone")
    if not inspect.iscoroutinefunction(getattr(RTCRtpReceiver, "receive", None)):
        problems.append("RTCRtpReceiver.receive is not a coroutine method")
    if not callable(getattr(aioice.ice.Connection, "data_received", None)):
        problems.append("aioice Connection.data_received is gone")
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        problems.append("aioice.ice.get_host_addresses is gone")
    source_checks = [
        (
            aioice.ice.Connection.get_component_candidates,
            ("create_datagram_endpoint", "local_addr=(address, 0)"),
            "aioice no longer binds host candidates with create_datagram_endpoint(local_addr=(address, 0))",
        ),
        (
            RTCDtlsTransport.__init__,
            ("self._rx_srtp", "self._tx_srtp"),
            "RTCDtlsTransport._rx_srtp/_tx_srtp are gone",
        ),
        (RTCRtpSender.__init__, ("self._ssrc",), "RTCRtpSender._ssrc is gone"),
        (aioice.ice.Connection.__init__, ("self._nominated",), "aioice Connection._nominated is gone"),
        (aiortc.RTCIceGatherer.__init__, ("self._connection",), "RTCIceGatherer._connection is gone"),
    ]
    for func, needles, problem in source_checks:
        try:
            source = inspect.getsource(func)
        except (OSError, TypeError):  # no sources installed: the version check above must do
            continue
        if not all(n in source for n in needles):
            problems.append(problem)
    if problems:
        raise RuntimeError("; ".join(problems))


def register_media() -> None:
    """Add the pcm codecs and offer only transport-cc, so every forwarded header is 20 bytes.

    aiortc builds offers from module-level tables; this changes them for the whole process, which
    is fine for a dedicated worker (and for the test peers, which speak the same dialect).
    """
    tables = aiortc.codecs.CODECS
    for kind, codec in (("video", VIDEO_CODEC), ("audio", AUDIO_CODEC)):
        if not any(c.mimeType == codec.mimeType for c in tables[kind]):
            tables[kind].append(codec)
    ext = RTCRtpHeaderExtensionParameters(id=packet.TWCC_EXT_ID, uri=packet.TWCC_URI)
    aiortc.codecs.HEADER_EXTENSIONS["audio"] = [ext]
    aiortc.codecs.HEADER_EXTENSIONS["video"] = [ext]


def pcm_capability(kind: str) -> list[Any]:
    """Codec preference restricting a transceiver to the pcm codec of its kind."""
    mime = (VIDEO_CODEC if kind == "video" else AUDIO_CODEC).mimeType
    caps = aiortc.RTCRtpSender.getCapabilities(kind).codecs
    return [c for c in caps if c.mimeType == mime]


async def _no_receive(parameters: Any) -> None:
    """Replacement for RTCRtpReceiver.receive: no decoder thread, no jitter buffer, no RTCP task."""


def bypass_receiver(receiver: RTCRtpReceiver) -> None:
    receiver.receive = _no_receive  # type: ignore[method-assign]


def sender_ssrc(sender: RTCRtpSender) -> int:
    return sender._ssrc


# ---------------------------------------------------------------------------------------------
# ICE: host addresses and port slice


_original_get_host_addresses = aioice.ice.get_host_addresses


def set_host_addresses(addresses: Iterable[str] | None) -> None:
    """Gather host candidates on exactly these addresses (None restores aioice's discovery).

    aioice skips 127.0.0.1 and binds every interface; a fixed list makes loopback usable and keeps
    the number of ports used per peer predictable.
    """
    if addresses is None:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    fixed = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


class PortSlice:
    """Hands out UDP ports from [low, high], starting after the last one used."""

    def __init__(self, low: int, high: int) -> None:
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"bad UDP port range {low}:{high}")
        self.low, self.high = low, high
        self._cursor = itertools.cycle(range(low, high + 1))

    def __len__(self) -> int:
        return self.high - self.low + 1

    def __repr__(self) -> str:
        return f"{self.low}:{self.high}"

    def ports(self) -> Iterable[int]:
        for _ in range(len(self)):
            yield next(self._cursor)


class PortSliceMixin:
    """Event-loop mixin: binds for port 0 (what aioice asks for) take a port from the slice."""

    port_slice: PortSlice | None = None

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], Any],
        local_addr: Any = None,
        remote_addr: Any = None,
        **kwargs: Any,
    ) -> Any:
        parent = super().create_datagram_endpoint  # type: ignore[misc]
        ps = self.port_slice
        if ps is None or local_addr is None or local_addr[1] != 0 or remote_addr or kwargs.get("sock"):
            return await parent(protocol_factory, local_addr=local_addr, remote_addr=remote_addr, **kwargs)
        for port in ps.ports():
            try:
                return await parent(protocol_factory, local_addr=(local_addr[0], port), **kwargs)
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
        raise OSError(errno.EADDRINUSE, f"no free UDP port in {ps} on {local_addr[0]}")


def loop_factory(
    port_slice: PortSlice | None, use_uvloop: bool = True
) -> Callable[[], asyncio.AbstractEventLoop]:
    """A loop class whose datagram endpoints honour the port slice (uvloop when available)."""
    base: type = asyncio.SelectorEventLoop
    if use_uvloop:
        try:
            import uvloop

            base = uvloop.Loop
        except ImportError:  # pragma: no cover - uvloop ships with the project dependencies
            pass
    cls = type("PortSliceLoop", (PortSliceMixin, base), {"port_slice": port_slice})
    return cls


# ---------------------------------------------------------------------------------------------
# Raw RTP on the bundled transport


class RtpLink:
    """Decrypted RTP in, encrypted RTP out, directly on the selected ICE socket.

    aiortc would queue every datagram, await it in a task, build an RtpPacket object, feed a
    jitter buffer and decode; for forwarding all of that is waste (and its jitter buffer breaks
    frames of 128+ packets). The link intercepts datagrams in aioice's Connection.data_received,
    unprotects RTP synchronously with the DTLS transport's SRTP session, and hands the plain packet
    to ``on_rtp``. DTLS and RTCP still take aiortc's normal path.
    """

    __slots__ = (
        "_addr",
        "_conn",
        "_dtls",
        "_orig",
        "_protect",
        "_sender",
        "buffer_limit",
        "gso",
        "on_rtp",
        "socket_buffer",
        "srtp_errors",
    )

    def __init__(
        self,
        pc: RTCPeerConnection,
        on_rtp: Callable[[bytes], None],
        buffer_limit: int,
        socket_buffer: int,
        gso: bool = True,
    ) -> None:
        transceivers = pc.getTransceivers()
        if not transceivers:
            raise RuntimeError("RtpLink needs a transceiver")
        self._dtls = transceivers[0].receiver.transport
        self._conn = self._dtls.transport.iceGatherer._connection
        self._orig = self._conn.data_received
        self._conn.data_received = self._datagram
        self._protect: Callable[[bytes], bytes] | None = None
        self._sender: BatchSender | None = None
        self.on_rtp = on_rtp
        self.srtp_errors = 0
        self.buffer_limit = buffer_limit
        self.socket_buffer = socket_buffer
        self.gso = gso

    def _datagram(self, data: bytes, component: int) -> None:
        if 127 < data[0] < 192 and not 191 < data[1] < 209:
            rx = self._dtls._rx_srtp
            if rx is not None:
                try:
                    plain = rx.unprotect(data)
                except pylibsrtp.Error:
                    self.srtp_errors += 1
                    return
                self.on_rtp(plain)
                return
        self._orig(data, component)

    def local_port(self) -> int | None:
        pair = self._conn._nominated.get(1)
        return pair.local_candidate.port if pair else None

    def start_sending(self) -> bool:
        """Bind the send path once ICE and DTLS are up; False if they are not."""
        pair = self._conn._nominated.get(1)
        tx = self._dtls._tx_srtp
        sock = pair.protocol.transport.get_extra_info("socket") if pair else None
        if sock is None or tx is None or self._sender is not None:
            return self._sender is not None
        self._protect = tx.protect
        self._sender = BatchSender(
            sock.fileno(),
            pair.remote_addr,
            gso=self.gso,
            max_pending=max(64, self.buffer_limit // 1024),
            buffer_bytes=self.socket_buffer,
        )
        return True

    @property
    def sending(self) -> bool:
        return self._sender is not None

    @property
    def send_failures(self) -> int:
        return self._sender.dropped if self._sender else 0

    @property
    def send_calls(self) -> int:
        return self._sender.calls if self._sender else 0

    def send(self, data: bytes) -> bool:
        """Protect one RTP packet and queue it; False (dropped) when not connected or backed up."""
        sender = self._sender
        if sender is None:
            return False
        try:
            return sender.send(self._protect(data))  # type: ignore[misc]
        except pylibsrtp.Error:
            sender.dropped += 1
            return False

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        self.on_rtp = _drop
        if self._conn.__dict__.get("data_received") == self._datagram:
            del self._conn.data_received


def _drop(data: bytes) -> None:
    pass
