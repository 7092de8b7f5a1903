"""The handful of Engine.IO v4 / Socket.IO v5 text packets the benchmark speaks.

Written out by hand (no packet classes) because both the generator and the bare relay run these
on every message, and the point is that they cost next to nothing compared with the server.
"""

from __future__ import annotations

import json
import struct

PING, PONG = "2", "3"
CONNECT = "40"
PLACEHOLDER = '{"_placeholder":true,"num":0}'
# Payload header: intended send time (CLOCK_MONOTONIC ns, shared by all local processes),
# global sender index, per-sender sequence number. Little-endian like the Unity timestamp.
HEADER = struct.Struct("<qII")

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def ws_frame_head(size: int, binary: bool) -> bytes:
    """Header of an unmasked, unfragmented WebSocket frame (what a server sends)."""
    first = 0x82 if binary else 0x81
    if size < 126:
        return bytes((first, size))
    if size < 65536:
        return struct.pack("!BBH", first, 126, size)
    return struct.pack("!BBQ", first, 127, size)


def event(name: str, *args: object, ack_id: int | None = None) -> str:
    """`42[id][name, ...args]`: an event, acknowledged when ack_id is given."""
    return f"42{'' if ack_id is None else ack_id}{_dumps([name, *args])}"


def binary_event(name: str, *args: object) -> str:
    """Text half of an event whose last argument is one binary attachment sent right after it."""
    return f"451-{_dumps([name, *args])[:-1]},{PLACEHOLDER}]"


def ack(ack_id: str | int, body: object) -> str:
    """`43<id>[body]`: the one-argument ack every command gets."""
    return f"43{ack_id}{_dumps([body])}"


def split_ack_id(text: str, start: int) -> tuple[str, str]:
    """Split `<digits><json>` at text[start:] into (digits, json); digits may be empty."""
    end = start
    while end < len(text) and text[end].isdigit():
        end += 1
    return text[start:end], text[end:]


def attachments(text: str) -> tuple[int, str]:
    """For `45<n>-[...]` return (n, json part); raises ValueError on anything else."""
    dash = text.index("-", 2)
    return int(text[2:dash]), text[dash + 1 :]


def loads(text: str) -> object:
    return json.loads(text)


def dumps(obj: object) -> str:
    return _dumps(obj)
