"""Wire formats of the cluster: log entries, relayed data frames and log ids.

Binary values (scene event payloads, bytes inside user data) never pass through base64: the JSON
keeps a placeholder and each bytes value travels as its own stream field or frame part.
"""

from __future__ import annotations

import json
import struct
from typing import Any

BLOB = "\x00blob"  # {BLOB: i}: the i-th binary field
ESC = "\x00esc"  # {ESC: {...}}: a client's own dict that happens to use one of these two keys

_dumps = json.JSONEncoder(separators=(",", ":")).encode  # ASCII: lone surrogates survive
_HEADER_LEN = struct.Struct(">I")


def pack(value: Any, blobs: list[bytes]) -> Any:
    """`value` with every bytes value replaced by a placeholder and appended to `blobs`."""
    if isinstance(value, bytes | bytearray | memoryview):
        blobs.append(bytes(value))
        return {BLOB: len(blobs) - 1}
    if isinstance(value, dict):
        out = {key: pack(item, blobs) for key, item in value.items()}
        return {ESC: out} if BLOB in value or ESC in value else out
    if isinstance(value, list | tuple):
        return [pack(item, blobs) for item in value]
    return value


def unpack(value: Any, blobs: list[bytes]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            if BLOB in value:
                return blobs[value[BLOB]]
            if ESC in value:
                return {key: unpack(item, blobs) for key, item in value[ESC].items()}
        return {key: unpack(item, blobs) for key, item in value.items()}
    if isinstance(value, list):
        return [unpack(item, blobs) for item in value]
    return value


def dumps_packed(value: Any) -> tuple[str, list[bytes]]:
    blobs: list[bytes] = []
    return _dumps(pack(value, blobs)), blobs


def loads_packed(text: str | bytes, blobs: list[bytes]) -> Any:
    return unpack(json.loads(text), blobs)


def blob_fields(blobs: list[bytes]) -> dict[str, bytes]:
    return {f"b{i}": blob for i, blob in enumerate(blobs)}


def fields_blobs(fields: dict[bytes, bytes]) -> list[bytes]:
    blobs = []
    while (blob := fields.get(b"b%d" % len(blobs))) is not None:
        blobs.append(blob)
    return blobs


# -- log entries ---------------------------------------------------------------------------------

def encode_entry(op: str, args: dict[str, Any], origin: str, seq: int) -> dict[str, str | bytes]:
    """One operation as stream fields: op name, JSON args, origin node and its sequence number."""
    text, blobs = dumps_packed(args)
    return {"op": op, "a": text, "o": origin, "q": str(seq), **blob_fields(blobs)}


def decode_entry(fields: dict[bytes, bytes]) -> tuple[str, dict[str, Any], str, int]:
    args = loads_packed(fields[b"a"], fields_blobs(fields))
    return fields[b"op"].decode(), args, fields[b"o"].decode(), int(fields[b"q"])


# -- relayed data frames ---------------------------------------------------------------------------

def encode_frame(header: dict[str, Any], payload: bytes | str = b"") -> bytes:
    """Length-prefixed JSON header, then the payload's raw bytes (a text payload as UTF-8, "t": true)."""
    if isinstance(payload, str):
        header = {**header, "t": True}
        payload = payload.encode("utf-8", "surrogatepass")
    head = _dumps(header).encode()
    return b"".join((_HEADER_LEN.pack(len(head)), head, payload))


def decode_frame(message: bytes) -> tuple[dict[str, Any], bytes | str]:
    (size,) = _HEADER_LEN.unpack_from(message)
    header = json.loads(message[4:4 + size])
    if not isinstance(header, dict):
        raise ValueError("frame header is not an object")
    payload: bytes | str = message[4 + size:]
    if header.get("t"):
        payload = payload.decode("utf-8", "surrogatepass")
    return header, payload


def data_frame(recipients: list[str], sender: str, kind: str, payload: bytes | str) -> bytes:
    """SendData for `recipients` (all connected to the destination process)."""
    return encode_frame({"r": recipients, "s": sender, "k": kind}, payload)


def confirm_frame(node: str, seq: int) -> bytes:
    """`node` applied the originator's entry `seq` and delivered its events (see RedisCluster.join)."""
    return encode_frame({"c": seq, "n": node})


# -- log ids -----------------------------------------------------------------------------------

def parse_id(entry_id: str | bytes) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: str) -> str:
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq + 1}"
