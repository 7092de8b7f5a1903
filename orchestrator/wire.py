"""Writing Engine.IO packets straight onto a WebSocket connection's transport.

A server's WebSocket frames are never masked, so the bytes of a frame are the same for every
recipient: a packet shared by many clients is framed once and each recipient costs one
`transport.write`. Going through ASGI instead costs, per recipient and packet, a wake-up of the
connection's writer task, an ASGI message dict and uvicorn's send coroutine, which at thousands of
clients was most of the fan-out's time.

This relies on uvicorn's websockets-sansio protocol (the one `serve` configures): the ASGI `send`
callable is a bound method of the connection's protocol, which holds the transport, the `writable`
event uvicorn keeps in step with the transport's flow control, and its closing state. Any other
server falls back to sending through ASGI.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

from engineio import packet as eio_packet


def ws_frame_parts(payload: bytes | str) -> tuple[bytes, bytes]:
    """The header and payload of one unmasked, unfragmented WebSocket frame: text for str, binary
    for bytes. Kept apart so that a large payload is handed to the kernel without being copied."""
    if isinstance(payload, str):
        payload, first = payload.encode(), 0x81
    else:
        first = 0x82
    size = len(payload)
    if size < 126:
        head = bytes((first, size))
    elif size < 65536:
        head = struct.pack("!BBH", first, 126, size)
    else:
        head = struct.pack("!BBQ", first, 127, size)
    return head, payload


def ws_frame(payload: bytes | str) -> bytes:
    """One unmasked, unfragmented WebSocket frame: text for str, binary for bytes."""
    head, body = ws_frame_parts(payload)
    return head + body


def wire_parts(pkt: eio_packet.Packet) -> tuple[bytes, bytes]:
    """The WebSocket frame header and payload of an Engine.IO packet."""
    # Packet.encode caches its first result whatever the arguments of later calls, and a polling
    # recipient of the same packet needs it base64-encoded: leave its cache as found.
    cache = pkt.encode_cache
    encoded = pkt.encode()
    pkt.encode_cache = cache
    return ws_frame_parts(encoded)


def wire_bytes(pkt: eio_packet.Packet) -> bytes:
    """The WebSocket frame of an Engine.IO packet, built once however many clients receive it."""
    wire = pkt.__dict__.get("wire")
    if wire is None:
        head, body = wire_parts(pkt)
        wire = pkt.wire = head + body  # type: ignore[attr-defined]
    return wire


class DirectSink:
    """A WebSocket connection's transport, written to while it accepts data without buffering."""

    __slots__ = ("protocol", "transport", "writable")

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.writable = protocol.writable

    @classmethod
    def of(cls, ws: Any) -> DirectSink | None:
        """The sink behind an Engine.IO ASGI WebSocket wrapper, or None if its server is not uvicorn's."""
        protocol = getattr(getattr(ws, "asgi_send", None), "__self__", None)
        needed = ("transport", "writable", "close_sent")
        if protocol is None or not all(hasattr(protocol, name) for name in needed):
            return None
        return cls(protocol)

    def ready(self) -> bool:
        """True while a write goes out now: the transport is open and below its high-water mark."""
        return self.writable.is_set() and not self.protocol.close_sent and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def write_parts(self, parts: tuple[bytes, ...]) -> None:
        self.transport.writelines(parts)  # one system call for all, no copy into one buffer

    async def close(self) -> None:
        """The WebSocket closing handshake, through uvicorn (which also ends the connection's reader)."""
        with contextlib.suppress(Exception):  # already closing or gone: nothing left to do
            await self.protocol.send({"type": "websocket.close", "code": 1000})

    def abort(self) -> None:
        """Drop the connection: used when the peer stopped reading and there is nothing left to say."""
        self.transport.abort()
